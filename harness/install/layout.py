"""The bin-dir and data-dir layout every installer shares (GPUStack's naming: ``<bin_dir>/<backend>_<version>``).

Data dir: ``pipx/`` (PIPX_HOME), ``uv/venvs/``, ``bin/`` (the default bin dir), ``logs/install/``, ``locks/``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..versions import split_executable_name

Progress = Callable[[str], None]


@dataclass(frozen=True, kw_only=True)
class InstallPaths:
    data_dir: Path
    bin_dir: Path
    pipx: tuple[str, ...]  # argv prefix: ("/usr/bin/pipx",) or (python, "-m", "pipx")

    @property
    def pipx_home(self) -> Path:
        return self.data_dir / "pipx"

    @property
    def uv_venvs(self) -> Path:
        return self.data_dir / "uv" / "venvs"

    @property
    def log_dir(self) -> Path:
        return self.data_dir / "logs" / "install"

    @property
    def lock_dir(self) -> Path:
        return self.data_dir / "locks"


def default_data_dir() -> Path:
    if env := os.environ.get("PINMATRIX_DATA_DIR"):
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "pinmatrix"


def pipx_command(pipx_path: str | None) -> tuple[str, ...]:
    """GPUStack's ``--pipx-path``; otherwise pipx on PATH, otherwise the one installed with us."""
    if pipx_path:
        return (pipx_path,)
    found = shutil.which("pipx")
    return (found,) if found else (sys.executable, "-m", "pipx")


def link(link: Path, target: Path) -> None:
    """Point ``link`` at ``target`` atomically (a reader never sees it missing or half-made)."""
    tmp = link.with_name(f".{link.name}.tmp")
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    tmp.symlink_to(target)
    os.replace(tmp, link)


def tree_size(root: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(root):
        for f in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, f)).st_size
    return total


def venv_and_origin(executable: Path, paths: InstallPaths) -> tuple[Path, str] | None:
    """The pipx or uv venv behind a bin-dir link and which made it, or None (not a venv we made)."""
    try:
        target = executable.resolve(strict=True)
    except OSError:
        return None
    for root, origin in ((paths.pipx_home / "venvs", "pipx"), (paths.uv_venvs, "uv")):
        venvs = root.resolve()
        if venvs in target.parents:
            return venvs / target.relative_to(venvs).parts[0], origin
    return None


def download_home(paths: InstallPaths, backend: str) -> Path:
    """Where downloaded archives of a backend are unpacked: ``<bin>/<backend>/<backend>-<version>/``."""
    return paths.bin_dir / backend


def origin_of(executable: Path, paths: InstallPaths, backend: str) -> str:
    """How a bin-dir pin got there: pipx, uv, download (unpacked under ``<bin>/<backend>/``) or manual."""
    found = venv_and_origin(executable, paths)
    if found is not None:
        return found[1]
    try:
        if download_home(paths, backend).resolve() in executable.resolve().parents:
            return "download"
    except OSError:
        pass
    return "manual"


@dataclass(frozen=True, kw_only=True)
class BinPin:
    backend: str
    version: str
    origin: str  # pipx | uv | download | manual
    path: Path


def list_pins(paths: InstallPaths) -> list[BinPin]:
    """Every ``<backend>_<version>`` executable in the bin dir (GPUStack's naming), with its origin."""
    out: list[BinPin] = []
    if not paths.bin_dir.is_dir():
        return out
    for entry in sorted(paths.bin_dir.iterdir()):
        parsed = split_executable_name(entry.name)
        if parsed is None or not (entry.is_file() and os.access(entry, os.X_OK)):
            continue
        out.append(
            BinPin(backend=parsed[0], version=parsed[1].text, origin=origin_of(entry, paths, parsed[0]), path=entry)
        )
    return out
