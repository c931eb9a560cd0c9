"""Paired, interleaved rounds: how a benchmark says "A / B" on a noisy machine without fooling itself.

Each round measures both sides back to back, alternating which goes first (A B, B A, ...) so a drift or an
order effect hits both alike. The first round is a warm-up (cold caches, page faults, CPU frequency
settling) and is dropped when enough rounds remain. What is reported is the median of the per-round ratios
with a distribution-free interval for that median (order statistics of the binomial: no normality
assumed, and exact for the few rounds a benchmark affords), and a plain sentence when the rounds spread
wider than the effect they measure: then there is no measured difference, whatever the median says.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass


def order(round_index: int) -> tuple[int, int]:
    """Which side runs first in a round: (0, 1) on even rounds, (1, 0) on odd ones (ABBA)."""
    return (0, 1) if round_index % 2 == 0 else (1, 0)


def run_rounds(
    rounds: int,
    sides: Sequence[Callable[[], float]],
    *,
    say: Callable[[str], None] = print,
    names: Sequence[str] = ("ours", "theirs"),
    unit: str = "",
) -> tuple[list[float], list[float]]:
    """``rounds`` interleaved rounds of both ``sides``; each returns one number.

    Returns each side's values in round order."""
    values: list[list[float]] = [[], []]
    for r in range(rounds):
        for side in order(r):
            values[side].append(sides[side]())
        first = names[order(r)[0]]
        say(
            f"round {r + 1}{' (warm-up)' if r == 0 and rounds > 3 else ''}: {names[0]} {values[0][-1]:,.1f}, "
            f"{names[1]} {values[1][-1]:,.1f} {unit} ({first} first), ratio {values[0][-1] / values[1][-1]:.3f}"
        )
    return values[0], values[1]


def median_interval(xs: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """The smallest symmetric order-statistic interval (x_(k), x_(n+1-k)) covering the median with at least
    ``confidence``; with too few values for that, the whole range, and the coverage it does have."""
    s = sorted(xs)
    n = len(s)
    best_k, coverage = 1, 1 - 2 * 0.5**n  # (min, max)
    for k in range(1, n // 2 + 1):
        cover = 1 - 2 * sum(math.comb(n, i) for i in range(k)) * 0.5**n
        if cover >= confidence:
            best_k, coverage = k, cover
    return s[best_k - 1], s[n - best_k], coverage


@dataclass(frozen=True, kw_only=True)
class Paired:
    ratios: tuple[float, ...]  # per kept round, ours / theirs
    dropped: int  # warm-up rounds left out
    median: float
    low: float
    high: float
    coverage: float  # of (low, high) for the median
    spread: float  # (max - min) / 2 / median of the kept ratios: how far rounds wander
    verdict: str

    def to_dict(self) -> dict[str, object]:
        return {
            "ratios": list(self.ratios),
            "dropped_warmup_rounds": self.dropped,
            "median_ratio": self.median,
            "interval": [self.low, self.high],
            "interval_coverage": round(self.coverage, 4),
            "spread": self.spread,
            "verdict": self.verdict,
        }

    @property
    def line(self) -> str:
        return (
            f"ratio {self.median:.3f} (median of {len(self.ratios)} rounds, {self.coverage:.0%} interval "
            f"[{self.low:.3f}, {self.high:.3f}], rounds spread ±{self.spread:.1%}) — {self.verdict}"
        )


def paired(ours: Sequence[float], theirs: Sequence[float], *, warmup: int = 1, margin: float = 0.03) -> Paired:
    """Summarise interleaved rounds. ``warmup`` first rounds are dropped when at least 3 rounds remain;
    ``margin``: differences inside it count as none (the benchmark's own target, e.g. 3%)."""
    if len(ours) != len(theirs) or not ours:
        raise ValueError("paired rounds need the same, non-zero number of values on both sides")
    drop = warmup if len(ours) - warmup >= 3 else 0
    ratios = [a / b for a, b in zip(ours[drop:], theirs[drop:], strict=True)]
    med = statistics.median(ratios)
    low, high, coverage = median_interval(ratios)
    spread = (max(ratios) - min(ratios)) / 2 / med
    effect = abs(med - 1)
    if low <= 1 <= high and spread > effect:
        verdict = f"no measured difference: the rounds spread ±{spread:.1%}, wider than the {effect:.1%} effect"
    elif low <= 1 <= high:
        verdict = "no measured difference: the interval holds 1"
    elif max(abs(low - 1), abs(high - 1)) <= margin:
        verdict = f"a difference, inside the {margin:.0%} margin"
    else:
        verdict = f"{'higher' if med > 1 else 'lower'} by {effect:.1%} (the interval excludes 1)"
    return Paired(
        ratios=tuple(ratios),
        dropped=drop,
        median=med,
        low=low,
        high=high,
        coverage=coverage,
        spread=spread,
        verdict=verdict,
    )
