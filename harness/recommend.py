"""Choosing a pin, and the parameters to launch it with, per (model, platform, kind of machine) from the recorded cells.

Eligible: installed, started within the deadline, passed every required check. Ranked by peak throughput
(output tok/s, or audio s/s for speech); pins within the measured noise of the best are tied, and the
matrix's policy breaks the tie (``newest``, or ``closest-to-reference``). Where the verdicts call the best pin
and others equivalent to the deployed pin on every output tok/s verdict, those are tied too, whatever their
peaks: peaks of cells measured one after another cannot rank what the paired rounds could not tell apart.
A pin that is measurably slower than the deployed (reference) pin on any metric at any load point (a "slower"
verdict) is never chosen over an eligible deployed pin: an upgrade must not make what users see worse.
Every other pin carries the reason it was not chosen.

With launch variants a candidate is a pin *and* its parameters ("0.32.0 [fp32]"); a tie between variants of
one pin goes to the deployed launch (changing nothing beats changing parameters for no measured gain).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from packaging.version import Version

from .results import AUDIO_UNIT, TEXT_UNIT, CellResult, SpeechAccuracy, Status
from .verdict import Verdict
from .words import VerdictWord


@dataclass(frozen=True, kw_only=True)
class Recommendation:
    backend: str
    model: str
    platform: str
    version: str | None
    reasons: tuple[str, ...]
    rejected: dict[str, str] = field(default_factory=dict)  # pin label -> why not
    ranking: tuple[tuple[str, float], ...] = ()
    unit: str = "output tok/s"
    variant: str = ""  # the chosen pin's launch variant ("": the platform has none)
    backend_parameters: tuple[str, ...] = ()  # GPUStack's backend_parameters: what the chosen pin was measured with
    env: dict[str, str] = field(default_factory=dict)
    measured_on: str = ""  # the kind of machine, when the run had several

    @property
    def label(self) -> str:
        """The chosen pin as the report names it: version, and launch variant when there is one."""
        return f"{self.version} [{self.variant}]" if self.variant and self.version else self.version or ""

    @property
    def where(self) -> str:
        """What the recommendation is for: the model, the platform and, when a run had several, the kind of machine."""
        return f"{self.model} on {self.platform}" + (f" ({self.measured_on})" if self.measured_on else "")

    @property
    def headline(self) -> str:
        """The chosen pin in GPUStack's terms: backend_version and backend_parameters."""
        if self.version is None:
            return "none"
        return self.label + (f" with {' '.join(self.backend_parameters)}" if self.backend_parameters else "")

    def to_dict(self) -> dict[str, object]:
        return {
            "backend": self.backend,
            "model": self.model,
            "platform": self.platform,
            "backend_version": self.version,
            "backend_parameters": list(self.backend_parameters),
            **({"env": dict(self.env)} if self.env else {}),
            **({"variant": self.variant} if self.variant else {}),
            **({"measured_on": self.measured_on} if self.measured_on else {}),
            "reasons": list(self.reasons),
            "rejected": dict(self.rejected),
            "ranking": [{"version": v, "peak": round(t, 2), "unit": self.unit} for v, t in self.ranking],
        }


def _rejection(cell: CellResult, required: Sequence[str]) -> str | None:
    if cell.status is not Status.PASSED:
        what = cell.failure_class.value if cell.failure_class else cell.status.value
        if not cell.reason:
            return what
        return (
            cell.reason if cell.reason.startswith(f"{what}:") else f"{what}: {cell.reason}"
        )  # never "failed: failed: ..."
    failed = [c.name for c in cell.checks if c.blocking(required)]
    if failed:
        return f"failed required checks: {', '.join(failed)}"
    if cell.throughput and not cell.usable_points():
        return "every load point was client-bound (the load generator, not the server, was the limit)"
    # A required group that ran but could not judge anything (e.g. agreement with no reference
    # outputs) blocks; one unevaluable check among evaluated ones does not.
    for group in required:
        ran = [c for c in cell.checks if c.group == group]
        if ran and all(c.passed is None for c in ran):
            return f"required checks not evaluated: {', '.join(c.name for c in ran)}"
    return None


def _tied(cell: CellResult, best: CellResult, noise: float) -> bool:
    """Inside the measured noise of the best: overlapping 95% CIs when both were repeated, else within
    the matrix's relative ``noise``."""
    a, b = cell.peak_ci95(), best.peak_ci95()
    if a and b:
        return a[1] >= b[0]
    return (cell.peak_rate() or 0.0) >= (best.peak_rate() or 0.0) * (1 - noise)


def recommend(
    cells: Sequence[CellResult],
    *,
    required_checks: Sequence[str],
    noise: float,
    tie_break: str,
    reference: str,
    verdicts: Sequence[Verdict] = (),
    measured_on: str = "",
) -> Recommendation:
    """Recommend one pin (and launch variant) among ``cells`` (all of one backend, model, platform and kind of
    machine); ``verdicts``: each cell against its baseline (``report.verdicts``)."""
    if not cells:
        raise ValueError("no cells to recommend from")
    first = cells[0]
    rejected: dict[str, str] = {}
    eligible: list[CellResult] = []
    for cell in cells:
        why = _rejection(cell, required_checks)
        if why is None:
            eligible.append(cell)
        else:
            rejected[cell.pin_label] = why
    base = Recommendation(
        backend=first.backend,
        model=first.model,
        platform=first.platform,
        version=None,
        reasons=("no pin installed, started and passed every required check",),
        rejected=rejected,
        measured_on=measured_on,
    )
    if not eligible:
        return base
    _drop_slower(eligible, rejected, verdicts, first.model)
    ranked = sorted(eligible, key=lambda c: c.peak_rate() or 0.0, reverse=True)
    same, how_same = _equivalent(eligible, verdicts, first.model)
    best_same = ranked[0].pin_label in same
    tied = [c for c in ranked if _tied(c, ranked[0], noise) or (best_same and c.pin_label in same)]
    chosen = _break_tie(tied, cells, reference, tie_break)
    reasons = [f"passed {', '.join(required_checks)} and started in {chosen.startup_s or 0.0:.1f} s"]
    reasons += _how_sure(chosen, verdicts, first.model)
    reasons += _ranking(chosen, ranked, tied, rejected, noise=noise, tie_break=tie_break, same=(same, how_same))
    if chosen.variant and chosen.variant != chosen.deployed_variant:
        env = " ".join(f"{k}={v}" for k, v in chosen.backend_env.items())
        reasons.append(
            f"launched with the {chosen.variant!r} variant's parameters "
            f"({' '.join(chosen.backend_parameters) or 'none'}"
            + (f", env {env}" if env else "")
            + f"), not the deployed {chosen.deployed_variant!r}"
        )
    return replace(
        base,
        version=chosen.version,
        reasons=tuple(reasons),
        ranking=tuple((c.pin_label, c.peak_rate() or 0.0) for c in ranked),
        unit=chosen.rate_unit,
        variant=chosen.variant,
        backend_parameters=chosen.backend_parameters,
        env=dict(chosen.backend_env),
    )


def _drop_slower(eligible: list[CellResult], rejected: dict[str, str], verdicts: Sequence[Verdict], model: str) -> None:
    """Never worse than what runs today, when that still qualifies: a pin with a "slower" verdict against the
    deployed pin is not eligible."""
    deployed = next((c for c in eligible if c.deployed), None)
    if deployed is None:
        return
    slower: dict[str, Verdict] = {}
    for v in verdicts:
        if v.word is VerdictWord.SLOWER and v.deployed and v.model == model:
            slower.setdefault(v.version, v)
    for c in [c for c in eligible if c.pin_label in slower]:
        eligible.remove(c)
        rejected[c.pin_label] = f"slower than the deployed pin {deployed.pin_label}: {slower[c.pin_label].line}"


def _equivalent(eligible: Sequence[CellResult], verdicts: Sequence[Verdict], model: str) -> tuple[set[str], str]:
    """The pins whose every verdict on the ranking rate (output tok/s) against the deployed pin is "equivalent",
    with the deployed pin itself, and how that was shown. Their peaks come from cells measured minutes apart,
    on a machine whose speed moves more than the margin those verdicts were decided at: the peaks cannot rank
    pins that the verdicts call equivalent to one and the same pin (a CI run ranked three identical servers
    706, 682 and 657 tok/s, each "equivalent" to the first in paired rounds)."""
    words: dict[str, set[VerdictWord]] = {}
    rounds: set[bool] = set()
    deployed = ""
    for v in verdicts:
        if v.deployed and v.model == model and v.metric == TEXT_UNIT:
            words.setdefault(v.version, set()).add(v.word)
            rounds.add(v.rounds > 0)
            deployed = v.reference
    same = {pin for pin, w in words.items() if w == {VerdictWord.EQUIVALENT}}
    if not same:
        return set(), ""
    same |= {c.pin_label for c in eligible if c.deployed}
    basis = (
        "in paired rounds"
        if rounds == {True}
        else "cell by cell"
        if rounds == {False}
        else "in paired rounds or cell by cell"
    )
    return same, f"equivalent to the deployed pin {deployed} {basis} on every output tok/s verdict"


def _break_tie(tied: list[CellResult], cells: Sequence[CellResult], reference: str, tie_break: str) -> CellResult:
    if tie_break != "closest-to-reference":  # newest; of one pin, the deployed launch
        return max(tied, key=lambda c: (Version(c.version), c.variant == c.deployed_variant))
    ordered = sorted({Version(c.version) for c in cells})
    ref_pos = ordered.index(Version(reference)) if Version(reference) in ordered else 0

    def distance(c: CellResult) -> tuple[int, bool, int]:  # nearest first; the deployed launch; the newer of two
        pos = ordered.index(Version(c.version))
        return (abs(pos - ref_pos), c.variant != c.deployed_variant, -pos)

    return min(tied, key=distance)


def _how_sure(chosen: CellResult, verdicts: Sequence[Verdict], model: str) -> list[str]:
    """Speech: what a user hears; any pin: what its verdicts against the deployed pin say."""
    reasons = []
    if isinstance(chosen.accuracy, SpeechAccuracy):  # speech: what a user hears, and how long a request takes
        ref_wer = chosen.accuracy.reference_wer
        reasons.append(
            f"WER {chosen.accuracy.wer:.1%}"
            + (f" (reference {ref_wer:.1%})" if ref_wer is not None else "")
            + (f", latency p50 {chosen.first_p50_ms():.0f} ms at the lowest load" if chosen.first_p50_ms() else "")
        )
    mine = [v for v in verdicts if v.version == chosen.pin_label and v.deployed and v.model == model]
    if mine:
        words = Counter(v.word for v in mine)
        reasons.append(
            f"against the deployed pin {mine[0].reference}: "
            + ", ".join(f"{n} {w}" for w, n in words.items())
            + f" ({len(mine)} metric x load point verdicts)"
        )
        unsure = [v for v in mine if v.word is VerdictWord.INCONCLUSIVE]
        if unsure:  # not called equal to what runs today on intervals that allow a real difference
            # the one that needs the most rounds to decide (one on the margin, no number of them)
            first = max(unsure, key=lambda v: v.samples_to_decide() or math.inf)
            reasons.append(
                f"not shown equivalent to the deployed pin on {len(unsure)} of them ({first.metric} at {first.point}: "
                f"{first.note}; {first.to_decide()})"
            )
    waived = sorted({c.name for c in chosen.checks if c.waived})
    if waived:
        reasons.append(f"{len(waived)} known deviation(s) waived by the matrix: {', '.join(waived)}")
    return reasons


def _ranking(
    chosen: CellResult,
    ranked: list[CellResult],
    tied: list[CellResult],
    rejected: dict[str, str],
    *,
    noise: float,
    tie_break: str,
    same: tuple[set[str], str] = (set(), ""),
) -> list[str]:
    """Why the chosen pin's throughput won, and each other eligible pin's throughput as its reason. ``same``: the
    pins the verdicts call equivalent to the deployed pin, and how (``_equivalent``)."""
    tok, unit = chosen.peak_rate() or 0.0, chosen.rate_unit
    spec = ".2f" if unit == AUDIO_UNIT else ".1f"  # ~2 audio s/s on CPU: one decimal hides the differences
    for cell in ranked:
        if cell is not chosen:
            rejected.setdefault(
                cell.pin_label,
                f"eligible, not chosen: {cell.peak_rate() or 0.0:{spec}} {unit}"
                + (" (tie lost to policy)" if cell in tied else f" vs {tok:{spec}}"),
            )
    if chosen.peak_rate() is None:  # e.g. an embedding model: no generation throughput to rank by
        return [f"no throughput measured; chosen among {len(tied)} eligible pin(s) by policy '{tie_break}'"]
    if len(tied) > 1:
        others = ", ".join(f"{c.pin_label} ({c.peak_rate() or 0.0:{spec}})" for c in tied if c is not chosen)
        if all(c.pin_label in same[0] for c in tied):
            return [
                f"peak {tok:{spec}} {unit}, tied with {others}: each {same[1]}; a tie, broken by policy '{tie_break}'"
            ]
        repeated = chosen.peak_ci95() and all(c.peak_ci95() for c in tied)
        how = "95% CIs overlap with" if repeated else f"within {noise:.0%} of"
        return [f"peak {tok:{spec}} {unit}, {how} {others}: a tie, broken by policy '{tie_break}'"]
    return [f"fastest eligible pin: peak {tok:{spec}} {unit}"]
