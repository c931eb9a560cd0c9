"""Sending load: an httpx async streaming client for OpenAI ``/v1/completions``.

The transport is passed in (tests hand it an ``httpx.MockTransport``). Requests stream with
``stream_options.include_usage`` so output token counts come from the server, and every chunk's arrival
time is kept for TTFT/ITL.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from ..results import LoadPoint, Run
from ..stats import relative_halfwidth
from .metrics import ClientLimits, RequestRecord, Slo, aggregate, summarize

# Seeded prompt vocabulary: plain English words so token counts stay predictable (~1.3 tokens/word).
# One string of prose reads better than a list of 45 literals.
_WORDS = tuple(
    "the model server answers questions about rivers mountains cities history science music art food "  # noqa: SIM905
    "weather travel books language numbers time light water energy stars planets animals plants trees "
    "people work school market bridge garden window story simple careful quick quiet bright ancient".split()
)


def make_prompts(n: int, input_tokens: int, seed: int) -> list[str]:
    """``n`` reproducible prompts of roughly ``input_tokens`` tokens each."""
    rng = random.Random(seed)
    words = max(1, int(input_tokens / 1.3))
    return [" ".join(rng.choice(_WORDS) for _ in range(words)) for _ in range(n)]


_USAGE, _USAGE_SPACED = b'"usage":{', b'"usage": {'
_NO_CHOICES, _NO_CHOICES_SPACED = b'"choices":[]', b'"choices": []'
_EMPTY_TEXT, _EMPTY_TEXT_SPACED = b'"text":""', b'"text": ""'


def _empty_text(data: bytes) -> bool:
    """A chunk that carries no text is no token (llama.cpp ends a stream with one holding finish_reason);
    with n=1 there is one "text" per chunk, so the byte match is exact."""
    return _EMPTY_TEXT in data or _EMPTY_TEXT_SPACED in data


async def stream_completion(
    client: httpx.AsyncClient, model: str, prompt: str, max_tokens: int, extra: Mapping[str, Any]
) -> RequestRecord:
    body = {
        "model": model,
        "prompt": prompt,
        "max_tokens": max_tokens,
        "temperature": 0.0,
        "stream": True,
        "stream_options": {"include_usage": True},
        **extra,
    }
    chunk_times: list[float] = []
    usage: dict[str, Any] = {}
    sent = time.monotonic()
    try:
        async with client.stream("POST", "/v1/completions", json=body) as resp:
            if resp.status_code != 200:
                await resp.aread()
                return RequestRecord(
                    sent=sent, end=time.monotonic(), error=f"HTTP {resp.status_code}: {resp.text[:200]}"
                )
            # The hot path of every benchmark: split SSE events from raw bytes ourselves and JSON-parse only
            # the events that can carry usage; a content event only needs its arrival time.
            buf = b""
            done = False
            async for raw in resp.aiter_bytes():
                now = time.monotonic()
                buf += raw.replace(b"\r\n", b"\n") if b"\r" in raw else raw
                *events, buf = buf.split(b"\n\n")
                for event in events:
                    if not event.startswith(b"data:"):
                        continue
                    data = event[5:].strip()
                    if data == b"[DONE]":
                        done = True
                        break
                    if (
                        _USAGE in data or _USAGE_SPACED in data
                    ):  # cannot match inside a JSON string: quotes are escaped there
                        payload = json.loads(data)
                        usage = payload.get("usage") or usage
                        if any(c.get("text") for c in payload.get("choices") or []):
                            chunk_times.append(now)
                    elif _NO_CHOICES not in data and _NO_CHOICES_SPACED not in data and not _empty_text(data):
                        chunk_times.append(now)
                if done:
                    break
    except (httpx.HTTPError, json.JSONDecodeError) as exc:
        return RequestRecord(sent=sent, end=time.monotonic(), error=f"{type(exc).__name__}: {exc}"[:200])
    end = time.monotonic()
    if not usage:
        return RequestRecord(sent=sent, chunk_times=tuple(chunk_times), end=end, error="no usage in the stream")
    return RequestRecord(
        sent=sent,
        chunk_times=tuple(chunk_times),
        end=end,
        output_tokens=int(usage.get("completion_tokens", 0)),
        prompt_tokens=int(usage.get("prompt_tokens", 0)),
        chunk_count=len(chunk_times),
    )


@dataclass(frozen=True, kw_only=True)
class Load:
    """How one load point sends its requests."""

    mode: str  # "concurrency": at most N in flight; "rate": arrivals at N requests/s (inf: all at once)
    target: float
    burstiness: float = 1.0  # gamma shape of inter-arrival gaps; 1.0 = Poisson
    max_duration_s: float = 0.0  # stop sending new requests after this long (0: send them all)


@dataclass(frozen=True, kw_only=True)
class Options:
    max_tokens: int
    extra: Mapping[str, Any] = field(default_factory=dict)
    seed: int = 0
    warmup_requests: int = 0
    slo: Slo | None = None
    limits: ClientLimits | None = None
    timeout_s: float = 300.0
    headers: Mapping[str, str] = field(default_factory=dict)  # e.g. a GPUStack API key (never logged)


LAG_TICK_S = 0.01  # the loop-lag probe asks to sleep this long and records the overshoot


async def _watch_loop_lag(lags_ms: list[float], stop: asyncio.Event) -> None:
    while not stop.is_set():
        t0 = time.monotonic()
        await asyncio.sleep(LAG_TICK_S)
        lags_ms.append(max(0.0, (time.monotonic() - t0 - LAG_TICK_S) * 1000))


def arrival_gaps(n: int, rate: float, burstiness: float, seed: int) -> list[float]:
    """vllm bench serve's arrivals: gamma(shape=burstiness, scale=1/(rate*burstiness)) gaps; inf rate: none."""
    if math.isinf(rate):
        return [0.0] * n
    rng = random.Random(seed)
    theta = 1.0 / (rate * burstiness)
    return [rng.gammavariate(burstiness, theta) for _ in range(n)]


async def run_load(
    client: httpx.AsyncClient,
    model: str,
    prompts: Sequence[str],
    load: Load,
    opts: Options,
    *,
    lags_ms: list[float] | None = None,
) -> Run:
    """Send ``prompts`` under ``load``; duration = first send -> last end. Client CPU time and event-loop
    lag are recorded over the same window so a client-bound point can be flagged; ``lags_ms`` also gets the
    lag samples (to judge many short waves together: metrics.client_limit)."""
    for prompt in prompts[: opts.warmup_requests]:  # warm-up: not measured, and prefixed so that no
        await stream_completion(
            client, model, f"(warm-up) {prompt}", opts.max_tokens, opts.extra
        )  # measured prompt is cached
    lags: list[float] = []
    stop = asyncio.Event()
    watcher = asyncio.create_task(_watch_loop_lag(lags, stop))
    sem = asyncio.Semaphore(int(load.target)) if load.mode == "concurrency" else None
    cpu0, start = time.process_time(), time.monotonic()
    deadline = start + load.max_duration_s if load.max_duration_s > 0 else math.inf

    async def one(prompt: str) -> RequestRecord:
        try:
            return await stream_completion(client, model, prompt, opts.max_tokens, opts.extra)
        finally:
            if sem is not None:
                sem.release()

    tasks: list[asyncio.Task[RequestRecord]] = []
    gaps = (
        arrival_gaps(len(prompts), load.target, load.burstiness, opts.seed)
        if load.mode == "rate"
        else [0.0] * len(prompts)
    )
    for prompt, gap in zip(prompts, gaps, strict=True):
        if gap:
            await asyncio.sleep(gap)
        if sem is not None:  # closed loop: a request is sent when a slot frees up
            await sem.acquire()
        if time.monotonic() >= deadline:
            if sem is not None:
                sem.release()
            break
        tasks.append(asyncio.create_task(one(prompt)))
    records = await asyncio.gather(*tasks)
    duration = time.monotonic() - start
    cpu = time.process_time() - cpu0
    stop.set()
    await watcher
    if lags_ms is not None:
        lags_ms.extend(lags)
    return summarize(
        records,
        duration,
        mode=load.mode,
        target=load.target,
        client_cpu_s=cpu,
        loop_lags_ms=lags,
        slo=opts.slo,
        limits=opts.limits,
    )


def _client(
    base_url: str,
    transport: httpx.AsyncBaseTransport | None,
    width: int,
    timeout_s: float,
    headers: Mapping[str, str] | None = None,
) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=width, max_keepalive_connections=width)
    return httpx.AsyncClient(
        base_url=base_url, transport=transport, limits=limits, timeout=timeout_s, headers=dict(headers or {})
    )


Prompts = Sequence[str] | Callable[[int, int], Sequence[str]]


def run_points(
    base_url: str,
    model: str,
    prompts: Prompts,
    loads: Sequence[Load],
    opts: Options,
    *,
    repeats: int = 1,
    first_point: int = 0,
    transport: httpx.AsyncBaseTransport | None = None,
    on_point: Callable[[LoadPoint], None] = lambda _: None,
    precision: float = 0.0,
    max_point_s: float = 60.0,
) -> list[LoadPoint]:
    """Every load point ``repeats`` times, aggregated (see metrics.aggregate); with ``precision`` > 0, more
    repeats until the 95% interval of the point's output tok/s (per request, as verdicts resample it) is
    within ±precision of its mean, or the point has run ``max_point_s``.

    ``prompts`` may be a function of (point index, repeat): fresh prompts per run keep servers with
    prompt/prefix caches (llama.cpp, vLLM) from answering later points out of their cache."""

    def precise_enough(reps: Sequence[Run]) -> bool:
        reached = relative_halfwidth([x for r in reps for x in r.samples.get("tok_s", ())], seed=opts.seed)
        return reached is not None and reached <= precision

    def prompts_for(i: int, r: int) -> Sequence[str]:
        return prompts(first_point + i, r) if callable(prompts) else prompts

    async def main() -> list[LoadPoint]:
        out = []
        width = max(len(prompts_for(0, 0)), 1)
        async with _client(base_url, transport, width, opts.timeout_s, opts.headers) as client:
            for i, load in enumerate(loads):
                t0 = time.monotonic()
                reps = [await run_load(client, model, prompts_for(i, r), load, opts) for r in range(repeats)]
                while precision > 0 and not precise_enough(reps) and time.monotonic() - t0 < max_point_s:
                    reps.append(await run_load(client, model, prompts_for(i, len(reps)), load, opts))
                point = aggregate(reps, mode=load.mode, target=load.target)
                on_point(point)
                out.append(point)
        return out

    return asyncio.run(main())


def run_sweep(
    base_url: str,
    model: str,
    prompts: Prompts,
    opts: Options,
    *,
    points: int = 3,
    burstiness: float = 1.0,
    repeats: int = 1,
    transport: httpx.AsyncBaseTransport | None = None,
    on_point: Callable[[LoadPoint], None] = lambda _: None,
    precision: float = 0.0,
    max_point_s: float = 60.0,
) -> list[LoadPoint]:
    """Synchronous (c=1) -> max throughput (all at once) -> ``points`` rates evenly between their req/s."""
    first = run_points(
        base_url,
        model,
        prompts,
        [Load(mode="concurrency", target=1), Load(mode="rate", target=math.inf)],
        opts,
        repeats=repeats,
        transport=transport,
        on_point=on_point,
        precision=precision,
        max_point_s=max_point_s,
    )
    lo, hi = first[0].run.request_s, first[1].run.request_s
    if not (lo and hi and hi > lo):
        return first
    rates = [lo + (hi - lo) * (i + 1) / (points + 1) for i in range(points)]
    loads = [Load(mode="rate", target=r, burstiness=burstiness) for r in rates]
    return first + run_points(
        base_url,
        model,
        prompts,
        loads,
        opts,
        repeats=repeats,
        first_point=2,
        transport=transport,
        on_point=on_point,
        precision=precision,
        max_point_s=max_point_s,
    )
