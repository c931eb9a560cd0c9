"""The benchmarks' method: interleaved rounds, warm-up dropped, median of ratios with an exact interval,
and the spread named when it is wider than the effect (the numbers of issue 14's AVX2 run)."""

from __future__ import annotations

import math

import pytest

from benchmarks.rounds import median_interval, order, paired, run_rounds


def test_the_issues_client_capacity_rounds_are_not_a_measured_difference() -> None:
    # ours 111k/172k/176k, theirs 123k/87k/81k chunks/s: best-of-3 said 1.43x; per round 0.90, 1.98, 2.17
    s = paired([111e3, 172e3, 176e3], [123e3, 87e3, 81e3])
    assert s.dropped == 0  # too few rounds to spend one on warm-up
    assert s.median == pytest.approx(172 / 87)
    assert (s.low, s.high) == (pytest.approx(111 / 123), pytest.approx(176 / 81)) and s.coverage == 0.75
    assert s.verdict.startswith("no measured difference")  # best-of-3 called it 1.43x
    assert paired([100.0, 104.0, 97.0, 103.0], [100.0] * 4, warmup=0).verdict.startswith(
        "no measured difference: the rounds spread"
    )


def test_a_steady_difference_is_measured_and_the_cold_round_dropped() -> None:
    ours = [50.0] + [110.0, 111.0, 109.0, 110.5, 110.0, 109.5]
    theirs = [100.0] * 7
    s = paired(ours, theirs)
    assert s.dropped == 1 and len(s.ratios) == 6 and s.coverage >= 0.95
    assert s.median == pytest.approx(1.10) and s.verdict == "higher by 10.0% (the interval excludes 1)"


def test_inside_the_margin_is_said_so() -> None:
    s = paired([101.0, 101.2, 101.1, 101.3, 101.0, 101.2], [100.0] * 6, warmup=0, margin=0.03)
    assert s.verdict == "a difference, inside the 3% margin"


def test_median_interval_coverage_is_exact() -> None:
    low, high, cover = median_interval(list(range(1, 11)))  # n=10: (x2, x9) covers 97.9%
    assert (low, high) == (2, 9) and cover == pytest.approx(1 - 2 * (1 + 10) / 1024)
    assert median_interval([1.0, 2.0])[2] == pytest.approx(0.5)
    assert math.isclose(median_interval([3.0, 1.0, 2.0, 5.0, 4.0, 6.0])[2], 1 - 2 / 64)


def test_rounds_alternate_who_goes_first() -> None:
    calls: list[str] = []
    ours, theirs = run_rounds(
        4, [lambda: calls.append("a") or 1.0, lambda: calls.append("b") or 2.0], say=lambda _: None
    )
    assert calls == ["a", "b", "b", "a", "a", "b", "b", "a"] and ours == [1.0] * 4 and theirs == [2.0] * 4
    assert [order(r) for r in range(2)] == [(0, 1), (1, 0)]


def test_unpaired_rounds_are_refused() -> None:
    with pytest.raises(ValueError, match="same, non-zero number"):
        paired([1.0, 2.0], [1.0])
