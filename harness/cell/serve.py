"""A cell's server, from the free GPU it waits for to its last stop: launched on a free port (again on
another when a port is taken in between), probed by the plan it is handed while alive, timed against the
machine's own speed before and after, restarted warm where the workload asks, and judged on its checks.
It is handed the probes to run and never imports the plans."""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from ..errors import MachineBusy, ProbeError
from ..launch import Server, decisive_line, log_tail
from ..results import CellResult, FailureClass, Status
from ..safe import shorten
from ..slots import GpuMemorySampler, wait_for_free_memory
from ..spec import ModelSpec
from ..stability import Stability, calibrate
from .context import RunContext, timed
from .launcher import Launcher
from .partner import offer_partner
from .probing import Probing

Probes = Callable[[Probing], None]


def serve_and_probe(
    ctx: RunContext, result: CellResult, model: ModelSpec, model_path: Path, exe: Path, probes: Probes
) -> None:
    # Short and fresh per cell: vLLM binds ZMQ IPC sockets under TMPDIR, and a socket path may not
    # exceed 107 bytes, so the report dir is too deep for it.
    cache_dir = Path(tempfile.mkdtemp(prefix="pinmatrix-"))
    try:
        for sub in ("vllm", "inductor", "tmp"):
            (cache_dir / sub).mkdir()
        launcher = Launcher(ctx=ctx, result=result, model=model, model_path=model_path, exe=exe, cache_dir=cache_dir)
        _serve(launcher, probes)
    finally:
        shutil.rmtree(cache_dir, ignore_errors=True)


def _serve(launcher: Launcher, probes: Probes) -> None:
    ctx, result = launcher.ctx, launcher.result
    cell_dir = ctx.run_dir / "cells" / result.cell_id
    log_path = cell_dir / "server.log"
    result.log_path = str(log_path)
    _wait_for_free_gpus(ctx)
    ctx.progress("timing the machine (calibration, ~0.5 s)")
    with timed(result.phases, "calibration"):
        before = calibrate()
    with GpuMemorySampler(ctx.slot.gpus) as gpu_memory:
        srv = launcher.launch(log_path, "cold")
        p = Probing(ctx=ctx, result=result, model=launcher.model, base_url=srv.base_url)
        try:
            result.phases["startup"] = result.startup["cold"].seconds
            offer_partner(p, launcher, srv)
            _probe(srv, p, probes)
        finally:
            for close in p.closers:
                close()
            srv.stop()
        _stability(ctx, result, before)
        if "warm" in ctx.matrix.workload.startup:
            # Same cache dirs as the cold start: what a restart of an already-deployed pin costs.
            with timed(result.phases, "warm start"):
                launcher.launch(cell_dir / "server-warm.log", "warm").stop()
    result.gpu_memory_peak_mib = {str(g): round(v, 1) for g, v in gpu_memory.peaks_mib.items()}
    judge_checks(ctx, result, log_path)


def _wait_for_free_gpus(ctx: RunContext) -> None:
    if not ctx.slot.gpus:
        return
    t = ctx.matrix.thresholds
    ctx.progress(f"waiting for GPU {','.join(map(str, ctx.slot.gpus))} to be free (< {t.gpu_free_mib:g} MiB used)")
    busy = wait_for_free_memory(ctx.slot.gpus, max_used_mib=t.gpu_free_mib, timeout_s=t.gpu_free_wait_s)
    if busy is not None:
        raise MachineBusy(busy)


def _probe(srv: Server, p: Probing, probes: Probes) -> None:
    def alive(during: str) -> None:
        """A server that died is named as such, not as the connection errors its death causes."""
        if (how := srv.exit_description()) is not None:
            raise ProbeError(f"server {how} during {during}: {decisive_line(srv.log_path)}")

    p.alive = alive
    t0 = time.monotonic()
    try:
        probes(p)
    except ProbeError as exc:
        if (how := srv.exit_description()) is not None and not str(exc).startswith("server "):
            raise ProbeError(f"server {how} during probes: {decisive_line(srv.log_path)}") from exc
        raise
    finally:
        p.result.phases["probes"] = time.monotonic() - t0


def _stability(ctx: RunContext, result: CellResult, before: float) -> None:
    with timed(result.phases, "calibration"):
        after = calibrate()
    result.stability = Stability(before_mb_s=before, after_mb_s=after)
    if (drift := result.stability.drift()) is not None and abs(drift) > ctx.matrix.thresholds.machine_drift:
        result.warnings.append(
            f"the machine's speed moved {drift:+.0%} while this cell ran (calibration "
            f"{before:.0f} -> {result.stability.after_mb_s:.0f} MB/s): its timings are not comparable"
        )


def judge_checks(ctx: RunContext, result: CellResult, log_path: Path | None) -> None:
    """Known, accepted deviations are waived (still reported, no longer blocking); a blocking failed check
    fails the cell."""
    policy = ctx.matrix.policy
    waived = policy.waived_checks
    result.checks = [
        dataclasses.replace(c, waived=waived[c.name]) if c.passed is False and c.name in waived else c
        for c in result.checks
    ]
    failed = [c for c in result.checks if c.blocking(policy.required_checks)]
    if failed:
        result.status, result.failure_class = Status.FAILED, FailureClass.CHECK_FAILED
        result.reason = "failed: " + ", ".join(f"{c.name} ({shorten(c.detail, 120)})" for c in failed)
        result.log_excerpt = log_tail(log_path, lines=25) if log_path is not None else ""
