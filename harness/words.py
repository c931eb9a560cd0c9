"""The words the harness decides with: model kinds and the outcome words of verdicts, trends, agreement and
bisection steps. Enums, so code compares members (``word is VerdictWord.SLOWER``), never text; each member's
value is the word shown in reports and stored in JSON.
"""

from __future__ import annotations

import enum


class Word(str, enum.Enum):
    """A str enum that prints as its value (``f"{VerdictWord.SLOWER}"`` is "slower") on every Python."""

    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)

    @classmethod
    def values(cls) -> tuple[str, ...]:
        return tuple(m.value for m in cls)


class ModelKind(Word):
    """What a model serves; each kind has a probe plan (``harness.cell.plans``)."""

    CHAT = "chat"
    COMPLETION = "completion"  # a base model: no chat template, completions only
    EMBEDDING = "embedding"
    STT = "stt"  # speech to text (transcription)
    TTS = "tts"  # text to speech

    @property
    def generates_text(self) -> bool:
        return self in (ModelKind.CHAT, ModelKind.COMPLETION)


class VerdictWord(Word):
    """One metric of a pin against the deployed pin at one load point."""

    SLOWER = "slower"  # the whole interval beyond the margin, the worse way
    FASTER = "faster"  # the whole interval beyond the margin, the better way
    EQUIVALENT = "equivalent"  # the whole interval inside ±margin: shown to be the same, within the margin
    INCONCLUSIVE = "inconclusive"  # anything else: may be inside the margin, may be beyond it (its note says how far)
    TOO_FEW = "too few samples"
    CLIENT_BOUND = "client-bound"
    MACHINE_UNSTABLE = "machine unstable"
    OTHER_MACHINE = "different machines: not compared"

    @property
    def decided(self) -> bool:
        """A statement about the pin (not about the samples, the client or the machine)."""
        return self in (VerdictWord.SLOWER, VerdictWord.FASTER, VerdictWord.EQUIVALENT)


class TrendWord(Word):
    """One cell against its own history on the same kind of machine."""

    FIRST_RUN = "first run"
    STEADY = "steady"
    SUSPICIOUS = "suspicious"
    REGRESSION = "regression"
    IMPROVED = "improved"

    @property
    def flagged(self) -> bool:
        return self in (TrendWord.SUSPICIOUS, TrendWord.REGRESSION)


class AgreementKind(Word):
    """What a cell's agreement with the reference pin compared."""

    REFERENCE = "reference"  # this is the reference pin
    NOT_COMPARED = "not-compared"  # the reference pin has no stored outputs for these settings
    GREEDY = "greedy"
    EMBEDDINGS = "embeddings"
    TRANSCRIPTS = "transcripts"


class StepWord(Word):
    """A bisection step's reading of one release."""

    GOOD = "good"
    BAD = "bad"
    CANNOT_JUDGE = "cannot judge"


class LoadProfile(Word):
    """How a text load point is driven (``workload.profile``)."""

    CONCURRENCY = "concurrency"  # closed loop: one point per level
    RATE = "rate"  # open loop: requests/s per point
    SWEEP = "sweep"  # synchronous -> max throughput -> rates in between
