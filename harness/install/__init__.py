"""Installing pins into a GPUStack bin dir: the one entry point, ``install_pin``.

It dispatches on the installer kind and returns an ``InstallRecord`` of what it did:

    pipx      PIPX_HOME=<data>/pipx PIPX_BIN_DIR=<bin> pipx install --force --suffix _<v> <pkg>==<v>   (venv.py)
    uv        the same layout with uv venv + uv pip install                                          (venv.py)
    download  a verified archive from a mirror, unpacked into <bin>/<backend>/<backend>-<v>/          (download.py)
    manual    <bin>/<backend>_<version> put there by hand, used as is

Layers (a test keeps them): ``layout``/``record`` know nothing of backends; ``venv`` and ``download``
take a backend's flavour (``harness.backends``), which never imports this package.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import httpx

from ..backends import Backend, Host
from ..errors import InstallError
from ..versions import Pin, executable_name
from .download import DEFAULT_BASE_URL, install_archive
from .layout import BinPin, InstallPaths, Progress, default_data_dir, list_pins, pipx_command
from .record import KINDS, InstallRecord
from .venv import decisive_error, ensure_installed, pipx_shared_ready, reachable_indexes, remove_pin

__all__ = [
    "DEFAULT_BASE_URL",
    "KINDS",
    "BinPin",
    "InstallPaths",
    "InstallRecord",
    "InstallRequest",
    "decisive_error",
    "default_data_dir",
    "ensure_installed",
    "install_pin",
    "installer_kind",
    "list_pins",
    "pipx_command",
    "pipx_shared_ready",
    "reachable_indexes",
    "remove_pin",
]


@dataclass(frozen=True, kw_only=True)
class InstallRequest:
    """One pin of one backend on one platform, and where its bits come from."""

    backend: Backend
    platform: str
    pin: Pin
    package: str = ""  # pipx/uv: the PyPI project (default: the flavour's)
    installer: str = "pipx"  # the matrix's choice for package backends: pipx or uv
    extra_index_urls: tuple[str, ...] | None = None  # None: the flavour's default
    pip_args: tuple[str, ...] = ()
    download_base_url: str = DEFAULT_BASE_URL  # GPUStack's --tools-download-base-url
    allow_http: bool = False
    sha256: str | None = None  # download: the archive's hash instead of the published sha256sum.txt
    host: Host | None = None  # download: what the asset is chosen by (default: this machine, no CUDA)


def installer_kind(backend: Backend, installer: str = "pipx") -> str:
    """pipx, uv, download or manual: a download/manual backend decides; a package backend takes the matrix's."""
    return backend.installer if backend.installer in ("download", "manual") else installer


def install_pin(
    req: InstallRequest,
    paths: InstallPaths,
    *,
    progress: Progress = lambda _: None,
    transport: httpx.BaseTransport | None = None,
) -> InstallRecord:
    """``<bin_dir>/<backend>_<version>``, installed by its kind unless it is there already; what was done."""
    flavour = req.backend.flavour(req.platform)
    kind = installer_kind(req.backend, req.installer)
    if kind == "download":
        plan = flavour.download_plan(req.pin.text, req.download_base_url, req.host or Host.detect())
        return install_archive(
            req.backend.name,
            req.pin,
            paths,
            plan,
            allow_http=req.allow_http,
            sha256=req.sha256,
            transport=transport,
            progress=progress,
        )
    if kind == "manual":
        exe = paths.bin_dir / executable_name(req.backend.name, req.pin)
        if not exe.exists():
            raise InstallError(f"no {exe.name} in {paths.bin_dir}: put the pin's executable there (manual install)")
        return InstallRecord(kind="manual", executable=str(exe))
    if kind not in ("pipx", "uv"):
        raise InstallError(f"unknown installer {kind!r} (expected one of: {', '.join(KINDS)})")
    urls: Sequence[str] = flavour.default_extra_index_urls if req.extra_index_urls is None else req.extra_index_urls
    return ensure_installed(
        req.backend,
        flavour,
        req.package or flavour.default_package,
        req.pin,
        paths,
        installer=kind,
        extra_index_urls=urls,
        pip_args=req.pip_args,
        progress=progress,
    )
