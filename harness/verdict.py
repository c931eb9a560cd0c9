"""A verdict per pin against the reference (deployed) pin in the same run: like with like.

Per model and load point (the same label on both sides, neither client-bound), for output tok/s, TTFT p50
and TPOT p50 (speech: latency p50): the ratio pin / reference with a 95% percentile-bootstrap interval, and
a word. Resampled are requests (per-request samples kept in each ``Run``), or the repeats' rates when a
point has three or more. Equivalence-test words against the matrix's noise margin (``throughput_noise``):
"slower"/"faster" when the whole interval lies beyond it, "equivalent" when the whole interval lies inside
±margin, "inconclusive" otherwise, with the bound in words ("could be up to 25% slower"); "too few
samples" below the 7 a median needs (MLPerf's
early-stopping minimum for p50). A difference measured while the machine itself moved (its calibration,
``stability.py``, differs around or between the two cells by more than ``machine_drift``) is
"machine unstable", not a verdict on the pin. The bootstrap is seeded: the same results give the same verdicts.
"""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

from .results import CellResult, LoadPoint, PairedPoint, Round
from .stability import unstable
from .stats import MIN_SAMPLES, mean, median_interval, percentile
from .words import VerdictWord

RESAMPLES = 2000
MIN_REPEATS_FOR_RUNS = 3  # from three repeats on, throughput is resampled over runs rather than requests


@dataclass(frozen=True, kw_only=True)
class Metric:
    name: str  # what the report says: "output tok/s", "TTFT p50"
    sample: str  # Run.samples key
    higher_is_better: bool
    statistic: Callable[[Sequence[float]], float]


def _median(xs: Sequence[float]) -> float:
    return percentile(xs, 50)


TEXT_METRICS = (
    Metric(name="output tok/s", sample="tok_s", higher_is_better=True, statistic=mean),
    Metric(name="TTFT p50", sample="ttft_ms", higher_is_better=False, statistic=_median),
    Metric(name="TPOT p50", sample="tpot_ms", higher_is_better=False, statistic=_median),
)
SPEECH_METRICS = (Metric(name="latency p50", sample="latency_ms", higher_is_better=False, statistic=_median),)


@dataclass(frozen=True, kw_only=True)
class Verdict:
    version: str
    reference: str
    model: str
    point: str
    metric: str
    ratio: float | None = None  # pin / reference
    low: float | None = None
    high: float | None = None
    n: int  # samples on the pin's side
    n_reference: int
    word: VerdictWord
    deployed: bool = True  # against the run's reference pin (False: against another run's same pin)
    note: str = ""  # why a word is not a verdict on the pin (machine unstable: what moved)
    measured_on: str = ""  # the kind of machine both sides ran on (``Fingerprint.numerics``)
    margin: float = 0.0  # the ±noise margin the word was decided against
    higher_is_better: bool = True  # throughput; latencies are better lower
    rounds: int = 0  # paired rounds behind it (0: two cells' request pools compared, sequential)

    @property
    def goodness(self) -> tuple[float, float, float] | None:
        """(ratio, low, high) oriented so that above 1 is better for the pin, whatever the metric."""
        if self.ratio is None or self.low is None or self.high is None:
            return None
        if self.higher_is_better:
            return self.ratio, self.low, self.high
        return 1 / self.ratio, 1 / self.high, 1 / self.low

    @property
    def flagged(self) -> bool:
        """Shown in red: a pin measurably slower."""
        return self.word is VerdictWord.SLOWER

    def samples_to_decide(self) -> float | None:
        """About how many samples (paired rounds, or requests a side) would decide an inconclusive verdict, if
        the interval narrows as 1/sqrt(n) at the spread measured; None when its ratio sits on the margin (no
        number of samples decides it) or there is no interval."""
        if self.ratio is None or self.low is None or self.high is None or self.n <= 0:
            return None
        ratio, lo_m, hi_m = self.ratio, 1 - self.margin, 1 + self.margin
        below, above = max(ratio - self.low, 1e-12), max(self.high - ratio, 1e-12)
        if ratio < lo_m:  # beyond the margin below 1, once the upper end clears it
            scale = (lo_m - ratio) / above
        elif ratio > hi_m:  # beyond it above 1, once the lower end clears it
            scale = (ratio - hi_m) / below
        else:  # equivalent, once both ends are inside
            scale = min((ratio - lo_m) / below, (hi_m - ratio) / above)
        if scale < 0.02:  # within a fiftieth of the interval of the margin's edge: 2500x the samples
            return None
        return self.n / scale**2

    def to_decide(self) -> str:
        """What more samples would take, in words, for an inconclusive verdict."""
        need = self.samples_to_decide()
        if need is None:
            return "its ratio sits on the margin: no number of rounds would decide it"
        if self.rounds:
            return (
                f"about {math.ceil(need)} paired rounds would decide it at this spread (it had {self.rounds}: "
                "workload.rounds, more while inconclusive up to workload.max_point_s)"
            )
        return (
            f"about {math.ceil(need)} requests a side would decide it at this spread (it had {self.n}: "
            "workload.requests_per_level x workload.repeats)"
        )

    @property
    def line(self) -> str:
        what = f"{self.version} vs {self.reference}{' (deployed)' if self.deployed else ''}: {self.metric}"
        note = f": {self.note}" if self.note else ""
        basis = f"{self.rounds} paired rounds" if self.rounds else f"n={self.n} vs {self.n_reference}"
        if self.ratio is None or self.low is None or self.high is None:
            return f"{what} at {self.point} — {self.word} ({basis}){note}"
        return (
            f"{what} ×{self.ratio:.2f} [{self.low:.2f}, {self.high:.2f}] at {self.point} — {self.word} ({basis}){note}"
        )

    def to_dict(self) -> dict[str, object]:
        return {
            "version": self.version,
            "reference": self.reference,
            "model": self.model,
            "point": self.point,
            "metric": self.metric,
            "ratio": self.ratio,
            "ci95": None if self.low is None else [self.low, self.high],
            "n": self.n,
            "n_reference": self.n_reference,
            "verdict": self.word.value,
            **({"note": self.note} if self.note else {}),
            **({"measured_on": self.measured_on} if self.measured_on else {}),
            **({"margin": self.margin} if self.margin else {}),
            **({"rounds": self.rounds} if self.rounds else {}),
        }


def bootstrap_ratio(
    ours: Sequence[float],
    theirs: Sequence[float],
    statistic: Callable[[Sequence[float]], float],
    *,
    seed: int = 0,
    resamples: int = RESAMPLES,
) -> tuple[float, float, float]:
    """statistic(ours) / statistic(theirs) and its 95% percentile-bootstrap interval (each side resampled)."""
    rng = random.Random(seed)
    ratio = statistic(ours) / statistic(theirs)
    draws = []
    for _ in range(resamples):
        a = statistic([ours[rng.randrange(len(ours))] for _ in ours])
        b = statistic([theirs[rng.randrange(len(theirs))] for _ in theirs])
        if b > 0:
            draws.append(a / b)
    return ratio, percentile(draws, 2.5), percentile(draws, 97.5)


def _samples(point: LoadPoint, metric: Metric, over_runs: bool) -> list[float]:
    """The repeats' rates (throughput, both sides repeated enough), else every request's sample: both sides
    of a ratio always in one kind (a run's aggregate rate is not a request's rate)."""
    if metric.sample == "tok_s" and over_runs:
        return [r.rate for r in point.runs]
    return [x for r in point.runs for x in r.samples.get(metric.sample, ())]


def compare(
    cell: CellResult,
    reference: CellResult,
    *,
    noise: float = 0.05,
    seed: int = 0,
    labels: tuple[str, str] | None = None,
    drift: float = 0.10,
    deployed: bool | None = None,
    sequential_noise: float = 0.0,
    floors: Mapping[tuple[str, str], float] | None = None,
) -> list[Verdict]:
    """Every metric at every load point the two cells share. ``labels``: how to name the two sides (default:
    each pin and its launch variant; two runs of one pin: "0.32.0 (tue)", "0.32.0 (mon)"). ``deployed``:
    whether ``reference`` is what is deployed today (default: when no labels are given). ``drift``: how far
    the machine's calibration may move before a difference is put down to the machine. A point the cell
    measured in paired rounds against ``reference``'s pin is judged on those rounds at ``noise``; any other
    point compares the two cells' request pools at the wider of ``noise`` and ``sequential_noise``. ``floors``:
    this run's A/A floor per (point, metric) (``aa_floors``); a paired verdict's margin is never below its own."""
    moved = unstable(cell.stability, reference.stability, drift)
    ours_label, theirs_label = labels or (cell.pin_label, reference.pin_label)
    base = Verdict(
        version=ours_label,
        reference=theirs_label,
        model=cell.model,
        point="",
        metric="",
        n=0,
        n_reference=0,
        word=VerdictWord.TOO_FEW,
        deployed=labels is None if deployed is None else deployed,
        measured_on=cell.hardware,
    )
    metrics = SPEECH_METRICS if cell.rate_unit == "audio s/s" else TEXT_METRICS
    theirs_by_label = {p.label: p for p in reference.throughput}
    paired = {p.label: p for p in cell.paired if p.partner == reference.pin_label and labels is None}
    out: list[Verdict] = []
    for point in cell.throughput:
        if point.label in paired:
            out += compare_paired(paired[point.label], base, noise, floors or {})
            continue
        ref_point = theirs_by_label.get(point.label)
        if ref_point is not None:
            margin = max(noise, sequential_noise)
            out += [_pooled(point, ref_point, m, replace(base, margin=margin), seed, moved) for m in metrics]
    return out


def _pooled(
    point: LoadPoint, ref_point: LoadPoint, metric: Metric, base: Verdict, seed: int, moved: str | None
) -> Verdict:
    """One metric at a point from two cells measured one after the other: their request pools (or repeats'
    rates) resampled, at the base's (sequential) margin."""
    over_runs = min(len(point.runs), len(ref_point.runs)) >= MIN_REPEATS_FOR_RUNS
    ours, theirs = _samples(point, metric, over_runs), _samples(ref_point, metric, over_runs)
    sized = replace(
        base,
        point=point.label,
        metric=metric.name,
        n=len(ours),
        n_reference=len(theirs),
        higher_is_better=metric.higher_is_better,
    )
    if point.saturated or ref_point.saturated:
        why = "; ".join(
            f"{name}: {p.saturation_reason}"
            for name, p in ((base.version, point), (base.reference, ref_point))
            if p.saturated
        )
        return replace(sized, word=VerdictWord.CLIENT_BOUND, note=why)
    needed = MIN_REPEATS_FOR_RUNS if metric.sample == "tok_s" and over_runs else MIN_SAMPLES[50]
    if min(len(ours), len(theirs)) < needed or metric.statistic(theirs) <= 0:
        return sized  # too few samples
    ratio, low, high = bootstrap_ratio(ours, theirs, metric.statistic, seed=seed)
    word, note = _word(low, high, metric.higher_is_better, base.margin, moved)
    return replace(sized, ratio=ratio, low=low, high=high, word=word, note=note)


def _word(low: float, high: float, higher_is_better: bool, noise: float, moved: str | None) -> tuple[VerdictWord, str]:
    """The word for a ratio's interval against ±``noise``, and a note when the word needs one. The margin is
    applied to the ratio as it is shown (a TTFT ×1.29 is 29% slower, not the 22.5% its inverse would say)."""
    if high < 1 - noise or low > 1 + noise:  # the whole interval beyond the margin, on one side
        below = high < 1 - noise
        word = VerdictWord.SLOWER if below == higher_is_better else VerdictWord.FASTER
    elif low >= 1 - noise and high <= 1 + noise:
        word = VerdictWord.EQUIVALENT
    else:
        word = VerdictWord.INCONCLUSIVE
    if moved is not None and word is not VerdictWord.EQUIVALENT:  # the machine, not (provably) the pin
        return VerdictWord.MACHINE_UNSTABLE, f"looked {word}, but {moved}"
    if word is VerdictWord.INCONCLUSIVE:
        return word, _bounds(low, high, higher_is_better, noise)
    return word, ""


def _bounds(low: float, high: float, higher_is_better: bool, noise: float) -> str:
    """What an inconclusive interval allows, in words: "could be up to 25% slower"."""
    slower = (1 - low) if higher_is_better else (high - 1)  # the worst case, as a fraction of the deployed pin
    faster = (high - 1) if higher_is_better else (1 - low)
    # whole percents where they read true; a tenth where rounding would say "up to 8% ... the ±8% margin"
    worst = [x for x in (slower, faster) if x > noise]
    digits = 0 if _whole(noise) and all(round(x * 100) > round(noise * 100) for x in worst) else 1
    parts = []
    if slower > noise:
        parts.append(f"could be up to {slower:.{digits}%} slower")
    if faster > noise:
        parts.append(f"could be up to {faster:.{digits}%} faster")
    margin = f"not shown within the ±{noise:.{digits}%} margin"
    return ", ".join(parts) + f": {margin}" if parts else margin


def _whole(fraction: float) -> bool:
    return abs(fraction * 100 - round(fraction * 100)) < 0.05


def percent(fraction: float) -> str:
    """A margin as a person reads it: 15%, 7.5%."""
    return f"{fraction:.0%}" if _whole(fraction) else f"{fraction:.1%}"


MIN_ROUNDS = 6  # the fewest paired rounds whose order-statistic interval covers the median with >= 95%


def round_ratios(rounds: Sequence[Round], metric: Metric) -> list[float]:
    """Per round, ours / theirs for ``metric`` (rounds where either side has no value are left out)."""
    out = []
    for r in rounds:
        if metric.sample == "tok_s":
            a, b = r.ours.rate, r.theirs.rate
        else:
            da, db = r.ours.distributions.get(metric.sample), r.theirs.distributions.get(metric.sample)
            a, b = (da.p50 if da else math.nan), (db.p50 if db else math.nan)
        if a == a and b == b and b > 0:
            out.append(a / b)
    return out


def paired_word(rounds: Sequence[Round], margin: float, metric_index: int) -> VerdictWord:
    """The word a paired point would get now on ``TEXT_METRICS[metric_index]`` (to decide on more rounds)."""
    metric = TEXT_METRICS[metric_index]
    ratios = round_ratios(rounds, metric)
    if len(ratios) < MIN_ROUNDS:
        return VerdictWord.TOO_FEW
    low, high, _ = median_interval(ratios)
    return _word(low, high, metric.higher_is_better, margin, None)[0]


def compare_paired(
    point: PairedPoint, base: Verdict, noise: float, floors: Mapping[tuple[str, str], float] | None = None
) -> list[Verdict]:
    """Each metric of a load point measured in paired rounds: the median of the per-round ratios with its
    order-statistic interval, decided at the wider of ``noise`` and this run's A/A floor for that point and
    metric. Both servers met the same machine in every round: no drift to explain away."""
    out = []
    for metric in TEXT_METRICS:
        same = [f for (_, name), f in (floors or {}).items() if name == metric.name]
        margin = max(noise, (floors or {}).get((point.label, metric.name), max(same, default=0.0)))
        ratios = round_ratios(point.rounds, metric)
        sized = replace(
            base,
            point=point.label,
            metric=metric.name,
            n=len(ratios),
            n_reference=len(ratios),
            rounds=len(ratios),
            margin=margin,
            higher_is_better=metric.higher_is_better,
        )
        if point.client_bound:
            out.append(replace(sized, word=VerdictWord.CLIENT_BOUND, note=point.client_bound))
        elif len(ratios) < MIN_ROUNDS:
            out.append(replace(sized, word=VerdictWord.TOO_FEW, note=f"{len(ratios)} rounds: a median's 95% needs 6"))
        else:
            low, high, _ = median_interval(ratios)
            word, note = _word(low, high, metric.higher_is_better, margin, None)
            ratio = statistics.median(ratios)
            out.append(replace(sized, ratio=ratio, low=low, high=high, word=word, note=note))
    return out


def aa_floors(cells: Sequence[CellResult]) -> dict[tuple[str, str], float]:
    """This run's own noise floor on this machine, per metric: how far apart the deployed pin looked from a twin
    of itself in its A/A paired rounds (the wider side of the median's interval), the widest over the load
    points, keyed (point, metric) for each point measured. A TTFT at four in flight moves more than output tok/s
    does, and should not widen tok/s's margin; one point's single interval is too thin an estimate of a metric's
    noise (a twin's own interval would cross it by chance), so each metric takes its widest. Empty without an
    A/A control."""
    widest: dict[str, float] = {}
    points: set[str] = set()
    for c in cells:
        for point in c.paired:
            if point.partner != c.pin_label:
                continue
            for metric in TEXT_METRICS:
                ratios = round_ratios(point.rounds, metric)
                if len(ratios) >= MIN_ROUNDS:
                    low, high, _ = median_interval(ratios)
                    widest[metric.name] = max(widest.get(metric.name, 0.0), 1 - low, high - 1, 0.0)
                    points.add(point.label)
    return {(label, name): floor for label in sorted(points) for name, floor in widest.items()}


def compare_runs(
    before: Sequence[CellResult],
    after: Sequence[CellResult],
    *,
    names: tuple[str, str],
    noise: float = 0.05,
    seed: int = 0,
    drift: float = 0.10,
) -> list[Verdict]:
    """Each cell of ``after`` against the same pin, model and platform in ``before``: two nights, two runs.
    Cells measured on different kinds of machine are never compared (their numbers say nothing of the pin)."""
    earlier = {(c.model, c.platform, c.version, c.variant): c for c in before}
    out = []
    for cell in after:
        old = earlier.get((cell.model, cell.platform, cell.version, cell.variant))
        if old is None or not cell.throughput or not old.throughput:
            continue
        labels = (f"{cell.pin_label} ({names[1]})", f"{old.pin_label} ({names[0]})")
        ours, theirs = (c.fingerprint.numerics if c.fingerprint else "unknown" for c in (cell, old))
        if ours != theirs or "unknown" in ours:
            out.append(
                Verdict(
                    version=labels[0],
                    reference=labels[1],
                    model=cell.model,
                    point="every point",
                    metric="all",
                    n=0,
                    n_reference=0,
                    deployed=False,
                    word=VerdictWord.OTHER_MACHINE,
                )
            )
            continue
        out += compare(cell, old, noise=noise, seed=seed, labels=labels, drift=drift)
    return out
