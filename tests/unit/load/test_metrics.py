from __future__ import annotations

import math

import pytest

from harness.load.metrics import ClientLimits, RequestRecord, Slo, aggregate, client_limit, summarize
from harness.serial import dump
from harness.stats import percentile


def test_percentile_interpolates_like_numpy() -> None:
    values = [10.0, 20.0, 30.0, 40.0]
    assert percentile(values, 50) == 25.0
    assert percentile(values, 90) == pytest.approx(37.0)
    assert percentile(values, 99) == pytest.approx(39.7)
    assert percentile([5.0], 99) == 5.0
    assert math.isnan(percentile([], 50))


def test_summary_matches_hand_computed_definitions() -> None:
    # Request A: sent 0, chunks at 0.1, 0.3, 0.6 (3 tokens), ends 0.6.
    # Request B: sent 0.2, chunks at 0.5, 0.7 (2 tokens), ends 0.8.
    a = RequestRecord(sent=0.0, chunk_times=(0.1, 0.3, 0.6), end=0.6, output_tokens=3, chunk_count=3)
    b = RequestRecord(sent=0.2, chunk_times=(0.5, 0.7), end=0.8, output_tokens=2, chunk_count=2)
    failed = RequestRecord(sent=0.1, end=0.2, error="HTTP 500: boom")
    s = summarize([a, b, failed], 1.0, mode="concurrency", target=2, client_cpu_s=0.05)
    assert (s.requests, s.completed, s.failed) == (3, 2, 1)
    assert s.output_tokens == 5
    assert s.rate == 5.0  # output tok/s
    assert s.request_s == 2.0
    # TTFT: A 100 ms, B 300 ms
    assert s.distributions["ttft_ms"].p50 == pytest.approx(200.0)
    assert s.distributions["ttft_ms"].mean == pytest.approx(200.0)
    # TPOT: A (600-100)/(3-1) = 250 ms; B (600-300)/(2-1) = 300 ms
    assert s.distributions["tpot_ms"].mean == pytest.approx(275.0)
    # ITL pooled: A 200, 300; B 200
    assert s.distributions["itl_ms"].n == 3
    assert s.distributions["itl_ms"].p50 == pytest.approx(200.0)
    # E2EL: A 600, B 600
    assert s.distributions["e2el_ms"].p99 == pytest.approx(600.0)
    assert s.errors == ("HTTP 500: boom",)
    assert s.token_count_mismatches == 0


def test_tpot_skips_single_token_requests_and_counts_mismatches() -> None:
    one = RequestRecord(sent=0.0, chunk_times=(0.1,), end=0.1, output_tokens=1, chunk_count=1)
    off = RequestRecord(sent=0.0, chunk_times=(0.1, 0.2), end=0.2, output_tokens=3, chunk_count=2)
    s = summarize([one, off], 0.2)
    assert s.distributions["tpot_ms"].n == 1
    assert s.token_count_mismatches == 1


def test_distribution_to_dict_turns_nan_into_none() -> None:
    s = summarize([RequestRecord(sent=0, error="x")], 1.0)
    assert dump(s)["distributions"]["ttft_ms"] == {"mean": None, "p50": None, "p90": None, "p99": None, "n": 0}


def test_goodput_and_saturation_from_hand_computed_timelines() -> None:
    # A: TTFT 100 ms, TPOT 250 ms, E2EL 600 ms. B: TTFT 300 ms, TPOT 300 ms, E2EL 600 ms.
    a = RequestRecord(sent=0.0, chunk_times=(0.1, 0.3, 0.6), end=0.6, output_tokens=3, chunk_count=3)
    b = RequestRecord(sent=0.2, chunk_times=(0.5, 0.7), end=0.8, output_tokens=2, chunk_count=2)
    assert summarize([a, b], 2.0, slo=Slo(ttft_ms=200)).goodput_req_s == 0.5  # only A: 1 request / 2 s
    assert summarize([a, b], 2.0, slo=Slo(tpot_ms=260, e2el_ms=600)).goodput_req_s == 0.5
    assert (
        summarize([a, b], 2.0, slo=Slo(ttft_ms=301, tpot_ms=301)).goodput_req_s == 1.0
    )  # 300 ms is 300.00000000000006 in floats
    busy = summarize([a, b], 1.0, client_cpu_s=0.95, limits=ClientLimits(cpu_util=0.9))
    assert busy.saturated and busy.saturation_reason == "client CPU 95% of one core (limit 90%)"
    laggy = summarize([a, b], 1.0, loop_lags_ms=[1.0] * 98 + [80.0, 90.0])
    assert laggy.saturated and laggy.saturation_reason.startswith("event-loop lag p99 ")
    assert not summarize([a, b], 1.0, client_cpu_s=0.1, loop_lags_ms=[1.0, 2.0]).saturated


def test_aggregate_repeats() -> None:
    reps = [
        summarize([RequestRecord(sent=0, chunk_times=(0.1,), end=d, output_tokens=10, chunk_count=10)], d)
        for d in (1.0, 2.0, 4.0)
    ]  # 10, 5, 2.5 tok/s
    point = aggregate(reps, mode="concurrency", target=4)
    assert [r.rate for r in point.runs] == [10.0, 5.0, 2.5]
    assert (point.label, point.unit, point.median, point.run.rate) == ("c=4", "output tok/s", 5.0, 5.0)
    # on log scale: logs 2.3026, 1.6094, 0.9163: mean 1.6094 (geometric mean 5.0), sd 0.6931, t(2) = 4.303:
    # half-width 1.7221 -> [5.0 / e^1.7221, 5.0 * e^1.7221] = [0.894, 27.98]: positive however wide (a t-interval
    # on the raw values reads [-3.65, 15.32])
    assert point.ci95 is not None
    lo, hi = point.ci95
    assert lo == pytest.approx(0.8935, abs=1e-3) and hi == pytest.approx(27.979, abs=1e-2)
    assert aggregate(reps[:1]).ci95 is None


def test_waves_are_judged_client_bound_over_all_their_samples_not_one_wave() -> None:
    """A real CI run: one of twenty one-second waves had a single 688 ms stall of the client's loop (its p99 over
    28 samples is that stall), and the whole paired point lost its verdicts as "client-bound". Over the point's
    waves together one stall is not the client being the limit; lag in every wave is."""
    a = RequestRecord(sent=0.0, chunk_times=(0.1, 0.3, 0.6), end=0.6, output_tokens=3, chunk_count=3)
    waves = [summarize([a], 1.2, client_cpu_s=0.03, loop_lags_ms=[0.2] * 118) for _ in range(9)]
    stalled = summarize([a], 1.2, client_cpu_s=0.03, loop_lags_ms=[0.2] * 27 + [688.0])
    assert stalled.saturated and not any(w.saturated for w in waves)  # one wave alone: flagged
    lags = [0.2] * (118 * 9 + 27) + [688.0]
    assert client_limit([*waves, stalled], lags) == ""
    assert client_limit(waves, [60.0] * 20 + [0.2] * 980).startswith("event-loop lag p99 60 ms")
    busy = [summarize([a], 1.0, client_cpu_s=0.95) for _ in range(3)]
    assert client_limit(busy, [], ClientLimits(cpu_util=0.9)) == "client CPU 95% of one core (limit 90%)"
