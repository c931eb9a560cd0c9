"""One cell, (pin, model, platform), from install to CellResult.

``run_cell`` is the one place where exceptions become outcomes: each phase's HarnessError maps to a
failure class, anything else is a HARNESS-ERROR with its traceback logged; KeyboardInterrupt is
re-raised after the server is stopped and the partial result stored.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import functools
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from . import catalogue
from .backends import Host, LaunchContext
from .errors import HarnessError, InstallError, LaunchError, ModelError, ProbeError, ServerExited
from .fingerprint import Fingerprint, Machine, distributions, gpu_facts, mask_argv, mask_env
from .install import DEFAULT_BASE_URL, InstallPaths, InstallRequest, install_pin
from .install.layout import venv_and_origin
from .launch import HOST, Server, decisive_line, free_port, log_tail, out_of_memory, parse_phases
from .load import audio as audio_load
from .load import text as loadgen
from .load.metrics import ClientLimits, Slo
from .models import prepare as prepare_model
from .probes import accuracy, agreement, conformance, quality, speech, stt, tts
from .probes.wer import edit_distance, wer, words
from .results import (
    Agreement,
    CellResult,
    Check,
    ClipScore,
    FailureClass,
    LoadPoint,
    SpeechAccuracy,
    Startup,
    Status,
    TextAccuracy,
)
from .serial import dump, load_record
from .slots import GpuMemorySampler, Slot, cuda_driver_version, wait_for_free_memory
from .spec import Matrix, ModelSpec, PinSpec, VariantSpec, Workload
from .stability import Stability, calibrate
from .stats import relative_halfwidth
from .versions import path_safe

log = logging.getLogger(__name__)
PORT_ATTEMPTS = 3  # a port taken between choosing it and the server binding it: start again, at most this often
Progress = Callable[[str], None]


@dataclass(frozen=True, kw_only=True)
class RunContext:
    matrix: Matrix
    platform: str
    paths: InstallPaths
    run_dir: Path
    slot: Slot
    progress: Progress = lambda _: None
    download_base_url: str = DEFAULT_BASE_URL  # GPUStack's --tools-download-base-url
    allow_http_mirror: bool = False
    prepared: Mapping[str, str] = dataclasses.field(
        default_factory=dict
    )  # executable -> how it was installed ahead of the cells


class MachineBusy(HarnessError):
    """The machine cannot host the cell now (its GPUs are in use): an infrastructure failure, not the pin's."""


class CellInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM mid-cell: carries the cell's partial result so it is recorded before the run stops."""

    def __init__(self, result: CellResult) -> None:
        super().__init__(result.reason)
        self.result = result


def cell_id(backend: str, pin: str, model: str, platform: str, variant: str = "") -> str:
    return f"{backend}_{pin}-{model}-{platform}" + (f"-{variant}" if variant else "")


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(
        timespec="milliseconds"
    )  # cells on GPU slots: who overlapped whom


@functools.cache
def this_machine() -> Machine:
    return Machine.detect()


def install_request(ctx: RunContext, pin_spec: PinSpec) -> InstallRequest:
    """How a cell of ``ctx``'s platform installs ``pin_spec`` (also used to install pins ahead of the cells)."""
    plat = ctx.matrix.platforms[ctx.platform]
    return InstallRequest(
        backend=ctx.matrix.get_backend(),
        platform=ctx.platform,
        pin=pin_spec.pin,
        package=plat.package,
        installer=plat.installer,
        extra_index_urls=plat.extra_index_urls or None,
        download_base_url=ctx.download_base_url,
        allow_http=ctx.allow_http_mirror,
        sha256=pin_spec.sha256,
        host=Host.detect(cuda_driver_version() if ctx.slot.gpus else None),
    )


def run_cell(ctx: RunContext, pin_spec: PinSpec, model: ModelSpec, variant: VariantSpec | None = None) -> CellResult:
    """``variant``: the launch variant (default: the platform's first)."""
    matrix, plat = ctx.matrix, ctx.matrix.platforms[ctx.platform]
    variant = variant or plat.variants[0]
    backend = matrix.get_backend()
    pin = pin_spec.pin
    result = CellResult(
        cell_id=cell_id(backend.name, pin.text, model.name, ctx.platform, variant.name),
        backend=backend.name,
        version=pin.text,
        model=model.name,
        platform=ctx.platform,
        is_reference=pin.text == plat.reference.text,
        expected_failure=pin_spec.expect,
        started_at=_now(),
        selected_by=pin_spec.why if pin_spec.expect is None else "",
        variant=variant.name,
        baseline_variant=variant.baseline,
        deployed_variant=plat.variants[0].name,
        backend_parameters=plat.serve_args + model.serve_args + variant.serve_args,
        backend_env=mask_env({**plat.env, **variant.env}),
    )
    result.fingerprint = Fingerprint(
        machine=this_machine(),
        gpus=gpu_facts(ctx.slot.gpus),
        slot=ctx.slot.label,
        package=plat.package,
        model_source=model.source,
    )
    say = ctx.progress
    phase = "install"
    t0 = began = time.monotonic()
    try:
        say("installing")
        inst = result.install = install_pin(install_request(ctx, pin_spec), ctx.paths, progress=say)
        if inst.executable in ctx.prepared:
            result.notes["install"] = ctx.prepared[inst.executable]
        result.phases["install"] = inst.seconds
        result.warnings += list(inst.warnings)
        found = venv_and_origin(Path(inst.executable), ctx.paths)
        if found is not None:  # what the pin's venv holds: torch and its build, the backend, everything else
            result.fingerprint = dataclasses.replace(
                result.fingerprint, distributions=distributions(found[0] / "bin" / "python")
            )
            _against_gpustack_image(ctx, result)
        say(("installed" if inst.installed_now else "already installed") + f": {inst.executable} ({inst.kind})")

        phase, t0 = "model", time.monotonic()
        say(f"preparing model {model.name}")
        local = prepare_model(
            model.source,
            backend.flavour(ctx.platform).model_format,
            ctx.paths.data_dir,
            progress=say,
            sha256=model.sha256,
        )
        result.phases["model"] = time.monotonic() - t0
        result.fingerprint = dataclasses.replace(
            result.fingerprint, model_path=str(local.path), model_sha256=local.sha256
        )

        phase, t0 = "startup", time.monotonic()
        _serve_and_probe(ctx, result, model, local.path, Path(inst.executable))
    except MachineBusy as exc:
        _fail(result, FailureClass.INFRASTRUCTURE, str(exc), None)
    except InstallError as exc:
        _fail(result, FailureClass.INSTALL_FAILED, exc.reason, exc.log)
        result.phases["install"] = time.monotonic() - t0
    except ModelError as exc:
        _fail(result, FailureClass.MODEL_FAILED, str(exc), None)
        result.phases["model"] = time.monotonic() - t0
    except LaunchError as exc:
        oom = isinstance(exc, ServerExited) and out_of_memory(str(exc), exc.log)
        _fail(result, FailureClass.OUT_OF_MEMORY if oom else FailureClass.STARTUP_FAILED, str(exc), exc.log)
    except ProbeError as exc:  # the server stopped answering: its log says why
        log_file = Path(result.log_path) if result.log_path else None
        oom = str(exc).startswith("server ") and out_of_memory(str(exc), log_file)  # it died: of what?
        _fail(result, FailureClass.OUT_OF_MEMORY if oom else FailureClass.PROBE_FAILED, str(exc), log_file)
    except HarnessError as exc:
        _fail(result, FailureClass.HARNESS_ERROR, f"{phase}: {exc}", None)
    except KeyboardInterrupt as exc:
        _fail(result, FailureClass.INTERRUPTED, f"interrupted during {phase}", None)
        result.status = Status.SKIPPED
        result.finished_at = _now()
        raise CellInterrupted(result) from exc
    except Exception as exc:  # a harness bug: record it with the traceback, keep the run going
        log.exception("cell %s crashed in %s", result.cell_id, phase)
        _fail(result, FailureClass.HARNESS_ERROR, f"{phase}: {type(exc).__name__}: {exc}", None)
    result.finished_at = _now()
    result.wall_s = time.monotonic() - began
    return result


@contextlib.contextmanager
def timed(into: dict[str, float], name: str) -> Iterator[None]:
    """Seconds spent in the block, added to ``into[name]`` (also when it raises)."""
    t0 = time.monotonic()
    try:
        yield
    finally:
        into[name] = into.get(name, 0.0) + time.monotonic() - t0


@functools.cache
def _catalogue(data_dir: Path) -> list[catalogue.Image] | str:
    try:
        return catalogue.load(data_dir)
    except catalogue.CatalogueError as exc:
        return str(exc)


def _against_gpustack_image(ctx: RunContext, result: CellResult) -> None:
    """The pin's venv next to GPUStack's own image of that version ("torch 2.13.0+cpu here, 2.13.0+cu130 in
    gpustack/runner:cuda13.0-vllm0.32.0"): what a deployment through GPUStack would run instead."""
    if result.backend not in catalogue.SERVICES or result.fingerprint is None or not result.fingerprint.distributions:
        return
    images = _catalogue(ctx.paths.data_dir)
    if isinstance(images, str):
        result.notes["gpustack image"] = f"not compared: {images}"
        return
    accelerator = (
        "cuda" if ctx.platform in ("cpu", "cuda") else ctx.platform
    )  # CPU pins: next to the CUDA image GPUStack ships
    image = catalogue.image_for(images, result.backend, result.version, accelerator)
    if image is None:
        result.notes["gpustack image"] = f"GPUStack ships no {accelerator} image of {result.backend} {result.version}"
        return
    diff = catalogue.differences(image, result.fingerprint.distributions)
    result.notes["gpustack image"] = f"{image.image}: " + (
        "; ".join(diff) if diff else "every shared dependency pinned alike"
    )


def _fail(result: CellResult, cls: FailureClass, reason: str, log_path: Path | None) -> None:
    result.status = Status.FAILED if cls is FailureClass.CHECK_FAILED else Status.ERROR
    result.failure_class = cls
    result.reason = reason.strip().splitlines()[0] if reason.strip() else cls.value
    if log_path is not None:
        result.log_path = str(log_path)
        result.log_excerpt = log_tail(log_path, lines=25)


def _serve_and_probe(ctx: RunContext, result: CellResult, model: ModelSpec, model_path: Path, exe: Path) -> None:
    cell_dir = ctx.run_dir / "cells" / result.cell_id
    # Short and fresh per cell: vLLM binds ZMQ IPC sockets under TMPDIR, and a socket path may not
    # exceed 107 bytes, so the report dir is too deep for it.
    cache_dir = Path(tempfile.mkdtemp(prefix="pinmatrix-"))
    try:
        for sub in ("vllm", "inductor", "tmp"):
            (cache_dir / sub).mkdir()
        _serve(ctx, result, model, model_path, exe, cell_dir, cache_dir)
    finally:
        shutil.rmtree(cache_dir, ignore_errors=True)


def _serve(
    ctx: RunContext, result: CellResult, model: ModelSpec, model_path: Path, exe: Path, cell_dir: Path, cache_dir: Path
) -> None:
    matrix, plat = ctx.matrix, ctx.matrix.platforms[ctx.platform]
    flavour = matrix.get_backend().flavour(ctx.platform)
    deadline = matrix.thresholds.startup_deadline_s
    log_path = cell_dir / "server.log"
    result.log_path = str(log_path)

    def server(log: Path) -> tuple[Server, str]:
        port = free_port()
        lctx = LaunchContext(
            executable=exe,
            model_path=model_path,
            served_name=model.name,
            host=HOST,
            port=port,
            gpus=ctx.slot.gpus,
            extra_args=result.backend_parameters,
            cache_dir=cache_dir,
        )
        ours = {**flavour.launch_env(lctx), **plat.env, **plat.variant(result.variant).env}
        argv = flavour.launch_argv(lctx)
        if (
            result.fingerprint is not None and not result.fingerprint.launch_argv
        ):  # the effective launch line, secrets masked
            result.fingerprint = dataclasses.replace(
                result.fingerprint, launch_argv=mask_argv(argv), launch_env=mask_env(ours)
            )
        base_url = f"http://{HOST}:{port}"
        return Server(
            argv,
            env={**os.environ, **ours},
            log_path=log,
            base_url=base_url,
            readiness_path=flavour.readiness_path,
            ready_line=flavour.ready_line,
            records=ctx.paths.data_dir / "servers",
        ), base_url

    def start(srv: Server, label: str) -> Startup:
        ctx.progress(
            f"waiting for ready ({label} start) on {srv.base_url} (deadline {deadline:g} s, log: {srv.log_path})"
        )
        seconds = srv.wait_ready(deadline)
        phases = parse_phases(srv.log_path.read_text(encoding="utf-8", errors="replace"), flavour.startup_phases)
        ctx.progress(f"ready in {seconds:.1f} s ({label})" + "".join(f", {k} {v:g}" for k, v in phases.items()))
        return Startup(seconds=seconds, log_ready_s=srv.log_ready_s, phases=phases)

    def launch(log: Path, label: str) -> tuple[Server, str]:
        """Start and wait for ready; a port another process took between our choosing and the server's
        binding is a race of this machine, not a backend failure: start again on another port."""
        for attempt in range(1, PORT_ATTEMPTS + 1):
            srv, base = server(log)
            srv.start()
            try:
                result.startup[label] = start(srv, label)
                return srv, base
            except ServerExited:
                srv.stop()
                if attempt < PORT_ATTEMPTS and srv.port_was_taken():
                    ctx.progress(f"{base} was taken before the server bound it; starting again on another port")
                    continue
                raise
            except BaseException:
                srv.stop()
                raise
        raise AssertionError("unreachable")

    if ctx.slot.gpus:
        ctx.progress(
            f"waiting for GPU {','.join(map(str, ctx.slot.gpus))} to "
            f"be free (< {matrix.thresholds.gpu_free_mib:g} MiB used)"
        )
        busy = wait_for_free_memory(
            ctx.slot.gpus, max_used_mib=matrix.thresholds.gpu_free_mib, timeout_s=matrix.thresholds.gpu_free_wait_s
        )
        if busy is not None:
            raise MachineBusy(busy)
    ctx.progress("timing the machine (calibration, ~0.5 s)")
    with timed(result.phases, "calibration"):
        before = calibrate()
    with GpuMemorySampler(ctx.slot.gpus) as gpu_memory:
        srv, base_url = launch(log_path, "cold")
        try:
            result.phases["startup"] = result.startup["cold"].seconds
            t0 = time.monotonic()

            def alive(during: str) -> None:
                """A server that died is named as such, not as the connection errors its death causes."""
                if (how := srv.exit_description()) is not None:
                    raise ProbeError(f"server {how} during {during}: {decisive_line(srv.log_path)}")

            try:
                _probe(ctx, result, model, base_url, alive)
            except ProbeError as exc:
                if (how := srv.exit_description()) is not None and not str(exc).startswith("server "):
                    raise ProbeError(f"server {how} during probes: {decisive_line(srv.log_path)}") from exc
                raise
            finally:
                result.phases["probes"] = time.monotonic() - t0
        finally:
            srv.stop()
        with timed(result.phases, "calibration"):
            after = calibrate()
        result.stability = Stability(before_mb_s=before, after_mb_s=after)
        if (drift := result.stability.drift()) is not None and abs(drift) > matrix.thresholds.machine_drift:
            result.warnings.append(
                f"the machine's speed moved {drift:+.0%} while this cell ran (calibration "
                f"{before:.0f} -> {result.stability.after_mb_s:.0f} MB/s): its timings are not comparable"
            )
        if "warm" in matrix.workload.startup:
            # Same cache dirs as the cold start: what a restart of an already-deployed pin costs.
            with timed(result.phases, "warm start"):
                warm, _ = launch(cell_dir / "server-warm.log", "warm")
                warm.stop()
    result.gpu_memory_peak_mib = {str(g): round(v, 1) for g, v in gpu_memory.peaks_mib.items()}
    waived = matrix.policy.waived_checks  # known, accepted deviations: still reported, no longer blocking
    result.checks = [
        dataclasses.replace(c, waived=waived[c.name]) if c.passed is False and c.name in waived else c
        for c in result.checks
    ]
    failed = [c for c in result.checks if c.blocking(matrix.policy.required_checks)]
    if failed:
        result.status, result.failure_class = Status.FAILED, FailureClass.CHECK_FAILED
        result.reason = "failed: " + ", ".join(f"{c.name} ({c.detail[:120]})" for c in failed)
        result.log_excerpt = log_tail(log_path, lines=25)


Alive = Callable[[str], None]  # raises ProbeError when the server has died (the argument says during what)


def _probe(ctx: RunContext, result: CellResult, model: ModelSpec, base_url: str, alive: Alive) -> None:
    if model.kind == "stt":
        return _probe_stt(ctx, result, model, base_url, alive)
    if model.kind == "tts":
        return _probe_tts(ctx, result, model, base_url, alive)
    w, t, acc = ctx.matrix.workload, ctx.matrix.thresholds, ctx.matrix.accuracy
    items = _accuracy_items(ctx) if model.generates_text else []
    ref_store = ReferenceStore(ctx, model, items, numerics=_numerics(result), variant=result.variant)
    with httpx.Client(base_url=base_url, timeout=t.request_timeout_s) as client:
        ctx.progress("probing API conformance")
        with timed(result.probe_s, "conformance"):
            result.checks += conformance.conformance(
                client,
                model.name,
                kind=model.kind,
                timings=result.conformance_s,
                normalized_embeddings=model.normalized_embeddings,
            )
        ctx.progress(f"probing agreement ({w.agreement_prompts} greedy prompts, top-{t.top_logprobs} logprobs)")
        agreement_t0 = time.monotonic()
        if model.kind == "embedding":
            ours: dict[str, Any] = {"embeddings": agreement.embeddings(client, model.name)}
        else:
            prompts = list(agreement.PROMPTS[: w.agreement_prompts])
            ours = {
                "samples": agreement.greedy_samples(
                    client, model.name, prompts, w.agreement_max_tokens, t.top_logprobs, concurrency=w.probe_concurrency
                )
            }
            result.checks.append(quality.degeneration_check(ours["samples"]))  # absolute: the reference pin too
        result.probe_s["agreement"] = time.monotonic() - agreement_t0
    scored: TextAccuracy | None = None
    if items:
        ctx.progress(f"probing task accuracy ({len(items)} items: {', '.join(acc.tasks) or 'files'})")
        with timed(result.probe_s, "accuracy"):
            scored = accuracy.run(base_url, model.name, items, max_tokens=acc.max_tokens, concurrency=acc.concurrency)
        ours["accuracy"] = dump(scored)
    ref_store.save(result.version, ours)
    reference = None if result.is_baseline else ref_store.load()
    _agree(ctx, result, model, ours, reference, ref_store.ref_label)
    if scored is not None:
        ref_scored = (
            load_record(TextAccuracy, reference["accuracy"]) if reference and reference.get("accuracy") else None
        )
        result.checks.append(
            accuracy.gate(
                scored, ref_scored, ref_store.ref_label, t.accuracy_tolerance, is_reference=result.is_baseline
            )
        )
        result.accuracy = dataclasses.replace(scored, misses=scored.misses[:10])
        if model.min_accuracy is not None:
            result.checks.append(quality.floor_check(scored, model.min_accuracy))
    if not model.generates_text:
        return
    _throughput(ctx, result, model, base_url, alive)


def _numerics(result: CellResult) -> str:
    return result.fingerprint.numerics if result.fingerprint is not None else "unknown"


def _speech_clips(ctx: RunContext) -> list[speech.Clip]:
    w = ctx.matrix.workload
    ctx.progress(f"making speech: {w.speech_clips} seeded sentences with espeak-ng (seed {w.seed})")
    return speech.make_clips(w.speech_clips, w.seed, ctx.paths.data_dir / "audio" / "espeak")


def _probe_stt(ctx: RunContext, result: CellResult, model: ModelSpec, base_url: str, alive: Alive) -> None:
    """Speech-to-text: conformance, transcripts of seeded speech scored by WER (and against the reference
    pin's), then latency and real-time factor under concurrency."""
    t = ctx.matrix.thresholds
    clips = _speech_clips(ctx)
    result.notes["speech"] = (
        f"{speech.espeak_version()}; {len(clips)} clips, {sum(c.duration_s for c in clips):.2f} s of audio"
    )
    ref_store = ReferenceStore(
        ctx, model, [], extra=[c.path.name for c in clips], numerics=_numerics(result), variant=result.variant
    )
    with httpx.Client(base_url=base_url, timeout=300.0) as client:
        ctx.progress(f"probing API conformance (transcriptions: {', '.join(stt.RESPONSE_FORMATS)}, errors)")
        checks, _ = stt.stt_conformance(client, model.name, clips[0])
        result.checks += checks
        ctx.progress(f"transcribing {len(clips)} clips ({sum(c.duration_s for c in clips):.1f} s of speech)")
        heard = stt.transcribe_all(client, model.name, clips)
    texts = [c.text for c in clips]
    reference = None if result.is_baseline else ref_store.load()
    ref_wer = wer(texts, reference["transcripts"])[0] if reference else None
    check, result.accuracy = stt.wer_check(
        texts,
        heard,
        ref_wer,
        ref_store.ref_label,
        max_wer=t.max_wer,
        tolerance=t.wer_tolerance,
        is_reference=result.is_baseline,
    )
    result.checks.append(check)
    ref_store.save(result.version, {"transcripts": heard})
    if result.is_baseline or reference is None:
        _agree(ctx, result, model, {}, None, ref_store.ref_label)
    else:
        check, result.agreement = stt.transcript_agreement(
            heard, reference["transcripts"], ref_store.ref_label, t.max_disagreeing_prompts
        )
        result.checks.append(check)
    _audio_load(ctx, result, audio_load.stt_sender(model.name, clips), base_url, alive)


def _probe_tts(ctx: RunContext, result: CellResult, model: ModelSpec, base_url: str, alive: Alive) -> None:
    """Text-to-speech: valid audio of a plausible length, bad input refused, the round trip through an STT
    server where the model names one, then latency and real-time factor under concurrency."""
    w = ctx.matrix.workload
    texts = [s for s, _ in speech.pick_sentences(w.speech_clips, w.seed)]
    stt_fn = tts.remote_stt(model.stt_url, model.stt_model) if model.stt_url else None
    with httpx.Client(base_url=base_url, timeout=300.0) as client:
        ctx.progress(
            f"probing speech synthesis ({len(texts)} sentences, voice {model.voice!r})"
            + (f", round trip through {model.stt_url}" if stt_fn else "")
        )
        checks, heard = tts.tts_checks(client, model.name, model.voice, texts, stt_fn)
    result.checks += checks
    if heard:
        rate, edits, total = wer(texts, heard)
        per = tuple(
            ClipScore(spoken=a, heard=b, edits=edit_distance(words(a), words(b)))
            for a, b in zip(texts, heard, strict=True)
        )
        result.accuracy = SpeechAccuracy(wer=rate, edits=edits, words=total, clips=len(texts), per_clip=per)
    _audio_load(ctx, result, audio_load.tts_sender(model.name, model.voice, texts), base_url, alive)


def _failed_requests(points: list[LoadPoint]) -> None:
    for p in points:
        if p.run.failed:
            raise ProbeError(f"{p.run.failed} of {p.run.requests} requests failed at {p.label}: {p.run.errors[0]}")


def _audio_load(ctx: RunContext, result: CellResult, send: audio_load.Send, base_url: str, alive: Alive) -> None:
    w = ctx.matrix.workload
    ctx.progress(
        f"measuring latency and real-time factor: concurrency [{', '.join(map(str, w.concurrency))}]; "
        f"{w.requests_per_level} requests per point x {w.repeats} repeat(s)"
    )

    last = [time.monotonic()]

    def show(p: LoadPoint) -> None:
        now = time.monotonic()
        result.probe_s[f"load {p.label}"] = now - last[0]
        last[0] = now
        spread = f" (95% CI {p.ci95[0]:.2f}-{p.ci95[1]:.2f})" if p.ci95 else ""
        alive(f"load point {p.label}")  # stop here, before the next point runs against a dead server
        lat, rtf = p.dist("latency_ms"), p.dist("rtf")
        ctx.progress(
            f"{p.label}: {p.median:.2f} audio s/s{spread}, latency p50 {_or0(lat)} ms, RTF p50 {_or0(rtf, '.2f')}, "
            f"{p.run.completed}/{p.run.requests} ok"
        )

    result.throughput = audio_load.run_levels(
        base_url,
        send,
        concurrency=w.concurrency,
        requests=w.requests_per_level,
        repeats=w.repeats,
        warmup=w.warmup_requests,
        on_point=show,
    )
    _failed_requests(result.throughput)


def _or0(d: Any, spec: str = ".0f") -> str:
    value = getattr(d, "p50", None)
    return format(0.0 if value is None or value != value else value, spec)


def _loads(w: Workload) -> list[loadgen.Load]:
    if w.profile == "rate":
        return [
            loadgen.Load(mode="rate", target=r, burstiness=w.burstiness, max_duration_s=w.max_duration_s)
            for r in w.rates
        ]
    return [loadgen.Load(mode="concurrency", target=c, max_duration_s=w.max_duration_s) for c in w.concurrency]


def _throughput(ctx: RunContext, result: CellResult, model: ModelSpec, base_url: str, alive: Alive) -> None:
    w, t, slo = ctx.matrix.workload, ctx.matrix.thresholds, ctx.matrix.slo
    flavour = ctx.matrix.get_backend().flavour(ctx.platform)
    # ignore_eos keeps every request at exactly output_tokens, so pins are compared on equal work.
    enforced = w.ignore_eos and flavour.supports_ignore_eos
    result.notes["fixed_output_length"] = "enforced (ignore_eos)" if enforced else "not enforced"
    opts = loadgen.Options(
        max_tokens=w.output_tokens,
        extra={"ignore_eos": True} if enforced else {},
        seed=w.seed,
        warmup_requests=w.warmup_requests,
        slo=Slo(ttft_ms=slo.ttft_ms, tpot_ms=slo.tpot_ms, e2el_ms=slo.e2el_ms),
        limits=ClientLimits(cpu_util=t.client_cpu_util, loop_lag_p99_ms=t.client_loop_lag_ms),
        timeout_s=t.request_timeout_s,
    )

    def prompts(point: int, repeat: int) -> list[str]:  # fresh per run: no answers out of a prompt cache
        return loadgen.make_prompts(w.requests_per_level, w.input_tokens, w.seed * 1000 + point * 100 + repeat)

    what = (
        "a rate sweep"
        if w.profile == "sweep"
        else f"{w.profile} [{', '.join(f'{x:g}' for x in (w.rates or w.concurrency))}]"
    )
    sized = (
        f", more until output tok/s is within ±{w.target_precision:.0%} (at most {w.max_point_s:g} s per point)"
        if w.target_precision > 0
        else ""
    )
    if sized:
        result.notes["precision"] = (
            f"points sized for ±{w.target_precision:.0%} on output tok/s, at most {w.max_point_s:g} s each"
        )
    ctx.progress(
        f"measuring throughput: {what}; {w.requests_per_level} requests per point x {w.repeats} repeat(s){sized}"
    )

    last = [time.monotonic()]

    def show(p: LoadPoint) -> None:
        now = time.monotonic()
        result.probe_s[f"load {p.label}"] = now - last[0]  # warm-up, repeats and all
        last[0] = now
        alive(f"load point {p.label}")  # stop here, before the next point runs against a dead server
        spread = f" (95% CI {p.ci95[0]:.1f}-{p.ci95[1]:.1f})" if p.ci95 else ""
        if w.target_precision > 0:
            reached = relative_halfwidth([x for r in p.runs for x in r.samples.get("tok_s", ())], seed=w.seed)
            spread += f", ±{reached:.1%} after {len(p.runs)} run(s)" if reached is not None else ""
        flag = f" [client-bound: {p.saturation_reason}]" if p.saturated else ""
        ctx.progress(
            f"{p.label}: {p.median:.1f} out tok/s{spread}, TTFT p50 {_or0(p.dist('ttft_ms'))} ms, "
            f"{p.run.completed}/{p.run.requests} ok{flag}"
        )

    if w.profile == "sweep":
        points = loadgen.run_sweep(
            base_url,
            model.name,
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
        points = loadgen.run_points(
            base_url,
            model.name,
            prompts,
            _loads(w),
            opts,
            repeats=w.repeats,
            on_point=show,
            precision=w.target_precision,
            max_point_s=w.max_point_s,
        )
    result.throughput = points
    _failed_requests(points)


def _accuracy_items(ctx: RunContext) -> list[accuracy.Item]:
    acc, seed = ctx.matrix.accuracy, ctx.matrix.workload.seed
    items = [i for task in acc.tasks for i in accuracy.builtin_items(task, acc.items_per_task, seed)]
    for path in acc.files:
        try:
            items += accuracy.load_jsonl(path)
        except (OSError, ValueError) as exc:
            raise HarnessError(f"accuracy file: {exc}") from exc
    return items


class ReferenceStore:
    """Each pin's probe outputs, keyed by everything that shapes them; the reference pin's are what
    other pins compare against, so a run without the reference pin still has something to compare to.

    The key includes what changes greedy numerics on this machine (the CPU's ISA, or the GPU model), so
    a data dir restored on another kind of machine never compares outputs across machines."""

    def __init__(
        self,
        ctx: RunContext,
        model: ModelSpec,
        items: list[accuracy.Item],
        extra: list[str] | None = None,
        numerics: str = "unknown",
        variant: str = "",
    ) -> None:
        w, t = ctx.matrix.workload, ctx.matrix.thresholds
        plat = ctx.matrix.platforms[ctx.platform]

        def digest(launch: VariantSpec) -> str:  # a variant's own launch arguments shape its outputs too
            shaped = [list(launch.serve_args), sorted(launch.env.items())] if launch.serve_args or launch.env else []
            key = json.dumps(
                [
                    model.source,
                    model.kind,
                    list(agreement.PROMPTS[: w.agreement_prompts]),
                    w.agreement_max_tokens,
                    t.top_logprobs,
                    list(model.serve_args),
                    accuracy.items_digest(items) if items else None,
                    numerics,
                ]
                + ([extra] if extra else [])
                + shaped
            )
            return hashlib.sha256(key.encode()).hexdigest()[:12]

        mine = plat.variant(variant)
        baseline = plat.variant(mine.baseline)
        self.digest, self.baseline_digest = digest(mine), digest(baseline)
        self.dir = ctx.paths.data_dir / "references" / ctx.matrix.backend / ctx.platform / model.name
        self.ref_version = plat.reference.text
        self.ref_label = self.ref_version + (
            f" [{baseline.name}]" if baseline.name else ""
        )  # what the checks say they compared with

    def _path(self, version: str, digest: str) -> Path:
        return self.dir / f"{path_safe(version)}-{digest}.json"

    def save(self, version: str, outputs: dict[str, Any]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self._path(version, self.digest)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(outputs), encoding="utf-8")
        os.replace(tmp, path)

    def load(self) -> dict[str, Any] | None:
        """The reference pin's outputs in the baseline variant."""
        path = self._path(self.ref_version, self.baseline_digest)
        data = json.loads(path.read_text(encoding="utf-8")) if path.exists() else None
        return data if isinstance(data, dict) else None


def _agree(
    ctx: RunContext,
    result: CellResult,
    model: ModelSpec,
    ours: dict[str, Any],
    reference: dict[str, Any] | None,
    ref_version: str,
) -> None:
    """``ref_version``: the reference pin (and its variant) as the checks name it."""
    t = ctx.matrix.thresholds
    if result.is_baseline:
        result.agreement = Agreement(kind="reference", reference_version=ref_version)
        result.checks.append(
            Check(
                group="agreement",
                name="agreement.reference",
                passed=True,
                detail="this is the reference pin; its outputs are stored for the others",
            )
        )
        return
    if reference is None:
        # Not a disagreement, so the cell does not fail; but an unevaluated required check keeps
        # the pin from being recommended (see recommend._rejection).
        note = (
            f"not compared: reference pin {ref_version} has no stored outputs for these settings (run its cell first)"
        )
        result.agreement = Agreement(kind="not-compared", reference_version=ref_version, note="not compared")
        result.warnings.append(note)
        name = "agreement.transcripts" if model.kind == "stt" else "agreement.greedy"
        result.checks.append(Check(group="agreement", name=name, passed=None, detail=note))
        return
    if model.kind == "embedding":
        result.checks.append(agreement.evaluate_embeddings(ours["embeddings"], reference["embeddings"], ref_version))
        result.agreement = Agreement(kind="embeddings", reference_version=ref_version, compared=len(ours["embeddings"]))
        return
    thresholds = agreement.Thresholds(
        top_k=t.top_logprobs,
        max_disagreeing_prompts=t.max_disagreeing_prompts,
        max_diverging_prompts=t.max_diverging_prompts,
        min_divergence_position=t.min_divergence_position,
        prompt_logprob_tolerance=t.prompt_logprob_tolerance,
    )
    checks, result.agreement = agreement.evaluate(ours["samples"], reference["samples"], ref_version, thresholds)
    result.checks += checks
