"""One cell, (pin, model, platform), from install to CellResult.

``run_cell`` is the one place where exceptions become outcomes: each phase's HarnessError maps to a
failure class, anything else is a HARNESS-ERROR with its traceback logged; KeyboardInterrupt is
re-raised after the server is stopped and the partial result stored.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import platform as pyplatform
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from . import accuracy, agreement, audio, conformance, download, loadgen, models
from .backends import LaunchContext, get_backend
from .checks import Check, is_blocking
from .download import DEFAULT_BASE_URL, Host
from .errors import HarnessError, InstallError, LaunchError, ModelError, ProbeError
from .install import Installed, InstallPaths, ensure_installed
from .launch import HOST, Server, free_port, log_tail, parse_phases
from .metrics import ClientLimits, Slo
from .results import CellResult, FailureClass, Status
from .slots import GpuMemorySampler, Slot, cuda_driver_version
from .spec import Matrix, ModelSpec, PinSpec, Workload
from .versions import executable_name, path_safe, requirement

log = logging.getLogger(__name__)
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


def cell_id(backend: str, pin: str, model: str, platform: str) -> str:
    return f"{backend}_{pin}-{model}-{platform}"


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def run_cell(ctx: RunContext, pin_spec: PinSpec, model: ModelSpec) -> CellResult:
    matrix, plat = ctx.matrix, ctx.matrix.platforms[ctx.platform]
    backend = get_backend(matrix.backend)
    flavour = backend.flavour(ctx.platform)
    pin = pin_spec.pin
    result = CellResult(
        cell_id=cell_id(backend.name, pin.text, model.name, ctx.platform),
        backend=backend.name, version=pin.text, model=model.name, platform=ctx.platform,
        is_reference=pin.text == plat.reference.text, expected_failure=pin_spec.expect, started_at=_now(),
    )  # fmt: skip
    result.fingerprint = {
        "package": plat.package,
        "install_command": ["pipx", "install", "--force", "--suffix", f"_{pin.text}", requirement(plat.package, pin)],
        "host": pyplatform.node(),
        "machine": pyplatform.machine(),
        "slot": ctx.slot.label,
        "model_source": model.source,
    }
    if flavour.build_constraints:  # what pip needs to build this pin (GPUStack operators need it too)
        result.fingerprint["build_constraints"] = list(flavour.build_constraints)
    if pin_spec.expect is None and pin_spec.why:
        result.fingerprint["selected_by"] = pin_spec.why
    say = ctx.progress
    phase = "install"
    t0 = time.monotonic()
    try:
        say("installing")
        if backend.installer == "download":
            plan = flavour.download_plan(pin.text, ctx.download_base_url, Host.detect(cuda_driver_version() if ctx.slot.gpus else None))
            result.fingerprint["install_command"] = ["download", plan.url]
            inst = download.install_archive(backend.name, pin, ctx.paths, plan, allow_http=ctx.allow_http_mirror, sha256=pin_spec.sha256,
                                            progress=say)  # fmt: skip
        elif backend.installer == "manual":  # a custom backend whose pins people put in the bin dir themselves
            exe = ctx.paths.bin_dir / executable_name(backend.name, pin)
            if not exe.exists():
                raise InstallError(f"no {exe.name} in {ctx.paths.bin_dir}: put the pin's executable there (manual install)")
            result.fingerprint["install_command"] = ["manual", str(exe)]
            inst = Installed(executable=exe, origin="manual", installed_now=False, seconds=0.0, log=None)
        else:
            inst = ensure_installed(backend, flavour, plat.package, pin, ctx.paths, installer=plat.installer,
                                    extra_index_urls=plat.extra_index_urls or flavour.default_extra_index_urls, progress=say)  # fmt: skip
        result.fingerprint["venv_bytes" if inst.origin == "pipx" else "install_bytes"] = inst.size_bytes
        result.phases["install"] = inst.seconds
        result.installed_now, result.executable = inst.installed_now, str(inst.executable)
        result.warnings += list(inst.warnings)
        result.fingerprint["origin"] = inst.origin
        say(("installed" if inst.installed_now else "already installed") + f": {inst.executable}")

        phase, t0 = "model", time.monotonic()
        say(f"preparing model {model.name}")
        local = models.prepare(model.source, flavour.model_format, ctx.paths.data_dir, progress=say)
        result.phases["model"] = time.monotonic() - t0
        result.fingerprint["model_path"] = str(local.path)
        result.fingerprint["model_sha256"] = local.sha256

        phase, t0 = "startup", time.monotonic()
        _serve_and_probe(ctx, result, model, local.path, inst.executable)
    except InstallError as exc:
        _fail(result, FailureClass.INSTALL_FAILED, exc.reason, exc.log)
        result.phases["install"] = time.monotonic() - t0
    except ModelError as exc:
        _fail(result, FailureClass.MODEL_FAILED, str(exc), None)
        result.phases["model"] = time.monotonic() - t0
    except LaunchError as exc:
        _fail(result, FailureClass.STARTUP_FAILED, str(exc), exc.log)
    except ProbeError as exc:  # the server stopped answering: its log says why
        _fail(result, FailureClass.PROBE_FAILED, str(exc), Path(result.log_path) if result.log_path else None)
    except HarnessError as exc:
        _fail(result, FailureClass.HARNESS_ERROR, f"{phase}: {exc}", None)
    except KeyboardInterrupt:
        _fail(result, FailureClass.HARNESS_ERROR, f"interrupted during {phase}", None)
        result.status = Status.SKIPPED
        result.finished_at = _now()
        raise
    except Exception as exc:  # a harness bug: record it with the traceback, keep the run going
        log.exception("cell %s crashed in %s", result.cell_id, phase)
        _fail(result, FailureClass.HARNESS_ERROR, f"{phase}: {type(exc).__name__}: {exc}", None)
    result.finished_at = _now()
    return result


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


def _serve(ctx: RunContext, result: CellResult, model: ModelSpec, model_path: Path, exe: Path, cell_dir: Path,
           cache_dir: Path) -> None:  # fmt: skip
    matrix, plat = ctx.matrix, ctx.matrix.platforms[ctx.platform]
    flavour = get_backend(matrix.backend).flavour(ctx.platform)
    deadline = matrix.thresholds.startup_deadline_s
    log_path = cell_dir / "server.log"
    result.log_path = str(log_path)

    def server(log: Path) -> tuple[Server, str]:
        port = free_port()
        lctx = LaunchContext(
            executable=exe, model_path=model_path, served_name=model.name, host=HOST, port=port,
            gpus=ctx.slot.gpus, extra_args=tuple(plat.serve_args) + tuple(model.serve_args), cache_dir=cache_dir,
        )  # fmt: skip
        env = {**os.environ, **flavour.launch_env(lctx), **plat.env}
        base_url = f"http://{HOST}:{port}"
        return Server(flavour.launch_argv(lctx), env=env, log_path=log, base_url=base_url, readiness_path=flavour.readiness_path,
                      ready_line=flavour.ready_line), base_url  # fmt: skip

    def start(srv: Server, label: str) -> dict[str, Any]:
        ctx.progress(f"waiting for ready ({label} start) on {srv.base_url} (deadline {deadline:g} s, log: {srv.log_path})")
        seconds = srv.wait_ready(deadline)
        phases = parse_phases(srv.log_path.read_text(encoding="utf-8", errors="replace"), flavour.startup_phases)
        ctx.progress(f"ready in {seconds:.1f} s ({label})" + "".join(f", {k} {v:g}" for k, v in phases.items()))
        return {"seconds": seconds, "log_ready_s": srv.log_ready_s, "phases": phases}

    with GpuMemorySampler(ctx.slot.gpus) as gpu_memory:
        srv, base_url = server(log_path)
        with srv:
            result.startup["cold"] = start(srv, "cold")
            result.startup_s = result.phases["startup"] = result.startup["cold"]["seconds"]
            t0 = time.monotonic()
            try:
                _probe(ctx, result, model, base_url)
            finally:
                result.phases["probes"] = time.monotonic() - t0
        if "warm" in matrix.workload.startup:
            # Same cache dirs as the cold start: what a restart of an already-deployed pin costs.
            warm, _ = server(cell_dir / "server-warm.log")
            with warm:
                result.startup["warm"] = start(warm, "warm")
    result.gpu_memory_peak_mib = {str(g): round(v, 1) for g, v in gpu_memory.peaks_mib.items()}
    for c in result.checks:  # known, accepted deviations: still reported, no longer blocking
        if c["passed"] is False and c["name"] in matrix.policy.waived_checks:
            c["waived"] = matrix.policy.waived_checks[c["name"]]
    failed = [c for c in result.checks if is_blocking(c, matrix.policy.required_checks)]
    if failed:
        result.status, result.failure_class = Status.FAILED, FailureClass.CHECK_FAILED
        result.reason = "failed: " + ", ".join(f"{c['name']} ({c['detail'][:120]})" for c in failed)
        result.log_excerpt = log_tail(log_path, lines=25)


def _probe(ctx: RunContext, result: CellResult, model: ModelSpec, base_url: str) -> None:
    if model.kind == "stt":
        return _probe_stt(ctx, result, model, base_url)
    if model.kind == "tts":
        return _probe_tts(ctx, result, model, base_url)
    w, t, acc = ctx.matrix.workload, ctx.matrix.thresholds, ctx.matrix.accuracy
    items = _accuracy_items(ctx) if model.kind == "chat" else []
    ref_store = ReferenceStore(ctx, model, items)
    with httpx.Client(base_url=base_url, timeout=120.0) as client:
        ctx.progress("probing API conformance")
        result.checks += [c.to_dict() for c in conformance.conformance(
            client, model.name, kind=model.kind, normalized_embeddings=model.normalized_embeddings)]  # fmt: skip
        ctx.progress(f"probing agreement ({w.agreement_prompts} greedy prompts, top-{t.top_logprobs} logprobs)")
        if model.kind == "embedding":
            ours: dict[str, Any] = {"embeddings": agreement.embeddings(client, model.name)}
        else:
            prompts = list(agreement.PROMPTS[: w.agreement_prompts])
            ours = {"samples": agreement.greedy_samples(client, model.name, prompts, w.agreement_max_tokens, t.top_logprobs)}
    if items:
        ctx.progress(f"probing task accuracy ({len(items)} items: {', '.join(acc.tasks) or 'files'})")
        ours["accuracy"] = accuracy.run(base_url, model.name, items, max_tokens=acc.max_tokens, concurrency=acc.concurrency)
    ref_store.save(result.version, ours)
    reference = None if result.is_reference else ref_store.load()
    _agree(ctx, result, model, ours, reference)
    if items:
        check = accuracy.gate(ours["accuracy"], (reference or {}).get("accuracy"), ref_store.ref_version, t.accuracy_tolerance,
                              is_reference=result.is_reference)  # fmt: skip
        result.checks.append(check.to_dict())
        result.accuracy = {k: v for k, v in ours["accuracy"].items() if k != "misses"} | {"misses": ours["accuracy"]["misses"][:10]}
    if model.kind != "chat":
        return
    _throughput(ctx, result, model, base_url)


def _speech_clips(ctx: RunContext) -> list[audio.Clip]:
    w = ctx.matrix.workload
    ctx.progress(f"making speech: {w.speech_clips} seeded sentences with espeak-ng (seed {w.seed})")
    return audio.make_clips(w.speech_clips, w.seed, ctx.paths.data_dir / "audio" / "espeak")


def _probe_stt(ctx: RunContext, result: CellResult, model: ModelSpec, base_url: str) -> None:
    """Speech-to-text: conformance, transcripts of seeded speech scored by WER (and against the reference
    pin's), then latency and real-time factor under concurrency."""
    t = ctx.matrix.thresholds
    clips = _speech_clips(ctx)
    result.fingerprint["speech"] = {"generator": audio.espeak_version(), "clips": len(clips),
                                    "audio_s": round(sum(c.duration_s for c in clips), 2)}  # fmt: skip
    ref_store = ReferenceStore(ctx, model, [], extra=[c.path.name for c in clips])
    with httpx.Client(base_url=base_url, timeout=300.0) as client:
        ctx.progress(f"probing API conformance (transcriptions: {', '.join(audio.RESPONSE_FORMATS)}, errors)")
        checks, _ = audio.stt_conformance(client, model.name, clips[0])
        result.checks += [c.to_dict() for c in checks]
        ctx.progress(f"transcribing {len(clips)} clips ({sum(c.duration_s for c in clips):.1f} s of speech)")
        heard = audio.transcribe_all(client, model.name, clips)
    texts = [c.text for c in clips]
    reference = None if result.is_reference else ref_store.load()
    ref_wer = audio.wer(texts, reference["transcripts"])[0] if reference else None
    check, result.accuracy = audio.wer_check(texts, heard, ref_wer, ref_store.ref_version, max_wer=t.max_wer,
                                             tolerance=t.wer_tolerance, is_reference=result.is_reference)  # fmt: skip
    result.checks.append(check.to_dict())
    ref_store.save(result.version, {"transcripts": heard})
    if result.is_reference or reference is None:
        _agree(ctx, result, model, {}, None)
    else:
        check, result.agreement = audio.transcript_agreement(heard, reference["transcripts"], ref_store.ref_version,
                                                             t.max_disagreeing_prompts)  # fmt: skip
        result.checks.append(check.to_dict())
    _audio_load(ctx, result, audio.stt_sender(model.name, clips), base_url)


def _probe_tts(ctx: RunContext, result: CellResult, model: ModelSpec, base_url: str) -> None:
    """Text-to-speech: valid audio of a plausible length, bad input refused, the round trip through an STT
    server where the model names one, then latency and real-time factor under concurrency."""
    w = ctx.matrix.workload
    texts = [s for s, _ in audio.pick_sentences(w.speech_clips, w.seed)]
    stt = audio.remote_stt(model.stt_url, model.stt_model) if model.stt_url else None
    with httpx.Client(base_url=base_url, timeout=300.0) as client:
        ctx.progress(f"probing speech synthesis ({len(texts)} sentences, voice {model.voice!r})"
                     + (f", round trip through {model.stt_url}" if stt else ""))  # fmt: skip
        checks, heard = audio.tts_checks(client, model.name, model.voice, texts, stt)
    result.checks += [c.to_dict() for c in checks]
    if heard:
        rate, edits, total = audio.wer(texts, heard)
        per = [{"spoken": a, "heard": b, "edits": audio.edit_distance(audio.words(a), audio.words(b))}
               for a, b in zip(texts, heard, strict=True)]  # fmt: skip
        result.accuracy = {"wer": rate, "edits": edits, "words": total, "per_clip": per}
    _audio_load(ctx, result, audio.tts_sender(model.name, model.voice, texts), base_url)


def _audio_load(ctx: RunContext, result: CellResult, send: audio.Send, base_url: str) -> None:
    w = ctx.matrix.workload
    ctx.progress(f"measuring latency and real-time factor: concurrency [{', '.join(map(str, w.concurrency))}]; "
                 f"{w.requests_per_level} requests per point x {w.repeats} repeat(s)")  # fmt: skip

    def show(p: dict[str, Any]) -> None:
        ci = p["audio_s_per_s_ci95"]
        spread = f" (95% CI {ci[0]:.2f}-{ci[1]:.2f})" if ci else ""
        ctx.progress(f"{p['label']}: {p['audio_s_per_s_median']:.2f} audio s/s{spread}, latency p50 {p['latency_ms']['p50'] or 0:.0f} ms, "
                     f"RTF p50 {p['rtf']['p50'] or 0:.2f}, {p['completed']}/{p['requests']} ok")  # fmt: skip

    result.throughput = audio.run_levels(base_url, send, concurrency=w.concurrency, requests=w.requests_per_level, repeats=w.repeats,
                                         warmup=w.warmup_requests, on_point=show)  # fmt: skip
    for p in result.throughput:
        if p["failed"]:
            raise ProbeError(f"{p['failed']} of {p['requests']} requests failed at {p['label']}: {p['errors'][0]}")


def _loads(w: Workload) -> list[loadgen.Load]:
    if w.profile == "rate":
        return [loadgen.Load(mode="rate", target=r, burstiness=w.burstiness, max_duration_s=w.max_duration_s) for r in w.rates]
    return [loadgen.Load(mode="concurrency", target=c, max_duration_s=w.max_duration_s) for c in w.concurrency]


def _throughput(ctx: RunContext, result: CellResult, model: ModelSpec, base_url: str) -> None:
    w, t, slo = ctx.matrix.workload, ctx.matrix.thresholds, ctx.matrix.slo
    flavour = get_backend(ctx.matrix.backend).flavour(ctx.platform)
    # ignore_eos keeps every request at exactly output_tokens, so pins are compared on equal work.
    enforced = w.ignore_eos and flavour.supports_ignore_eos
    result.fingerprint["fixed_output_length"] = "enforced (ignore_eos)" if enforced else "not enforced"
    opts = loadgen.Options(
        max_tokens=w.output_tokens, extra={"ignore_eos": True} if enforced else {}, seed=w.seed,
        warmup_requests=w.warmup_requests, slo=Slo(ttft_ms=slo.ttft_ms, tpot_ms=slo.tpot_ms, e2el_ms=slo.e2el_ms),
        limits=ClientLimits(cpu_util=t.client_cpu_util, loop_lag_p99_ms=t.client_loop_lag_ms),
    )  # fmt: skip
    def prompts(point: int, repeat: int) -> list[str]:  # fresh per run: no answers out of a prompt cache
        return loadgen.make_prompts(w.requests_per_level, w.input_tokens, w.seed * 1000 + point * 100 + repeat)

    what = "a rate sweep" if w.profile == "sweep" else f"{w.profile} [{', '.join(f'{x:g}' for x in (w.rates or w.concurrency))}]"
    ctx.progress(f"measuring throughput: {what}; {w.requests_per_level} requests per point x {w.repeats} repeat(s)")

    def show(p: dict[str, Any]) -> None:
        ci = p["output_tok_s_ci95"]
        spread = f" (95% CI {ci[0]:.1f}-{ci[1]:.1f})" if ci else ""
        flag = f" [client-bound: {p['saturation_reason']}]" if p["saturated"] else ""
        ctx.progress(f"{p['label']}: {p['output_tok_s_median']:.1f} out tok/s{spread}, TTFT p50 {p['ttft_ms']['p50'] or 0:.0f} ms, "
                     f"{p['completed']}/{p['requests']} ok{flag}")  # fmt: skip

    if w.profile == "sweep":
        points = loadgen.run_sweep(base_url, model.name, prompts, opts, points=w.sweep_points, burstiness=w.burstiness,
                                   repeats=w.repeats, on_point=show)  # fmt: skip
    else:
        points = loadgen.run_points(base_url, model.name, prompts, _loads(w), opts, repeats=w.repeats, on_point=show)
    result.throughput = points
    for p in points:
        if p["failed"]:
            raise ProbeError(f"{p['failed']} of {p['requests']} requests failed at {p['label']}: {p['errors'][0]}")


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
    other pins compare against, so a run without the reference pin still has something to compare to."""

    def __init__(self, ctx: RunContext, model: ModelSpec, items: list[accuracy.Item], extra: list[str] | None = None) -> None:
        w, t = ctx.matrix.workload, ctx.matrix.thresholds
        key = json.dumps([model.source, model.kind, list(agreement.PROMPTS[: w.agreement_prompts]), w.agreement_max_tokens,
                          t.top_logprobs, list(model.serve_args), accuracy.items_digest(items) if items else None]
                         + ([extra] if extra else []))  # fmt: skip
        self.digest = hashlib.sha256(key.encode()).hexdigest()[:12]
        self.dir = ctx.paths.data_dir / "references" / ctx.matrix.backend / ctx.platform / model.name
        self.ref_version = ctx.matrix.platforms[ctx.platform].reference.text

    def _path(self, version: str) -> Path:
        return self.dir / f"{path_safe(version)}-{self.digest}.json"

    def save(self, version: str, outputs: dict[str, Any]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self._path(version).with_suffix(".tmp")
        tmp.write_text(json.dumps(outputs), encoding="utf-8")
        os.replace(tmp, self._path(version))

    def load(self) -> dict[str, Any] | None:
        path = self._path(self.ref_version)
        return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def _agree(ctx: RunContext, result: CellResult, model: ModelSpec, ours: dict[str, Any], reference: dict[str, Any] | None) -> None:
    t = ctx.matrix.thresholds
    ref_version = ctx.matrix.platforms[ctx.platform].reference.text
    if result.is_reference:
        result.agreement = {"reference": True}
        result.checks.append(Check(group="agreement", name="agreement.reference", passed=True,
                                   detail="this is the reference pin; its outputs are stored for the others").to_dict())  # fmt: skip
        return
    if reference is None:
        # Not a disagreement, so the cell does not fail; but an unevaluated required check keeps
        # the pin from being recommended (see recommend._rejection).
        note = f"not compared: reference pin {ref_version} has no stored outputs for these settings (run its cell first)"
        result.agreement = {"note": "not compared"}
        result.warnings.append(note)
        name = "agreement.transcripts" if model.kind == "stt" else "agreement.greedy"
        result.checks.append(Check(group="agreement", name=name, passed=None, detail=note).to_dict())
        return
    if model.kind == "embedding":
        result.checks.append(agreement.evaluate_embeddings(ours["embeddings"], reference["embeddings"], ref_version).to_dict())
        return
    thresholds = agreement.Thresholds(
        top_k=t.top_logprobs, max_disagreeing_prompts=t.max_disagreeing_prompts, max_diverging_prompts=t.max_diverging_prompts,
        min_divergence_position=t.min_divergence_position, prompt_logprob_tolerance=t.prompt_logprob_tolerance,
    )  # fmt: skip
    checks, result.agreement = agreement.evaluate(ours["samples"], reference["samples"], ref_version, thresholds)
    result.checks += [c.to_dict() for c in checks]
