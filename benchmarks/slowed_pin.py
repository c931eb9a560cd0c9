"""Does a matrix see a pin made slower on purpose? A matrix file run as it is, plus one more pin: the deployed
(reference) pin with every engine step followed by a sleep of ``--share`` of its own duration
(``tests/support/slowed_vllm``: a bin-dir pin ``vllm_<reference>+slowed`` running the real venv's vLLM).
Prints the verdicts on the slowed pin (ratio, interval, word, rounds, the margin each was decided at) and the
run's A/A floors, and writes them as JSON; the run's own reports stay in ``--reports-dir``.

    python -m benchmarks.slowed_pin [--matrix matrices/vllm.toml] [--platform cpu] [--share 0.2]

Needs ``tomli-w`` (``pip install -e '.[test]'``). vLLM only: the hook patches vLLM's ``EngineCore``. Each step
``share`` longer means output tok/s about ``1 / (1 + share)`` of the pin's own (0.2: x0.83).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import tomli_w

from harness.backends import get_backend
from harness.install import InstallPaths, default_data_dir, ensure_installed, pipx_command
from harness.spec import load_matrix
from harness.versions import executable_name, parse_pin
from tests.support.slowed_vllm import write_pin

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]


def slowed_matrix(data: dict[str, Any], platform: str, slowed: str) -> dict[str, Any]:
    """The matrix with ``slowed`` added to the platform's versions (and only that platform kept)."""
    out = dict(data)
    plat = dict(data["platforms"][platform])
    plat["versions"] = [*plat["versions"], slowed]
    out["platforms"] = {platform: plat}
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--matrix", default=str(ROOT / "matrices" / "vllm.toml"))
    ap.add_argument("--platform", default="cpu")
    ap.add_argument("--share", type=float, default=0.2, help="each engine step this much longer (0.2: 20%%)")
    ap.add_argument("--data-dir", default=None, help="the harness's data dir (default: as the harness's)")
    ap.add_argument("--reports-dir", default="reports/bench/slowed")
    ap.add_argument("--out", default="reports/bench/slowed_pin.json")
    ap.add_argument("pytest_args", nargs="*", help="more pytest arguments (after --), e.g. -k 0.31.0")
    a = ap.parse_args()
    source, reports_dir = Path(a.matrix).resolve(), Path(a.reports_dir).resolve()
    matrix = load_matrix(source)
    if matrix.backend != "vllm":
        ap.error(f"--matrix {source}: backend {matrix.backend!r}; the slowed pin patches vLLM's engine")
    if a.platform not in matrix.platforms:
        ap.error(f"--platform {a.platform!r}: not in {source} (it has: {', '.join(matrix.platforms)})")
    plat = matrix.platforms[a.platform]
    backend = get_backend("vllm")
    data_dir = Path(a.data_dir).expanduser() if a.data_dir else default_data_dir()
    paths = InstallPaths(data_dir=data_dir, bin_dir=data_dir / "bin", pipx=pipx_command(None))
    print(f"installing the deployed pin {plat.reference.text} ({plat.package}) if it is not installed yet")
    real = ensure_installed(
        backend,
        backend.flavour(a.platform),
        plat.package,
        plat.reference,
        paths,
        extra_index_urls=plat.extra_index_urls,
        installer=plat.installer,
        progress=print,
    )
    slowed = parse_pin(f"{plat.reference.text}+slowed")
    with tempfile.TemporaryDirectory(prefix="pm-slowed-") as tmp:
        bin_dir = Path(tmp) / "bin"
        bin_dir.mkdir()
        for exe in paths.bin_dir.glob(f"{backend.name}_*"):  # the pins already installed, as they are
            (bin_dir / exe.name).symlink_to(exe.resolve())
        write_pin(bin_dir, executable_name(backend.name, slowed), Path(real.executable), a.share)
        # beside its source: paths inside a matrix resolve against the file's own directory
        derived = source.with_name(f".{source.stem}.slowed-{os.getpid()}.toml")
        derived.write_text(tomli_w.dumps(slowed_matrix(tomllib.loads(source.read_text()), a.platform, slowed.text)))
        run_id = f"slowed-{a.share:g}"
        argv = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-v", "-W", "default", str(derived)]
        argv += ["--platform", a.platform, "--bin-dir", str(bin_dir), "--data-dir", str(data_dir)]
        argv += ["--reports-dir", str(reports_dir), "--run-id", run_id, "--no-history", *a.pytest_args]
        print(f"running {source} with {slowed.text} (each engine step {a.share:.0%} longer) added")
        try:
            proc = subprocess.run(argv, cwd=ROOT, check=False)
        finally:
            derived.unlink(missing_ok=True)
    run_dir = reports_dir / backend.name / run_id
    pins_json = run_dir / "pins.json"
    if not pins_json.exists():
        print(f"no {pins_json}: the run wrote no report (pytest exit {proc.returncode})")
        return 1
    pins = json.loads(pins_json.read_text())
    verdicts = [v for v in pins["verdicts"] if v["version"].split(" [")[0] == slowed.text]  # any launch variant
    print(f"\n{slowed.text} (each engine step {a.share:.0%} longer) against {plat.reference.text}:")
    for v in verdicts:
        ci = v.get("ci95") or [float("nan"), float("nan")]
        print(
            f"  {v['version']}: {v['metric']:>13} at {v['point']}: x{v.get('ratio') or float('nan'):.2f} "
            f"[{ci[0]:.2f}, {ci[1]:.2f}] {v['verdict']} at ±{v['margin']:.1%} ({v.get('rounds') or 0} rounds)"
        )
    floors = [line for line in (run_dir / "report.md").read_text().splitlines() if "A/A floor" in line]
    print("\n".join(floors))
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "benchmark": "slowed_pin",
                "matrix": str(source),
                "share": a.share,
                "verdicts": verdicts,
                "floors": floors,
            },
            indent=2,
        )
    )
    print(f"report: {run_dir / 'report.md'}; numbers: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
