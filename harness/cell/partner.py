"""The partner of a cell's paired rounds: the deployed pin (the reference pin in this cell's baseline variant)
started beside this cell's server, or, for the deployed pin's own cell, a twin of its server (the A/A
control). Started only where both fit: on a CPU within the memory this machine has free beside the running
server; on a GPU when the launch leaves room for a second server in the slot."""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from ..errors import HarnessError, LaunchError
from ..install import install_pin
from ..launch import Server
from ..words import ModelKind
from .context import install_request
from .launcher import Launcher
from .probing import NotTogether, Probing, Together

HEADROOM = 1.5  # free memory must hold the running server's footprint this many times over, for a second one
GPU_SHARE_FLAGS = ("--gpu-memory-utilization", "--mem-fraction-static")  # vLLM, SGLang


def offer_partner(p: Probing, launcher: Launcher, ours: Server) -> None:
    """Give the probes a partner to pair with, or say why there is none."""
    ctx, result, model = launcher.ctx, launcher.result, launcher.model
    mode = ctx.matrix.workload.paired
    if model.kind not in (ModelKind.CHAT, ModelKind.COMPLETION) or mode == "never":
        return
    plat = ctx.matrix.platforms[ctx.platform]
    # whom the verdicts weigh this cell against (as report.baseline does): the deployed cell itself against a twin
    # (the A/A control); the reference pin in another launch against the deployed launch; any other cell against
    # the reference pin in its variant's baseline
    twin = result.deployed
    if result.is_baseline and not twin:
        baseline = plat.variant(result.deployed_variant)
    else:
        baseline = plat.variant(plat.variant(result.variant).baseline)
    p.partner_label = (
        result.pin_label
        if twin
        else (f"{plat.reference.text} [{baseline.name}]" if baseline.name else plat.reference.text)
    )
    args = tuple(plat.serve_args) + tuple(model.serve_args) + tuple(baseline.serve_args)
    if ctx.slot.gpus and mode == "auto" and not _shares_gpu(args if not twin else result.backend_parameters):
        p.not_paired = (
            "the two servers do not fit one GPU slot: launch with --gpu-memory-utilization 0.5 (vLLM) or "
            "--mem-fraction-static 0.4 (SGLang) to pair"
        )
        return

    log = ctx.run_dir / "cells" / result.cell_id / "server-partner.log"
    early: dict[str, tuple[Launcher, Path, Server]] = {}

    def prepare() -> tuple[Launcher, Path]:
        if not ctx.slot.gpus:
            _fits_beside(ours)
        exe = launcher.exe if twin else _reference_exe(p)
        cache = Path(tempfile.mkdtemp(prefix="pinmatrix-partner-"))
        for sub in ("vllm", "inductor", "tmp"):
            (cache / sub).mkdir()
        second = dataclasses.replace(
            launcher, exe=exe, cache_dir=cache, args=None if twin else args, env=None if twin else baseline.env
        )
        return second, cache

    def head_start() -> None:
        try:
            second, cache = prepare()
        except NotTogether:
            return  # said when the rounds ask for it
        try:
            early["spawned"] = (second, cache, second.spawn(log))
        except OSError:
            shutil.rmtree(cache, ignore_errors=True)
            return  # a start that cannot even spawn fails again, and says so, when the rounds ask for it
        p.say(f"starting the partner {p.partner_label} now: it boots while the correctness probes run")

    def release() -> None:  # a head start the rounds never took (the cell failed first, or was interrupted)
        if "spawned" in early:
            _, cache, srv = early.pop("spawned")
            srv.stop()
            shutil.rmtree(cache, ignore_errors=True)

    @contextlib.contextmanager
    def partner() -> Iterator[Together]:
        second, cache, spawned = early.pop("spawned", None) or (*prepare(), None)
        try:
            srv = second.launch(log, "partner", spawned=spawned)
        except LaunchError as exc:
            shutil.rmtree(cache, ignore_errors=True)
            raise NotTogether(f"the partner {p.partner_label} did not start beside this server: {exc}") from exc
        servers = {"ours": ours, "theirs": srv}

        def cpu_s(side: str) -> float | None:
            usage = servers[side].usage()
            return usage.cpu_s if usage is not None else None

        try:
            yield Together(url=srv.base_url, cpu_s=cpu_s)
        finally:
            srv.stop()
            shutil.rmtree(cache, ignore_errors=True)

    p.partner = partner
    p.head_start = head_start
    p.closers.append(release)


def _shares_gpu(args: Sequence[str]) -> bool:
    """A launch that takes at most half a GPU's memory leaves room for a second server in the slot."""
    for i, arg in enumerate(args):
        flag, _, value = arg.partition("=")
        if flag in GPU_SHARE_FLAGS:
            text = value or (args[i + 1] if i + 1 < len(args) else "")
            try:
                return 0 < float(text) <= 0.5
            except ValueError:
                return False
    return False


def _reference_exe(p: Probing) -> Path:
    ctx = p.ctx
    plat = ctx.matrix.platforms[ctx.platform]
    spec = next((v for v in plat.versions if v.pin == plat.reference), None)
    if spec is None:
        raise NotTogether(f"the deployed pin {plat.reference.text} is not among this run's pins")
    try:
        return Path(install_pin(install_request(ctx, spec), ctx.paths).executable)
    except HarnessError as exc:
        raise NotTogether(f"the deployed pin {plat.reference.text} is not installed here: {exc}") from exc


def _fits_beside(ours: Server) -> None:
    """Free memory enough for a second server as big as the one running (its whole process group)."""
    usage = ours.usage()
    free = _mem_available()
    if usage is None or free is None:
        return  # not Linux: try, and let a failed start say so
    used = usage.rss_bytes
    if free < used * HEADROOM:
        raise NotTogether(
            f"a second server needs about {used / 2**30:.1f} GiB and {free / 2**30:.1f} GiB is free "
            f"(x{HEADROOM:g} headroom): the points are measured cell by cell"
        )


def _mem_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None
