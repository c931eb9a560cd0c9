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
class LevelSummary:
    concurrency: int
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
    token_count_mismatches: int = 0
    client_cpu_s: float = 0.0
    errors: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {}
        for key, value in self.__dict__.items():
            out[key] = value.to_dict() if isinstance(value, Distribution) else value
        out["errors"] = list(self.errors)
        out["units"] = {"duration_s": "s", "output_tok_s": "tokens/s", "request_s": "requests/s", "*_ms": "ms"}
        return out


def summarize(concurrency: int, records: Sequence[RequestRecord], duration_s: float, client_cpu_s: float = 0.0) -> LevelSummary:
    ok = [r for r in records if r.ok]
    ttft = [(r.chunk_times[0] - r.sent) * 1000 for r in ok]
    e2el = [(r.end - r.sent) * 1000 for r in ok]
    tpot = [((r.end - r.sent) - (r.chunk_times[0] - r.sent)) * 1000 / (r.output_tokens - 1) for r in ok if r.output_tokens > 1]
    itl = [(b - a) * 1000 for r in ok for a, b in zip(r.chunk_times, r.chunk_times[1:], strict=False)]
    total_out = sum(r.output_tokens for r in ok)
    return LevelSummary(
        concurrency=concurrency,
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
        token_count_mismatches=sum(1 for r in ok if r.chunk_count != r.output_tokens),
        client_cpu_s=client_cpu_s,
        errors=tuple(sorted({r.error for r in records if r.error}))[:5],
    )
