"""What a cell runs with: the run's context, the cell's id, this machine, and a timer for its phases."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import functools
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from ..backends import Host
from ..fingerprint import Machine
from ..install import DEFAULT_BASE_URL, InstallPaths, InstallRequest
from ..slots import Slot, cuda_driver_version
from ..spec import Matrix, PinSpec

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
    # executable -> how it was installed ahead of the cells
    prepared: Mapping[str, str] = dataclasses.field(default_factory=dict)


def cell_id(backend: str, pin: str, model: str, platform: str, variant: str = "") -> str:
    return f"{backend}_{pin}-{model}-{platform}" + (f"-{variant}" if variant else "")


def now() -> str:
    # milliseconds: cells on GPU slots, who overlapped whom
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")


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


@contextlib.contextmanager
def timed(into: dict[str, float], name: str) -> Iterator[None]:
    """Seconds spent in the block, added to ``into[name]`` (also when it raises)."""
    t0 = time.monotonic()
    try:
        yield
    finally:
        into[name] = into.get(name, 0.0) + time.monotonic() - t0
