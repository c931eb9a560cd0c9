"""Command line: pin management without running cells.

    python -m harness install <backend> <version>... [--bin-dir DIR] [--data-dir DIR] [--pipx-path P] [--platform cpu]
    python -m harness pins [--bin-dir DIR] [--data-dir DIR]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .backends import get_backend, known_backends
from .errors import HarnessError, InstallError
from .install import InstallPaths, default_data_dir, ensure_installed, list_pins, pipx_command
from .slots import default_platform, discover_gpus
from .versions import InvalidPin, parse_pin


def _paths(a: argparse.Namespace) -> InstallPaths:
    data = Path(a.data_dir).expanduser() if a.data_dir else default_data_dir()
    bin_dir = Path(a.bin_dir).expanduser() if a.bin_dir else data / "bin"
    return InstallPaths(data_dir=data.resolve(), bin_dir=bin_dir.resolve(), pipx=pipx_command(getattr(a, "pipx_path", None)))


def cmd_install(a: argparse.Namespace) -> int:
    backend = get_backend(a.backend)
    flavour = backend.flavour(a.platform or default_platform(discover_gpus()))
    paths, failed = _paths(a), 0
    for text in a.versions:

        def progress(message: str, version: str = text) -> None:
            print(f"[{a.backend} {version}] {message}", flush=True)

        try:
            pin = parse_pin(text)
            inst = ensure_installed(backend, flavour, a.package or flavour.default_package, pin, paths,
                                    extra_index_urls=flavour.default_extra_index_urls, progress=progress)  # fmt: skip
        except (InvalidPin, InstallError) as exc:
            print(f"[{a.backend} {text}] FAILED: {exc}", file=sys.stderr)
            failed += 1
            continue
        state = "installed" if inst.installed_now else "already installed"
        print(f"{inst.executable}  ({state}, {inst.origin}, {inst.seconds:.1f} s, {inst.size_bytes / 2**30:.2f} GiB)")
    return 1 if failed else 0


def cmd_pins(a: argparse.Namespace) -> int:
    paths = _paths(a)
    rows = list_pins(paths)
    if not rows:
        print(f"no pins in {paths.bin_dir}")
    for row in rows:
        print(f"{row.backend:<12} {row.version:<16} {row.origin:<9} {row.path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m harness", description="Pin management for GPUStack bin dirs.")
    sub = ap.add_subparsers(dest="command", required=True)
    for name in ("install", "pins"):
        p = sub.add_parser(name)
        p.add_argument("--bin-dir")
        p.add_argument("--data-dir")
        if name == "install":
            p.add_argument("backend", help=f"one of: {', '.join(known_backends())}")
            p.add_argument("versions", nargs="+")
            p.add_argument("--pipx-path")
            p.add_argument("--platform", choices=("cpu", "cuda"))
            p.add_argument("--package", help="PyPI package (default: the backend flavour's)")
    a = ap.parse_args(argv)
    try:
        return cmd_install(a) if a.command == "install" else cmd_pins(a)
    except HarnessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
