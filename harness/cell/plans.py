"""What a cell asks a running server, per model kind: a plan is the ordered probes for one kind.

A probe is a function of ``Probing`` (the server, the cell's result, this pin's outputs and the reference
pin's). Adding one is a function plus a line in the plans below; ``Plan.with_probe`` makes a variant of a
plan without editing it (tests, or a kind that is another kind plus one probe). ``serve.py`` is handed a
plan's ``run`` and never imports this module, so the server's life knows nothing of what is asked.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..errors import HarnessError
from ..words import ModelKind
from . import load, paired, served, speech, text
from .probing import Probing

Probe = Callable[[Probing], None]


@dataclass(frozen=True)
class Plan:
    kind: ModelKind
    probes: tuple[Probe, ...]

    def run(self, p: Probing) -> None:
        for probe in self.probes:
            probe(p)

    def with_probe(self, probe: Probe, *, before: Probe | None = None) -> Plan:
        """This plan with ``probe`` added before ``before`` (default: at the end)."""
        at = len(self.probes) if before is None else self.probes.index(before)
        return Plan(kind=self.kind, probes=(*self.probes[:at], probe, *self.probes[at:]))

    @property
    def names(self) -> list[str]:
        return [probe.__name__ for probe in self.probes]


_PLANS: dict[ModelKind, Plan] = {}


def register(plan: Plan) -> Plan:
    _PLANS[plan.kind] = plan
    return plan


def plan_for(kind: ModelKind) -> Plan:
    try:
        return _PLANS[kind]
    except KeyError:
        raise HarnessError(f"no probe plan for model kind {kind!r} (known: {', '.join(map(str, _PLANS))})") from None


_GREEDY = (
    paired.start_partner,  # the partner of the paired rounds boots while the probes before them run
    text.api_conformance,
    served.server_version,
    text.greedy_samples,
    text.task_accuracy,
    served.served_metrics,
    text.store_outputs,
    text.greedy_agreement,
    served.metric_names,
    text.accuracy_gate,
    paired.throughput,  # paired rounds against the deployed pin where both servers fit; alone otherwise
)
CHAT = register(Plan(ModelKind.CHAT, _GREEDY))
COMPLETION = register(Plan(ModelKind.COMPLETION, _GREEDY))  # conformance leaves out what needs a chat template
EMBEDDING = register(
    Plan(
        ModelKind.EMBEDDING,
        (
            text.api_conformance,
            served.server_version,
            text.embedding_samples,
            text.store_outputs,
            text.embedding_agreement,
        ),
    )
)
STT = register(
    Plan(
        ModelKind.STT,
        (
            speech.speech_clips,
            speech.stt_conformance,
            served.server_version,
            speech.transcripts,
            text.store_outputs,
            speech.transcript_agreement,
            load.stt_load,
        ),
    )
)
TTS = register(Plan(ModelKind.TTS, (speech.synthesis, served.server_version, load.tts_load)))
