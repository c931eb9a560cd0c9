"""Serving metrics with `vllm bench serve`'s definitions, so numbers compare with what people know.

TTFT = first streamed token - request sent; TPOT = (E2EL - TTFT) / (output tokens - 1), only for
requests with more than one output token; ITL = every gap between streamed content chunks, pooled over
requests; E2EL = request sent -> last chunk. Output tok/s = total output tokens / benchmark duration;
request throughput = completed requests / duration. Times are stored in milliseconds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from ..results import TEXT_UNIT, LoadPoint, Run
from ..stats import Distribution, percentile

PERCENTILES = (50, 90, 99)


@dataclass(frozen=True, kw_only=True)
class RequestRecord:
    """One request as the load generator saw it (seconds on the monotonic clock)."""

    sent: float
    chunk_times: tuple[float, ...] = ()  # arrival of every chunk that carried output text
    end: float = 0.0
    output_tokens: int = 0  # from the server's usage
    prompt_tokens: int = 0
    chunk_count: int = 0  # content chunks seen: a cross-check of output_tokens
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error and bool(self.chunk_times)


@dataclass(frozen=True, kw_only=True)
class Slo:
    """Service-level targets for goodput (vllm bench serve's --goodput); None: no target."""

    ttft_ms: float | None = None
    tpot_ms: float | None = None
    e2el_ms: float | None = None

    @property
    def any(self) -> bool:
        return any(v is not None for v in (self.ttft_ms, self.tpot_ms, self.e2el_ms))

    def met(self, r: RequestRecord) -> bool:
        ttft = (r.chunk_times[0] - r.sent) * 1000
        e2el = (r.end - r.sent) * 1000
        tpot = (e2el - ttft) / (r.output_tokens - 1) if r.output_tokens > 1 else 0.0
        return all(
            limit is None or value <= limit
            for value, limit in ((ttft, self.ttft_ms), (tpot, self.tpot_ms), (e2el, self.e2el_ms))
        )


@dataclass(frozen=True, kw_only=True)
class ClientLimits:
    """When the load generator, not the server, is the bottleneck."""

    cpu_util: float = 0.9  # client CPU seconds / wall seconds (one core)
    loop_lag_p99_ms: float = 50.0  # event-loop scheduling delay


def point_label(mode: str, target: float) -> str:
    if mode == "concurrency":
        return f"c={target:g}"
    return "rate=max" if math.isinf(target) else f"rate={target:.3g}/s"


def aggregate(runs: Sequence[Run], *, mode: str = "concurrency", target: float = 1) -> LoadPoint:
    """A text load point over its repeats (output tok/s)."""
    return LoadPoint.of(label=point_label(mode, target), mode=mode, target=target, unit=TEXT_UNIT, runs=runs)


def _client_limit(util: float, p99: float, limits: ClientLimits) -> str:
    reasons = []
    if util >= limits.cpu_util:
        reasons.append(f"client CPU {util:.0%} of one core (limit {limits.cpu_util:.0%})")
    if p99 >= limits.loop_lag_p99_ms:
        reasons.append(f"event-loop lag p99 {p99:.0f} ms (limit {limits.loop_lag_p99_ms:g} ms)")
    return "; ".join(reasons)


def client_limit(runs: Sequence[Run], lags_ms: Sequence[float], limits: ClientLimits | None = None) -> str:
    """Why the client, not the server, was the limit over ``runs`` taken together ("" when it was not): their
    client CPU time over their wall time, and the p99 of ``lags_ms``, every loop-lag sample of those runs. For a
    point measured in many short waves (paired rounds): one wave's p99 is nearly its largest sample, so a single
    stall of the client (measured: 688 ms once in twenty one-second waves) would flag the whole point."""
    duration = sum(r.duration_s for r in runs)
    util = sum(r.client_cpu_s for r in runs) / duration if duration > 0 else 0.0
    return _client_limit(util, percentile(lags_ms, 99) if lags_ms else 0.0, limits or ClientLimits())


def summarize(
    records: Sequence[RequestRecord],
    duration_s: float,
    *,
    mode: str = "concurrency",
    target: float = 1,
    client_cpu_s: float = 0.0,
    loop_lags_ms: Sequence[float] = (),
    slo: Slo | None = None,
    limits: ClientLimits | None = None,
) -> Run:
    """One run of one load point, with vllm bench serve's definitions; rate = output tok/s."""
    ok = [r for r in records if r.ok]
    ttft = [(r.chunk_times[0] - r.sent) * 1000 for r in ok]
    e2el = [(r.end - r.sent) * 1000 for r in ok]
    tpot = [
        ((r.end - r.sent) - (r.chunk_times[0] - r.sent)) * 1000 / (r.output_tokens - 1)
        for r in ok
        if r.output_tokens > 1
    ]
    itl = [(b - a) * 1000 for r in ok for a, b in zip(r.chunk_times, r.chunk_times[1:], strict=False)]
    total_out = sum(r.output_tokens for r in ok)
    util = client_cpu_s / duration_s if duration_s > 0 else 0.0
    lag = Distribution.of(loop_lags_ms) if loop_lags_ms else None
    why = _client_limit(util, lag.p99 if lag else 0.0, limits or ClientLimits())
    good = None
    if slo is not None and slo.any and duration_s > 0:
        good = sum(1 for r in ok if slo.met(r)) / duration_s
    distributions = {
        "ttft_ms": Distribution.of(ttft),
        "tpot_ms": Distribution.of(tpot),
        "itl_ms": Distribution.of(itl),
        "e2el_ms": Distribution.of(e2el),
    }
    # Per request, in order: what a verdict resamples (bootstrap over requests). tok_s: output tokens over
    # the request's own time, the per-request share of the point's throughput.
    samples = {
        "ttft_ms": tuple(ttft),
        "tpot_ms": tuple(tpot),
        "e2el_ms": tuple(e2el),
        "tok_s": tuple(r.output_tokens / (r.end - r.sent) for r in ok if r.end > r.sent),
    }
    if lag is not None:
        distributions["loop_lag_ms"] = lag
    return Run(
        rate=total_out / duration_s if duration_s > 0 else math.nan,
        requests=len(records),
        completed=len(ok),
        failed=len(records) - len(ok),
        duration_s=duration_s,
        request_s=len(ok) / duration_s if duration_s > 0 else math.nan,
        distributions=distributions,
        samples=samples,
        output_tokens=total_out,
        goodput_req_s=good,
        token_count_mismatches=sum(1 for r in ok if r.chunk_count != r.output_tokens),
        client_cpu_s=client_cpu_s,
        client_cpu_util=util,
        saturated=bool(why),
        saturation_reason=why,
        errors=tuple(sorted({r.error for r in records if r.error}))[:5],
    )
