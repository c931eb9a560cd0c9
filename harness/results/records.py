"""The typed records of a cell: ``Check``, ``LoadPoint`` (a ``Run`` per repeat), ``Agreement``, accuracy,
``Startup`` and the ``CellResult`` that holds them, with the JSON Schema derived from their type hints."""

from __future__ import annotations

import enum
import json
import logging
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..fingerprint import Fingerprint
from ..install.record import InstallRecord
from ..serial import LoadError, dump, load_record
from ..stability import Stability
from ..stats import Distribution, ci95_positive, percentile
from ..words import AgreementKind
from .units import TEXT_UNIT
from .v1 import convert_v1

log = logging.getLogger(__name__)
SCHEMA_VERSION = 2
SCHEMA_FILE = Path(__file__).parents[1] / "schema" / f"results-v{SCHEMA_VERSION}.json"


class Status(str, enum.Enum):
    PASSED = "passed"
    FAILED = "failed"  # the pin ran but a required check failed
    ERROR = "error"  # the pin could not be measured (install, model, startup)
    SKIPPED = "skipped"


class FailureClass(str, enum.Enum):
    INSTALL_FAILED = "install-failed"
    MODEL_FAILED = "model-failed"
    STARTUP_FAILED = "startup-failed"
    PROBE_FAILED = "probe-failed"  # the server stopped answering mid-probe
    CHECK_FAILED = "failed"  # answered, but wrongly (conformance or agreement)
    HARNESS_ERROR = "harness-error"  # a bug in the harness itself
    OUT_OF_MEMORY = "out-of-memory"  # the server's log says so, or it got SIGKILL (what the OOM killer sends)
    INFRASTRUCTURE = "infrastructure"  # the machine, not the pin: e.g. its GPUs were busy before the cell began
    INTERRUPTED = "interrupted"  # Ctrl-C / SIGTERM mid-cell: recorded, and run again when the run is resumed


_EVIDENCE_CHARS = 600  # per evidence field: enough to read, small enough for a report
_SHORTENED = re.compile(r"… \(\d+ chars\)$")


def _short(value: Any) -> Any:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    if len(text) <= _EVIDENCE_CHARS or (
        isinstance(value, str) and _SHORTENED.search(text) and len(text) < _EVIDENCE_CHARS + 30
    ):
        return value  # short, or already shortened (read back from a results file)
    return text[:_EVIDENCE_CHARS] + f"… ({len(text)} chars)"


@dataclass(frozen=True, kw_only=True)
class Check:
    """A verdict with the evidence a person needs to act on it. ``passed`` None: could not be evaluated
    (not a failure, but a required check that was not evaluated keeps a pin from being recommended)."""

    group: str  # conformance | agreement | accuracy
    name: str
    passed: bool | None
    detail: str = ""
    evidence: Mapping[str, Any] = field(default_factory=dict)
    waived: str = ""  # why the matrix accepts this failure (reported, not blocking)

    def __post_init__(self) -> None:
        object.__setattr__(self, "evidence", {k: _short(v) for k, v in self.evidence.items()})

    def blocking(self, required: Sequence[str]) -> bool:
        """A failed check in a required group that the matrix has not waived."""
        return self.group in required and self.passed is False and not self.waived


# --- load ---------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Run:
    """One repeat of one load point. ``rate`` is in the point's unit; ``distributions`` hold the
    latencies by name (text: ttft_ms, tpot_ms, itl_ms, e2el_ms, loop_lag_ms; speech: latency_ms, rtf)."""

    rate: float
    requests: int
    completed: int
    failed: int
    duration_s: float
    request_s: float
    distributions: Mapping[str, Distribution] = field(default_factory=dict)
    samples: Mapping[str, tuple[float, ...]] = field(default_factory=dict)  # per request, for verdicts (bootstrap)
    output_tokens: int = 0
    audio_s: float = 0.0
    goodput_req_s: float | None = None  # requests meeting every SLO target / duration
    token_count_mismatches: int = 0  # streamed chunks != usage.completion_tokens
    client_cpu_s: float = 0.0
    client_cpu_util: float = 0.0  # client CPU seconds / wall seconds (one core)
    saturated: bool = False  # the client, not the server, was the limit
    saturation_reason: str = ""
    errors: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class LoadPoint:
    """A load point over its repeats: the median rate, the 95% CI of the mean (2+ repeats), every run."""

    label: str  # c=4, rate=2/s, rate=max
    mode: str  # concurrency | rate
    target: float | None  # concurrency or requests/s; None: all at once
    unit: str  # output tok/s | audio s/s
    runs: tuple[Run, ...]
    median: float
    ci95: tuple[float, float] | None = None
    saturated: bool = False
    saturation_reason: str = ""

    @classmethod
    def of(cls, *, label: str, mode: str, target: float | None, unit: str, runs: Sequence[Run]) -> LoadPoint:
        """The one aggregation over repeats, for text and speech alike."""
        rates = [r.rate for r in runs]
        return cls(
            label=label,
            mode=mode,
            target=None if target is None or math.isinf(target) else target,
            unit=unit,
            runs=tuple(runs),
            median=percentile(rates, 50),
            ci95=ci95_positive(rates),
            saturated=any(r.saturated for r in runs),
            saturation_reason="; ".join(sorted({r.saturation_reason for r in runs if r.saturation_reason})),
        )

    @property
    def run(self) -> Run:
        """The median repeat, whose latencies the report shows."""
        return sorted(self.runs, key=lambda r: r.rate)[(len(self.runs) - 1) // 2]

    def dist(self, name: str) -> Distribution | None:
        return self.run.distributions.get(name)


# --- correctness --------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class TaskScore:
    correct: int
    n: int
    accuracy: float
    wilson_low: float
    wilson_high: float


@dataclass(frozen=True, kw_only=True)
class Miss:
    task: str
    prompt: str
    expected: str
    actual: str


@dataclass(frozen=True, kw_only=True)
class TextAccuracy:
    """Seeded task sets, exact match, Wilson 95% intervals."""

    kind: Literal["tasks"] = "tasks"
    digest: str  # of the items: only equal digests compare
    overall: TaskScore
    tasks: Mapping[str, TaskScore] = field(default_factory=dict)
    misses: tuple[Miss, ...] = ()  # the first few
    outcomes: str = ""  # "1"/"0" per item, in item order: what the paired test against the reference compares


@dataclass(frozen=True, kw_only=True)
class ClipScore:
    spoken: str
    heard: str
    edits: int


@dataclass(frozen=True, kw_only=True)
class SpeechAccuracy:
    """Word error rate against the spoken (or synthesized) text."""

    kind: Literal["wer"] = "wer"
    wer: float
    edits: int
    words: int
    clips: int
    per_clip: tuple[ClipScore, ...] = ()
    reference_wer: float | None = None


Accuracy = TextAccuracy | SpeechAccuracy


@dataclass(frozen=True, kw_only=True)
class ItemAgreement:
    """One prompt (or clip) against the reference pin's answer to it."""

    prompt: str
    identical: bool
    position: int | None = None  # first diverging token
    ours: str = ""  # token (or transcript) there
    reference: str = ""
    close: bool = True  # each side's token in the other's top-k there
    ours_text: str = ""
    reference_text: str = ""


@dataclass(frozen=True, kw_only=True)
class Agreement:
    """Agreement with the reference pin. ``kind``: reference (this is it), not-compared (no stored
    outputs), greedy (text, top-k rule), transcripts (speech), embeddings (cosine)."""

    kind: AgreementKind
    reference_version: str
    compared: int = 0  # prompts or clips
    identical: int = 0
    close: int = 0  # diverged inside the top-k rule
    differ: int = 0  # diverged outside it (or transcripts that differ)
    prompt_logprob_max_delta: float | None = None
    wer_vs_reference: float | None = None
    items: tuple[ItemAgreement, ...] = ()
    note: str = ""

    def __post_init__(self) -> None:  # a kind given as its word (a test, an older caller) becomes the member
        object.__setattr__(self, "kind", AgreementKind(self.kind))


@dataclass(frozen=True, kw_only=True)
class Served:
    """What the server said about itself: the version it runs, whether its token counters matched the usage
    the client received, its TTFT histogram's median next to the client's, and its metric families (with
    those added and removed against the reference pin's)."""

    version: str = ""  # as reported ("" = not exposed)
    version_matches: bool | None = None
    tokens_match: bool | None = None  # None: no token counters
    server_ttft_p50_ms: float | None = None
    client_ttft_p50_ms: float | None = None
    families: tuple[str, ...] = ()
    compared_with: str = ""  # the reference pin whose families these were compared with ("" = not compared)
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()

    @property
    def line(self) -> str:
        """One line for the summary: "0.32.0; counters match; families +1/-0 vs 0.31.0"."""
        parts = [self.version or "version not exposed"]
        if self.tokens_match is not None:
            parts.append("counters match" if self.tokens_match else "COUNTERS DIFFER")
        if self.compared_with:
            parts.append(f"families +{len(self.added)}/-{len(self.removed)} vs {self.compared_with}")
        elif self.families:
            parts.append(f"{len(self.families)} families")
        return "; ".join(parts)


@dataclass(frozen=True, kw_only=True)
class Round:
    """One paired round of a load point: this pin's run and the partner's, back to back on servers up together."""

    first: str  # "ours" or "theirs": which went first (they alternate, ABBA)
    ours: Run
    theirs: Run


@dataclass(frozen=True, kw_only=True)
class PairedPoint:
    """A load point measured in paired rounds against a partner: the deployed pin (or, for the deployed pin's own
    cell, a second server of itself: the A/A control)."""

    label: str
    partner: str  # the partner's pin label, as verdicts name it
    rounds: tuple[Round, ...]
    # why the client was the limit over all the waves of a side together (load.metrics.client_limit), "" when it
    # was not: one wave's own flag (a single stall of the client's loop) does not take the point's verdicts
    client_bound: str = ""


@dataclass(frozen=True, kw_only=True)
class Deployment:
    """A pin deployed on a GPUStack 2.x server: what to apply there to run it (the key is never kept)."""

    server: str  # the GPUStack URL
    backend: str  # GPUStack's backend name
    backend_version: str
    backend_parameters: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    cluster_id: int | None = None
    worker: str = ""
    gpu: str = ""  # the worker's GPU model the instance ran on


@dataclass(frozen=True, kw_only=True)
class Startup:
    seconds: float  # spawn -> first ready response
    log_ready_s: float | None = None  # when the server's ready line appeared (cross-check)
    phases: Mapping[str, float] = field(default_factory=dict)  # the server's own, from its log


@dataclass(kw_only=True)
class CellResult:
    """One cell, built up by ``run_cell`` phase by phase and stored whole when it ends."""

    cell_id: str
    backend: str
    version: str
    model: str
    platform: str
    is_reference: bool
    status: Status = Status.PASSED
    failure_class: FailureClass | None = None
    reason: str = ""
    expected_failure: FailureClass | None = None  # the matrix's `expect`: this class is an xfail
    selected_by: str = ""  # the version set that brought this pin in
    variant: str = ""  # the launch variant ("": the platform declares none)
    baseline_variant: str = ""  # the variant whose reference pin this cell is compared with
    deployed_variant: str = ""  # the platform's first variant: the launch deployed today
    # What GPUStack would deploy it with: every server argument beyond model, name, host and port
    # (platform, model and variant serve_args), and the environment the matrix sets (secrets masked).
    backend_parameters: tuple[str, ...] = ()
    backend_env: dict[str, str] = field(default_factory=dict)
    phases: dict[str, float] = field(
        default_factory=dict
    )  # seconds: install, model, calibration, startup, probes, warm start
    probe_s: dict[str, float] = field(
        default_factory=dict
    )  # seconds per probe inside "probes": conformance, ..., load c=4
    conformance_s: dict[str, float] = field(
        default_factory=dict
    )  # seconds per group of conformance checks: chat, stream, ...
    wall_s: float = 0.0  # the whole cell; wall_s - sum(phases) is the harness's own overhead
    startup: dict[str, Startup] = field(default_factory=dict)  # cold, warm
    gpu_memory_peak_mib: dict[str, float] = field(default_factory=dict)
    stability: Stability | None = None  # the machine's speed before and after the server ran
    install: InstallRecord | None = None
    fingerprint: Fingerprint | None = None
    notes: dict[str, str] = field(default_factory=dict)  # how probes ran: fixed output length, speech source
    checks: list[Check] = field(default_factory=list)
    agreement: Agreement | None = None
    accuracy: TextAccuracy | SpeechAccuracy | None = None
    served: Served | None = None  # what the server said about itself (version, counters, metric families)
    deployment: Deployment | None = None  # GPUStack platforms: the deployment that was measured
    paired: list[PairedPoint] = field(default_factory=list)  # load points measured in rounds against a partner
    pairing: str = ""  # what was up together, or why the load points were measured cell by cell
    throughput: list[LoadPoint] = field(default_factory=list)
    log_path: str = ""
    log_excerpt: str = ""
    warnings: list[str] = field(default_factory=list)
    started_at: str = ""
    finished_at: str = ""

    def __post_init__(self) -> None:  # a class given as its word (a test, an older caller) becomes the member
        if self.expected_failure is not None:
            self.expected_failure = FailureClass(self.expected_failure)

    @property
    def label(self) -> str:
        return f"{self.backend}_{self.version}"

    @property
    def pin_label(self) -> str:
        """The pin as reports name it: its version, and its launch variant when the platform has several."""
        return f"{self.version} [{self.variant}]" if self.variant else self.version

    @property
    def deployed(self) -> bool:
        """The reference pin in the variant deployed today: what every other cell is weighed against."""
        return self.is_reference and self.variant == self.deployed_variant

    @property
    def is_baseline(self) -> bool:
        """The cell its variant's other cells are compared with: the reference pin, in a variant
        compared with itself."""
        return self.is_reference and self.baseline_variant == self.variant

    @property
    def hardware(self) -> str:
        """What numbers from this cell compare with: the GPU model, else the CPU's ISA (``Fingerprint.numerics``)."""
        return self.fingerprint.numerics if self.fingerprint is not None else "unknown"

    @property
    def final(self) -> bool:
        """An outcome the cell reached itself; an interrupted cell is not final and runs again on resume."""
        return self.status is not Status.SKIPPED

    @property
    def executable(self) -> str:
        return self.install.executable if self.install else ""

    @property
    def installed_now(self) -> bool:
        return bool(self.install and self.install.installed_now)

    @property
    def startup_s(self) -> float | None:
        """The cold start, spawn -> first ready response."""
        cold = self.startup.get("cold")
        return cold.seconds if cold else None

    def usable_points(self) -> list[LoadPoint]:
        """Load points a recommendation may use: not client-bound."""
        return [p for p in self.throughput if not p.saturated]

    @property
    def rate_unit(self) -> str:
        """What this cell's throughput counts: generated tokens, or seconds of audio handled."""
        return self.throughput[0].unit if self.throughput else TEXT_UNIT

    def peak_point(self) -> LoadPoint | None:
        usable = [p for p in self.usable_points() if not math.isnan(p.median)]
        return max(usable, key=lambda p: p.median) if usable else None

    def peak_rate(self) -> float | None:
        """The best usable load point's throughput, in ``rate_unit``."""
        peak = self.peak_point()
        return peak.median if peak else None

    def peak_ci95(self) -> tuple[float, float] | None:
        """The 95% CI of the peak point's throughput, when it was repeated."""
        peak = self.peak_point()
        return peak.ci95 if peak else None

    def first_p50_ms(self) -> float | None:
        """At the first load point (what a single user sees): TTFT p50 for text, request latency p50 for audio."""
        if not self.throughput:
            return None
        d = self.throughput[0].dist("ttft_ms") or self.throughput[0].dist("latency_ms")
        return None if d is None or math.isnan(d.p50) else d.p50

    def overhead_s(self) -> float | None:
        """What no phase accounts for: the harness's own time (process start/stop, bookkeeping)."""
        return self.wall_s - sum(self.phases.values()) if self.wall_s else None

    def to_dict(self) -> dict[str, Any]:
        return {"schema_version": SCHEMA_VERSION, **dump(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CellResult:
        version = data.get("schema_version")
        if version == 1:
            data = convert_v1(data)
        elif version != SCHEMA_VERSION:
            raise LoadError(f"schema_version {version!r} is not supported (expected {SCHEMA_VERSION}, or 1 to convert)")
        return load_record(cls, {k: v for k, v in data.items() if k != "schema_version"})


def results_schema() -> dict[str, Any]:
    """The JSON Schema of results.json (and of each results.jsonl line, ``#/$defs/CellLine``)."""
    from ..serial import schema

    doc = schema(CellResult)
    defs = doc["$defs"]
    cell = dict(defs["CellResult"])
    cell["properties"] = {"schema_version": {"const": SCHEMA_VERSION}, **cell["properties"]}
    cell["required"] = ["schema_version", *cell["required"]]
    defs["CellResult"] = cell
    return {
        "$schema": doc["$schema"],
        "$id": f"https://pinmatrix.invalid/schema/results-v{SCHEMA_VERSION}.json",
        "title": "pinmatrix results.json",
        "type": "object",
        "properties": {
            "schema_version": {"const": SCHEMA_VERSION},
            "run_id": {"type": "string"},
            "backend": {"type": "string"},
            "matrix": {"type": "string"},
            "cells": {"type": "array", "items": {"$ref": "#/$defs/CellResult"}},
        },
        "required": ["schema_version", "run_id", "backend", "cells"],
        "additionalProperties": False,
        "$defs": defs,
    }
