from __future__ import annotations

import asyncio
import json
import math
import time

import httpx
import pytest

from harness.load.metrics import ClientLimits, Slo
from harness.load.text import Load, Options, arrival_gaps, make_prompts, run_points, run_sweep
from harness.stats import ci95_positive


def _sse(*payloads: object) -> bytes:
    return b"".join(f"data: {p if isinstance(p, str) else json.dumps(p)}\n\n".encode() for p in payloads)


def _stream_handler(seen: list[dict] | None = None, block_s: float = 0.0):
    def handler(request: httpx.Request) -> httpx.Response:
        if block_s:
            time.sleep(block_s)  # a blocking callback: starves the client's event loop
        body = json.loads(request.content)
        if seen is not None:
            seen.append(body)
        n = body["max_tokens"]
        chunks = [{"choices": [{"index": 0, "text": f" t{i}"}]} for i in range(n)]
        usage = {"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": n, "total_tokens": 5 + n}}
        return httpx.Response(
            200, content=_sse(*chunks, usage, "[DONE]"), headers={"content-type": "text/event-stream"}
        )

    return handler


def _slow_server(delay_s: float):
    """An async handler: the 'server' takes its time without blocking the loop, as a real one does."""
    inner = _stream_handler()

    async def handler(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(delay_s)
        return inner(request)

    return handler


def test_prompts_are_seeded() -> None:
    assert make_prompts(3, 26, seed=1) == make_prompts(3, 26, seed=1)
    assert make_prompts(3, 26, seed=1) != make_prompts(3, 26, seed=2)
    assert len(make_prompts(3, 26, seed=1)[0].split()) == 20


def test_gamma_gaps_match_the_rate_and_are_seeded() -> None:
    gaps = arrival_gaps(4000, rate=4.0, burstiness=1.0, seed=3)
    assert gaps == arrival_gaps(4000, rate=4.0, burstiness=1.0, seed=3)
    assert sum(gaps) / len(gaps) == pytest.approx(0.25, rel=0.05)  # mean gap = 1 / rate
    bursty = arrival_gaps(4000, rate=4.0, burstiness=0.25, seed=3)
    assert sum(bursty) / len(bursty) == pytest.approx(0.25, rel=0.1)
    # lower burstiness = more variance at the same mean (gamma: var = mean^2 / shape)
    var = lambda xs: sum((x - 0.25) ** 2 for x in xs) / len(xs)  # noqa: E731
    assert var(bursty) > 2.5 * var(gaps)
    assert arrival_gaps(3, rate=math.inf, burstiness=1.0, seed=0) == [0.0, 0.0, 0.0]


def test_concurrency_points_count_tokens_from_usage() -> None:
    seen: list[dict] = []
    points = run_points(
        "http://test",
        "m",
        ["a", "b", "c"],
        [Load(mode="concurrency", target=1), Load(mode="concurrency", target=2)],
        Options(max_tokens=4, extra={"ignore_eos": True}, warmup_requests=1),
        transport=httpx.MockTransport(_stream_handler(seen)),
    )
    assert [p.label for p in points] == ["c=1", "c=2"]
    for p in points:
        r = p.run
        assert (r.requests, r.completed, r.failed, r.output_tokens) == (3, 3, 0, 12)
        assert r.token_count_mismatches == 0 and r.distributions["itl_ms"].n == 9 and r.distributions["ttft_ms"].n == 3
        assert p.unit == "output tok/s" and p.median == r.rate
    assert len(seen) == 2 * (1 + 3)  # one warm-up request per point, not measured
    assert seen[0]["stream_options"] == {"include_usage": True}
    assert seen[0]["ignore_eos"] is True and seen[0]["temperature"] == 0.0


def test_repeats_store_every_run_median_and_ci() -> None:
    points = run_points(
        "http://test",
        "m",
        ["a", "b"],
        [Load(mode="concurrency", target=2)],
        Options(max_tokens=2),
        repeats=3,
        transport=httpx.MockTransport(_stream_handler()),
    )
    (p,) = points
    rates = [r.rate for r in p.runs]
    assert len(rates) == 3 and p.median == sorted(rates)[1] and p.run.rate == p.median
    assert p.ci95 == ci95_positive(rates)  # the one aggregation, over exactly these runs
    assert p.ci95 is not None and p.ci95[0] < sum(rates) / 3 < p.ci95[1]


def test_rate_point_and_duration_stop() -> None:
    t0 = time.monotonic()
    (p,) = run_points(
        "http://test",
        "m",
        ["x"] * 50,
        [Load(mode="rate", target=20.0, max_duration_s=0.5)],
        Options(max_tokens=1),
        transport=httpx.MockTransport(_stream_handler()),
    )
    assert time.monotonic() - t0 < 2.0
    assert 3 <= p.run.requests < 50  # stopped by duration, not by count
    assert p.label == "rate=20/s"


def test_sweep_goes_sync_max_then_rates_between() -> None:
    # Each request takes 50 ms without blocking the loop: one at a time is ~20 req/s, all at once ~4x that.
    points = run_sweep(
        "http://test",
        "m",
        ["a", "b", "c", "d"],
        Options(max_tokens=2),
        points=2,
        transport=httpx.MockTransport(_slow_server(0.05)),
    )
    assert [p.label for p in points][:2] == ["c=1", "rate=max"] and len(points) == 4
    lo, hi = points[0].run.request_s, points[1].run.request_s
    assert points[1].target is None and hi > 2 * lo
    targets = [p.target for p in points[2:]]
    assert targets == pytest.approx([lo + (hi - lo) / 3, lo + 2 * (hi - lo) / 3])  # evenly between


def test_saturation_flag_trips_when_the_client_is_starved() -> None:
    # The mock transport runs in the event loop's thread: a blocking sleep there stalls the loop,
    # exactly what a CPU-bound client does.
    # Limits wide enough that a busy machine (a build next door) does not trip the healthy case.
    limits = ClientLimits(cpu_util=0.9, loop_lag_p99_ms=150)
    starved = run_points(
        "http://test",
        "m",
        ["a"] * 4,
        [Load(mode="concurrency", target=4)],
        Options(max_tokens=2, limits=limits),
        transport=httpx.MockTransport(_stream_handler(block_s=0.4)),
    )
    assert starved[0].saturated is True
    assert "event-loop lag p99" in starved[0].saturation_reason
    # A server that takes its time leaves the client idle: not flagged.
    healthy = run_points(
        "http://test",
        "m",
        ["a"] * 4,
        [Load(mode="concurrency", target=4)],
        Options(max_tokens=2, limits=limits),
        transport=httpx.MockTransport(_slow_server(0.2)),
    )
    assert healthy[0].saturated is False, healthy[0].saturation_reason


def test_goodput_counts_requests_meeting_every_slo() -> None:
    opts = Options(max_tokens=2, slo=Slo(ttft_ms=10_000, e2el_ms=10_000))
    (ok,) = run_points(
        "http://test",
        "m",
        ["a", "b"],
        [Load(mode="concurrency", target=1)],
        opts,
        transport=httpx.MockTransport(_stream_handler()),
    )
    assert ok.run.goodput_req_s == pytest.approx(ok.run.request_s)
    strict = Options(max_tokens=2, slo=Slo(ttft_ms=0.0))
    (none,) = run_points(
        "http://test",
        "m",
        ["a", "b"],
        [Load(mode="concurrency", target=1)],
        strict,
        transport=httpx.MockTransport(_stream_handler(block_s=0.01)),
    )
    assert none.run.goodput_req_s == 0.0
    (no_slo,) = run_points(
        "http://test",
        "m",
        ["a"],
        [Load(mode="concurrency", target=1)],
        Options(max_tokens=2),
        transport=httpx.MockTransport(_stream_handler()),
    )
    assert no_slo.run.goodput_req_s is None


def test_errors_and_missing_usage_are_failures() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if json.loads(request.content)["prompt"] == "bad":
            return httpx.Response(500, text="engine died")
        return httpx.Response(200, content=_sse({"choices": [{"text": "x"}]}, "[DONE]"))

    (p,) = run_points(
        "http://test",
        "m",
        ["bad", "ok"],
        [Load(mode="concurrency", target=1)],
        Options(max_tokens=1),
        transport=httpx.MockTransport(handler),
    )
    assert (p.run.completed, p.run.failed) == (0, 2)
    assert p.run.errors == ("HTTP 500: engine died", "no usage in the stream")


def test_mismatch_between_chunks_and_usage_is_reported() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        usage = {"choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 3, "total_tokens": 4}}
        return httpx.Response(200, content=_sse({"choices": [{"text": "x"}]}, usage, "[DONE]"))

    (p,) = run_points(
        "http://test",
        "m",
        ["p"],
        [Load(mode="concurrency", target=1)],
        Options(max_tokens=3),
        transport=httpx.MockTransport(handler),
    )
    assert p.run.token_count_mismatches == 1


def test_fresh_prompts_per_point_and_repeat_and_prefixed_warmups() -> None:
    seen: list[dict] = []
    run_points(
        "http://test",
        "m",
        lambda point, rep: [f"p{point}-r{rep}"],
        [Load(mode="concurrency", target=1)] * 2,
        Options(max_tokens=1, warmup_requests=1),
        repeats=2,
        transport=httpx.MockTransport(_stream_handler(seen)),
    )
    assert [b["prompt"] for b in seen] == [
        "(warm-up) p0-r0",
        "p0-r0",
        "(warm-up) p0-r1",
        "p0-r1",
        "(warm-up) p1-r0",
        "p1-r0",
        "(warm-up) p1-r1",
        "p1-r1",
    ]


def test_empty_text_chunks_are_not_tokens() -> None:
    # llama.cpp's last content chunk carries only finish_reason, with empty text.
    def handler(request: httpx.Request) -> httpx.Response:
        chunks = [
            {"choices": [{"index": 0, "text": " a"}]},
            {"choices": [{"index": 0, "text": " b"}]},
            {"choices": [{"index": 0, "text": "", "finish_reason": "length"}]},
            {"choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}},
        ]
        return httpx.Response(200, content=_sse(*chunks, "[DONE]"))

    (p,) = run_points(
        "http://test",
        "m",
        ["p"],
        [Load(mode="concurrency", target=1)],
        Options(max_tokens=2),
        transport=httpx.MockTransport(handler),
    )
    assert (p.run.output_tokens, p.run.token_count_mismatches, p.run.distributions["itl_ms"].n) == (2, 0, 1)


def _jittery_server(seed: int, spread: float):
    """Each request takes 20 ms x a seeded factor in [1 - spread, 1 + spread]: a server's jitter."""
    import random

    rng = random.Random(seed)
    inner = _stream_handler()

    async def handler(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(0.02 * rng.uniform(1 - spread, 1 + spread))
        return inner(request)

    return handler


def test_a_point_sized_for_precision_adds_repeats_until_reached_or_capped() -> None:
    from harness.stats import relative_halfwidth

    def point(spread: float, precision: float, cap: float):
        (p,) = run_points(
            "http://test",
            "m",
            ["a"] * 6,
            [Load(mode="concurrency", target=1)],
            Options(max_tokens=2),
            transport=httpx.MockTransport(_jittery_server(1, spread)),
            precision=precision,
            max_point_s=cap,
        )
        return p, relative_halfwidth([x for r in p.runs for x in r.samples["tok_s"]])

    jittery, reached = point(0.5, 0.05, 30.0)
    assert len(jittery.runs) > 1 and reached is not None and reached <= 0.05  # more runs bought the precision asked
    capped, reached = point(0.5, 0.001, 0.5)
    assert reached is not None and reached > 0.001 and 1 < len(capped.runs) < 20  # the cap stops it short
    fixed, _ = point(0.5, 0.0, 30.0)
    assert len(fixed.runs) == 1  # no target: the fixed repeats only
