"""Sending load: an httpx async streaming client for OpenAI ``/v1/completions``.

The transport is passed in (tests hand it an ``httpx.MockTransport``). Requests stream with
``stream_options.include_usage`` so output token counts come from the server, and every chunk's arrival
time is kept for TTFT/ITL.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from .metrics import LevelSummary, RequestRecord, summarize

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
                return RequestRecord(sent=sent, end=time.monotonic(), error=f"HTTP {resp.status_code}: {resp.text[:200]}")
            async for line in resp.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                now = time.monotonic()
                payload = json.loads(data)
                if payload.get("choices"):
                    chunk_times.append(now)
                if payload.get("usage"):
                    usage = payload["usage"]
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


async def run_level(
    base_url: str,
    model: str,
    prompts: Sequence[str],
    *,
    concurrency: int,
    max_tokens: int,
    extra: Mapping[str, Any] = {},
    transport: httpx.AsyncBaseTransport | None = None,
    timeout_s: float = 300.0,
) -> LevelSummary:
    """Send every prompt with at most ``concurrency`` in flight; duration = first send -> last end."""
    sem = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base_url, transport=transport, limits=limits, timeout=timeout_s) as client:

        async def one(prompt: str) -> RequestRecord:
            async with sem:
                return await stream_completion(client, model, prompt, max_tokens, extra)

        cpu0 = time.process_time()
        start = time.monotonic()
        records = await asyncio.gather(*(one(p) for p in prompts))
        duration = time.monotonic() - start
        cpu = time.process_time() - cpu0
    return summarize(concurrency, records, duration, client_cpu_s=cpu)


def run_levels(
    base_url: str,
    model: str,
    prompts: Sequence[str],
    levels: Sequence[int],
    *,
    max_tokens: int,
    extra: Mapping[str, Any] = {},
    transport: httpx.AsyncBaseTransport | None = None,
) -> list[LevelSummary]:
    async def main() -> list[LevelSummary]:
        return [
            await run_level(base_url, model, prompts, concurrency=c, max_tokens=max_tokens, extra=extra, transport=transport)
            for c in levels
        ]

    return asyncio.run(main())
