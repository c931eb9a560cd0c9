"""The statistics every figure shares: percentiles (numpy's default interpolation), a distribution summary
with its sample count, and the 95% confidence interval of a mean over repeats."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass


def percentile(values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default), q in [0, 100]."""
    if not values:
        return math.nan
    data = sorted(values)
    if len(data) == 1:
        return float(data[0])
    pos = (len(data) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(data) - 1)
    return float(data[lo] + (data[hi] - data[lo]) * (pos - lo))


def mean(values: Sequence[float]) -> float:
    return float(sum(values) / len(values)) if values else math.nan


def t_critical_95(df: int) -> float:
    """Two-sided 95% Student t critical values (df 1..30; normal beyond)."""
    table = (
        12.706,
        4.303,
        3.182,
        2.776,
        2.571,
        2.447,
        2.365,
        2.306,
        2.262,
        2.228,
        2.201,
        2.179,
        2.160,
        2.145,
        2.131,
        2.120,
        2.110,
        2.101,
        2.093,
        2.086,
        2.080,
        2.074,
        2.069,
        2.064,
        2.060,
        2.056,
        2.052,
        2.048,
        2.045,
        2.042,
    )
    return table[df - 1] if 1 <= df <= len(table) else 1.96


def ci95_of_mean(values: Sequence[float]) -> tuple[float, float] | None:
    """t-based 95% CI of the mean; None below 2 values."""
    if len(values) < 2:
        return None
    m = mean(values)
    sd = math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1))
    half = t_critical_95(len(values) - 1) * sd / math.sqrt(len(values))
    return (m - half, m + half)


def ci95_positive(values: Sequence[float]) -> tuple[float, float] | None:
    """95% CI of a positive quantity's (geometric) mean, from a t-interval on log values: it never goes
    below zero, however wide (measured: a t-interval on raw tok/s once read [-77.9, 1037.3])."""
    if len(values) < 2 or any(not v > 0 for v in values):  # a zero (nothing completed) or NaN: no interval
        return None
    lo, hi = ci95_of_mean([math.log(v) for v in values]) or (math.nan, math.nan)
    return (math.exp(lo), math.exp(hi))


def mean_ci95_bootstrap(values: Sequence[float], *, seed: int = 0, resamples: int = 1000) -> tuple[float, float] | None:
    """95% percentile-bootstrap interval of the mean (seeded); None below 2 values."""
    if len(values) < 2:
        return None
    rng = random.Random(seed)
    n = len(values)
    means = [sum(values[rng.randrange(n)] for _ in range(n)) / n for _ in range(resamples)]
    return percentile(means, 2.5), percentile(means, 97.5)


def relative_halfwidth(values: Sequence[float], *, seed: int = 0) -> float | None:
    """Half the width of the mean's 95% bootstrap interval, as a fraction of the mean: the precision reached."""
    ci = mean_ci95_bootstrap(values, seed=seed)
    m = mean(values)
    return None if ci is None or not m > 0 else (ci[1] - ci[0]) / 2 / m


# MLPerf loadgen's early-stopping minimum sample count for a percentile claim at 99% confidence with no
# sample over it: below these, a percentile is "n too small" (and never drives a verdict).
MIN_SAMPLES = {50: 7, 90: 44, 95: 90, 99: 459}


def enough_for(q: int, n: int) -> bool:
    return n >= MIN_SAMPLES.get(q, 1)


@dataclass(frozen=True, kw_only=True)
class Distribution:
    """Mean and percentiles of a sample, with its size (a p99 of 8 samples says little)."""

    mean: float
    p50: float
    p90: float
    p99: float
    n: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Distribution:
        return cls(
            mean=mean(values),
            p50=percentile(values, 50),
            p90=percentile(values, 90),
            p99=percentile(values, 99),
            n=len(values),
        )


def median_interval(xs: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """The smallest symmetric order-statistic interval (x_(k), x_(n+1-k)) covering the median with at least
    ``confidence`` (binomial, distribution-free, exact for few values); with too few values for that, the
    whole range and the coverage it does have."""
    s = sorted(xs)
    n = len(s)
    best_k, coverage = 1, 1 - 2 * 0.5**n  # (min, max)
    for k in range(1, n // 2 + 1):
        cover = 1 - 2 * sum(math.comb(n, i) for i in range(k)) * 0.5**n
        if cover >= confidence:
            best_k, coverage = k, cover
    return s[best_k - 1], s[n - best_k], coverage
