"""Serving metrics with `vllm bench serve`'s definitions, so numbers compare with what people know.

TTFT = first streamed token - request sent; TPOT = (E2EL - TTFT) / (output tokens - 1), only for
requests with more than one output token; ITL = every gap between streamed content chunks, pooled over
requests; E2EL = request sent -> last chunk. Output tok/s = total output tokens / benchmark duration;
request throughput = completed requests / duration. Times are stored in milliseconds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

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


@dataclass(frozen=True, kw_only=True)
class Distribution:
    mean: float
    p50: float
    p90: float
    p99: float
    n: int

    @classmethod
    def of(cls, values_ms: Sequence[float]) -> Distribution:
        return cls(
            mean=mean(values_ms),
            p50=percentile(values_ms, 50),
            p90=percentile(values_ms, 90),
            p99=percentile(values_ms, 99),
            n=len(values_ms),
        )

    def to_dict(self) -> dict[str, float | int | None]:
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in self.__dict__.items()}


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
        return all(limit is None or value <= limit
                   for value, limit in ((ttft, self.ttft_ms), (tpot, self.tpot_ms), (e2el, self.e2el_ms)))  # fmt: skip


@dataclass(frozen=True, kw_only=True)
class ClientLimits:
    """When the load generator, not the server, is the bottleneck."""

    cpu_util: float = 0.9  # client CPU seconds / wall seconds (one core)
    loop_lag_p99_ms: float = 50.0  # event-loop scheduling delay


@dataclass(frozen=True, kw_only=True)
class LevelSummary:
    mode: str  # "concurrency" or "rate"
    target: float  # concurrency, or requests/s (inf: all at once)
    requests: int
    completed: int
    failed: int
    duration_s: float
    output_tokens: int
    output_tok_s: float
    request_s: float
    ttft_ms: Distribution
    tpot_ms: Distribution
    itl_ms: Distribution
    e2el_ms: Distribution
    goodput_req_s: float | None = None  # requests meeting every SLO target / duration
    token_count_mismatches: int = 0
    client_cpu_s: float = 0.0
    client_cpu_util: float = 0.0
    loop_lag_ms: Distribution | None = None
    saturated: bool = False
    saturation_reason: str = ""
    errors: tuple[str, ...] = field(default_factory=tuple)

    @property
    def label(self) -> str:
        if self.mode == "concurrency":
            return f"c={self.target:g}"
        return "rate=max" if math.isinf(self.target) else f"rate={self.target:.3g}/s"

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {"label": self.label}
        for key, value in self.__dict__.items():
            out[key] = value.to_dict() if isinstance(value, Distribution) else value
        out["target"] = None if math.isinf(self.target) else self.target  # JSON has no infinity; None = max
        out["errors"] = list(self.errors)
        out["units"] = {"duration_s": "s", "output_tok_s": "tokens/s", "request_s": "requests/s", "goodput_req_s": "requests/s",
                        "*_ms": "ms"}  # fmt: skip
        return out


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
) -> LevelSummary:
    ok = [r for r in records if r.ok]
    ttft = [(r.chunk_times[0] - r.sent) * 1000 for r in ok]
    e2el = [(r.end - r.sent) * 1000 for r in ok]
    tpot = [((r.end - r.sent) - (r.chunk_times[0] - r.sent)) * 1000 / (r.output_tokens - 1) for r in ok if r.output_tokens > 1]
    itl = [(b - a) * 1000 for r in ok for a, b in zip(r.chunk_times, r.chunk_times[1:], strict=False)]
    total_out = sum(r.output_tokens for r in ok)
    util = client_cpu_s / duration_s if duration_s > 0 else 0.0
    lag = Distribution.of(loop_lags_ms) if loop_lags_ms else None
    limits = limits or ClientLimits()
    reasons = []
    if util >= limits.cpu_util:
        reasons.append(f"client CPU {util:.0%} of one core (limit {limits.cpu_util:.0%})")
    if lag is not None and lag.p99 >= limits.loop_lag_p99_ms:
        reasons.append(f"event-loop lag p99 {lag.p99:.0f} ms (limit {limits.loop_lag_p99_ms:g} ms)")
    good = None
    if slo is not None and slo.any and duration_s > 0:
        good = sum(1 for r in ok if slo.met(r)) / duration_s
    return LevelSummary(
        mode=mode,
        target=target,
        requests=len(records),
        completed=len(ok),
        failed=len(records) - len(ok),
        duration_s=duration_s,
        output_tokens=total_out,
        output_tok_s=total_out / duration_s if duration_s > 0 else math.nan,
        request_s=len(ok) / duration_s if duration_s > 0 else math.nan,
        ttft_ms=Distribution.of(ttft),
        tpot_ms=Distribution.of(tpot),
        itl_ms=Distribution.of(itl),
        e2el_ms=Distribution.of(e2el),
        goodput_req_s=good,
        token_count_mismatches=sum(1 for r in ok if r.chunk_count != r.output_tokens),
        client_cpu_s=client_cpu_s,
        client_cpu_util=util,
        loop_lag_ms=lag,
        saturated=bool(reasons),
        saturation_reason="; ".join(reasons),
        errors=tuple(sorted({r.error for r in records if r.error}))[:5],
    )


def t_critical_95(df: int) -> float:
    """Two-sided 95% Student t critical values (df 1..30; normal beyond)."""
    table = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
             2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)  # fmt: skip
    return table[df - 1] if 1 <= df <= len(table) else 1.96


def aggregate(repeats: Sequence[LevelSummary]) -> dict[str, object]:
    """One load point over its repeats: the median repeat's figures, every repeat, and the spread of
    output tok/s (median, min, max, and a t-based 95% CI of the mean when there are 2+ repeats)."""
    values = [r.output_tok_s for r in repeats]
    order = sorted(range(len(repeats)), key=lambda i: values[i])
    median_rep = repeats[order[(len(order) - 1) // 2]]
    point = median_rep.to_dict()
    point["repeats"] = [r.to_dict() for r in repeats]
    point["output_tok_s_all"] = values
    point["output_tok_s_median"] = percentile(values, 50)
    ci: list[float] | None = None
    if len(values) >= 2:
        m = mean(values)
        sd = math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1))
        half = t_critical_95(len(values) - 1) * sd / math.sqrt(len(values))
        ci = [m - half, m + half]
    point["output_tok_s_ci95"] = ci
    point["saturated"] = any(r.saturated for r in repeats)
    point["saturation_reason"] = "; ".join(sorted({r.saturation_reason for r in repeats if r.saturation_reason}))
    return point
