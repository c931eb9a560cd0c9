"""Load for speech servers: latency and real-time factor under concurrency, audio seconds per wall second."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence

import httpx

from ..errors import ProbeError
from ..probes.speech import Clip, wav_duration
from ..results import AUDIO_UNIT, LoadPoint, Run
from ..stats import Distribution

Send = Callable[[httpx.AsyncClient, int], Awaitable[float]]  # request i -> seconds of audio it covered


async def _level(
    base_url: str, send: Send, n: int, concurrency: int, timeout_s: float, headers: Mapping[str, str] | None = None
) -> Run:
    latencies: list[float] = []
    rtfs: list[float] = []
    audio_s = 0.0
    errors: list[str] = []
    queue = iter(range(n))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async with httpx.AsyncClient(
        base_url=base_url, timeout=timeout_s, limits=limits, headers=dict(headers or {})
    ) as client:

        async def worker() -> None:
            nonlocal audio_s
            for i in queue:
                t0 = time.perf_counter()
                try:
                    seconds = await send(client, i)
                except (httpx.HTTPError, ValueError, ProbeError) as exc:
                    errors.append(f"{type(exc).__name__}: {str(exc)[:200]}")
                    continue
                took = time.perf_counter() - t0
                latencies.append(took * 1000)
                rtfs.append(took / seconds if seconds > 0 else float("nan"))
                audio_s += seconds

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - start
    return Run(
        rate=audio_s / wall if wall > 0 else 0.0,
        requests=n,
        completed=len(latencies),
        failed=len(errors),
        duration_s=wall,
        request_s=len(latencies) / wall if wall > 0 else 0.0,
        audio_s=audio_s,
        errors=tuple(sorted(set(errors))[:5]),
        distributions={"latency_ms": Distribution.of(latencies), "rtf": Distribution.of([r for r in rtfs if r == r])},
        samples={"latency_ms": tuple(latencies)},
    )


def run_levels(
    base_url: str,
    send: Send,
    *,
    concurrency: Sequence[int],
    requests: int,
    repeats: int,
    warmup: int = 1,
    timeout_s: float = 300.0,
    on_point: Callable[[LoadPoint], None] = lambda _: None,
    headers: Mapping[str, str] | None = None,
) -> list[LoadPoint]:
    """One point per concurrency over its repeats (audio s/s), aggregated as text points are."""
    if warmup:
        asyncio.run(_level(base_url, send, warmup, 1, timeout_s, headers))
    points = []
    for c in concurrency:
        runs = [asyncio.run(_level(base_url, send, requests, c, timeout_s, headers)) for _ in range(repeats)]
        point = LoadPoint.of(label=f"c={c}", mode="concurrency", target=c, unit=AUDIO_UNIT, runs=runs)
        on_point(point)
        points.append(point)
    return points


def stt_sender(model: str, clips: Sequence[Clip]) -> Send:
    blobs = [(c.path.name, c.audio, c.duration_s) for c in clips]

    async def send(client: httpx.AsyncClient, i: int) -> float:
        name, blob, seconds = blobs[i % len(blobs)]
        # the same form as the scored transcriptions (language given: no detection pass)
        form = {"model": model, "response_format": "json", "temperature": "0", "language": "en"}
        resp = await client.post("/v1/audio/transcriptions", data=form, files={"file": (name, blob, "audio/wav")})
        resp.raise_for_status()
        data = resp.json()
        if not isinstance(data, dict) or not isinstance(data.get("text"), str):
            raise ValueError(f"not a transcription: {str(data)[:200]}")
        return seconds

    return send


def tts_sender(model: str, voice: str, texts: Sequence[str]) -> Send:
    async def send(client: httpx.AsyncClient, i: int) -> float:
        resp = await client.post(
            "/v1/audio/speech",
            json={"model": model, "input": texts[i % len(texts)], "voice": voice, "response_format": "wav"},
        )
        resp.raise_for_status()
        return wav_duration(resp.content)

    return send
