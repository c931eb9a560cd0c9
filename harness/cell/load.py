"""Load driving for a cell: the workload's points against the running server, a progress line per point,
and a dead server caught before the next point runs against it."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from ..errors import ProbeError
from ..load import audio as audio_load
from ..load import text as loadgen
from ..load.metrics import ClientLimits, Slo
from ..results import LoadPoint
from ..spec import Workload
from ..stats import relative_halfwidth
from ..words import LoadProfile
from .probing import Probing
from .speech import speech_texts


def throughput(p: Probing) -> None:
    """Output tok/s, TTFT, TPOT, ITL and E2EL at each load point of the workload's profile."""
    w = p.workload
    _announce(p)
    show = _text_point_line(p)
    opts = _options(p)

    def prompts(point: int, repeat: int) -> list[str]:  # fresh per run: no answers out of a prompt cache
        return loadgen.make_prompts(w.requests_per_level, w.input_tokens, w.seed * 1000 + point * 100 + repeat)

    if w.profile is LoadProfile.SWEEP:
        found = loadgen.run_sweep(
            p.base_url,
            p.served_name,
            prompts,
            opts,
            points=w.sweep_points,
            burstiness=w.burstiness,
            repeats=w.repeats,
            on_point=show,
            precision=w.target_precision,
            max_point_s=w.max_point_s,
        )
    else:
        found = loadgen.run_points(
            p.base_url,
            p.served_name,
            prompts,
            _loads(w),
            opts,
            repeats=w.repeats,
            on_point=show,
            precision=w.target_precision,
            max_point_s=w.max_point_s,
        )
    p.result.throughput = found
    _failed_requests(found)


def _options(p: Probing) -> loadgen.Options:
    w, t, slo = p.workload, p.thresholds, p.ctx.matrix.slo
    flavour = p.ctx.matrix.flavour(p.ctx.platform)
    # ignore_eos keeps every request at exactly output_tokens, so pins are compared on equal work.
    enforced = w.ignore_eos and flavour.supports_ignore_eos
    p.result.notes["fixed_output_length"] = "enforced (ignore_eos)" if enforced else "not enforced"
    return loadgen.Options(
        max_tokens=w.output_tokens,
        extra={"ignore_eos": True} if enforced else {},
        seed=w.seed,
        warmup_requests=w.warmup_requests,
        slo=Slo(ttft_ms=slo.ttft_ms, tpot_ms=slo.tpot_ms, e2el_ms=slo.e2el_ms),
        limits=ClientLimits(cpu_util=t.client_cpu_util, loop_lag_p99_ms=t.client_loop_lag_ms),
        timeout_s=t.request_timeout_s,
        headers=p.headers,
    )


def _announce(p: Probing) -> None:
    w = p.workload
    if w.profile is LoadProfile.SWEEP:
        what = "a rate sweep"
    else:
        what = f"{w.profile} [{', '.join(f'{x:g}' for x in (w.rates or w.concurrency))}]"
    sized = ""
    if w.target_precision > 0:
        sized = f", more until output tok/s is within ±{w.target_precision:.0%} (at most {w.max_point_s:g} s per point)"
        p.result.notes["precision"] = (
            f"points sized for ±{w.target_precision:.0%} on output tok/s, at most {w.max_point_s:g} s each"
        )
    p.say(f"measuring throughput: {what}; {w.requests_per_level} requests per point x {w.repeats} repeat(s){sized}")


def _ok(point: LoadPoint) -> str:
    """Requests answered over every repeat (or paired round) of the point."""
    return f"{sum(r.completed for r in point.runs)}/{sum(r.requests for r in point.runs)} ok"


def _text_point_line(p: Probing) -> Callable[[LoadPoint], None]:
    w = p.workload
    last = [time.monotonic()]

    def show(point: LoadPoint) -> None:
        now = time.monotonic()
        p.result.probe_s[f"load {point.label}"] = now - last[0]  # warm-up, repeats and all
        last[0] = now
        p.alive(f"load point {point.label}")  # stop here, before the next point runs against a dead server
        spread = f" (95% CI {point.ci95[0]:.1f}-{point.ci95[1]:.1f})" if point.ci95 else ""
        if w.target_precision > 0:
            samples = [x for r in point.runs for x in r.samples.get("tok_s", ())]
            reached = relative_halfwidth(samples, seed=w.seed)
            spread += f", ±{reached:.1%} after {len(point.runs)} run(s)" if reached is not None else ""
        flag = f" [client-bound: {point.saturation_reason}]" if point.saturated else ""
        p.say(
            f"{point.label}: {point.median:.1f} out tok/s{spread}, TTFT p50 {_or0(point.dist('ttft_ms'))} ms, "
            f"{_ok(point)}{flag}"
        )

    return show


def stt_load(p: Probing) -> None:
    """Latency and real-time factor of transcriptions under concurrency."""
    _audio_load(p, audio_load.stt_sender(p.served_name, p.clips))


def tts_load(p: Probing) -> None:
    """Latency and real-time factor of speech synthesis under concurrency."""
    _audio_load(p, audio_load.tts_sender(p.served_name, p.model.voice, speech_texts(p)))


def _audio_load(p: Probing, send: audio_load.Send) -> None:
    w = p.workload
    p.say(
        f"measuring latency and real-time factor: concurrency [{', '.join(map(str, w.concurrency))}]; "
        f"{w.requests_per_level} requests per point x {w.repeats} repeat(s)"
    )
    last = [time.monotonic()]

    def show(point: LoadPoint) -> None:
        now = time.monotonic()
        p.result.probe_s[f"load {point.label}"] = now - last[0]
        last[0] = now
        spread = f" (95% CI {point.ci95[0]:.2f}-{point.ci95[1]:.2f})" if point.ci95 else ""
        p.alive(f"load point {point.label}")  # stop here, before the next point runs against a dead server
        lat, rtf = point.dist("latency_ms"), point.dist("rtf")
        p.say(
            f"{point.label}: {point.median:.2f} audio s/s{spread}, latency p50 {_or0(lat)} ms, "
            f"RTF p50 {_or0(rtf, '.2f')}, {_ok(point)}"
        )

    p.result.throughput = audio_load.run_levels(
        p.base_url,
        send,
        concurrency=w.concurrency,
        requests=w.requests_per_level,
        repeats=w.repeats,
        warmup=w.warmup_requests,
        on_point=show,
        headers=p.headers,
    )
    _failed_requests(p.result.throughput)


def _failed_requests(points: list[LoadPoint]) -> None:
    for p in points:
        if p.run.failed:
            raise ProbeError(f"{p.run.failed} of {p.run.requests} requests failed at {p.label}: {p.run.errors[0]}")


def _or0(d: Any, spec: str = ".0f") -> str:
    value = getattr(d, "p50", None)
    return format(0.0 if value is None or value != value else value, spec)


def _loads(w: Workload) -> list[loadgen.Load]:
    if w.profile is LoadProfile.RATE:
        return [
            loadgen.Load(mode="rate", target=r, burstiness=w.burstiness, max_duration_s=w.max_duration_s)
            for r in w.rates
        ]
    return [loadgen.Load(mode="concurrency", target=c, max_duration_s=w.max_duration_s) for c in w.concurrency]
