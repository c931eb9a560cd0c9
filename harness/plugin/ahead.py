"""A fresh run's pins installed side by side, and its models fetched and converted alongside, before the
first cell is measured (nothing measured runs beside them)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from ..cell import Progress, RunContext, install_request
from ..errors import HarnessError
from ..install import install_pin, installer_kind, pipx_shared_ready
from ..models import prepare as prepare_model
from ..results import FailureClass
from ..spec import ModelSpec, PinSpec
from ..versions import executable_name

PARALLEL_INSTALLS = 2  # pins installed side by side ahead of the cells (downloads and unpacking overlap)


@dataclass(frozen=True)
class Job:
    """A cell still to run: its context, pin and model."""

    ctx: RunContext
    pin: PinSpec
    model: ModelSpec


def prepare_ahead(jobs: Sequence[Job], say: Progress) -> dict[str, str]:
    """Pins installed ``PARALLEL_INSTALLS`` side by side (pipx's shared libraries set up first) while the models
    are fetched and converted alongside: downloads, unpacking and conversion overlap instead of adding up. A
    failure here is left for its cell to meet and record. Returns executable -> how it was installed."""
    pins: dict[tuple[str, str, str], Job] = {}
    models: dict[tuple[str, str, str], Job] = {}
    for j in jobs:
        backend, platform = j.ctx.matrix.backend, j.ctx.platform
        exe = j.ctx.paths.bin_dir / executable_name(backend, j.pin.pin)
        if j.pin.expect is not FailureClass.INSTALL_FAILED and not exe.exists():
            pins.setdefault((backend, platform, j.pin.pin.text), j)
        models.setdefault((backend, platform, j.model.source), j)
    if not pins:
        return {}
    say(
        f"preparing ahead of the cells: installing {', '.join(v for _, _, v in pins)} while {len(models)} model(s) are "
        "fetched and converted alongside"
    )
    worker = threading.Thread(target=_prepare_models, args=(list(models.values()),), name="pinmatrix-models")
    worker.daemon = True
    worker.start()
    out = _install_all(list(pins.values()), say)
    worker.join()
    return out


def _prepare_models(jobs: list[Job]) -> None:
    for j in jobs:
        fmt = j.ctx.matrix.flavour(j.ctx.platform).model_format
        with contextlib.suppress(HarnessError):  # its cells say what is wrong
            prepare_model(j.model.source, fmt, j.ctx.paths.data_dir, sha256=j.model.sha256)


def _install_all(queue: list[Job], say: Progress) -> dict[str, str]:
    out: dict[str, str] = {}
    lock = threading.Lock()  # progress lines from several threads: one at a time

    def install(j: Job) -> None:
        def progress(message: str, version: str = j.pin.pin.text) -> None:
            with lock:
                say(f"[{version}] {message}")

        try:
            rec = install_pin(install_request(j.ctx, j.pin), j.ctx.paths, progress=progress)
        except HarnessError:
            return  # its cell installs again and records why it failed
        if rec.installed_now:
            out[rec.executable] = (
                f"installed ahead of the cells in {rec.seconds:.0f} s (other pins and the models alongside)"
            )
            progress(f"installed {Path(rec.executable).name} in {rec.seconds:.0f} s")

    first = queue[0].ctx
    kind = installer_kind(first.matrix.get_backend(), first.matrix.platforms[first.platform].installer)
    if kind == "pipx" and len(queue) > 1 and not pipx_shared_ready(first.paths):
        install(queue.pop(0))  # alone: pipx sets up its shared libraries on first use, not safely twice at once
    with ThreadPoolExecutor(max_workers=PARALLEL_INSTALLS) as pool:
        list(pool.map(install, queue))
    return out
