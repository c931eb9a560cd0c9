"""The harness's own overhead: a matrix of many cells against a fast scripted server, and what share of the
wall time no measured phase accounts for.

Every cell records its phases (install, model, calibration, startup, probes, warm start) and its wall time;
``wall - sum(phases)`` is the harness's own time in that cell (process start/stop, bookkeeping, result
writing). The run's own time on top (pytest start, collection, reports) is the process's wall time minus
the cells'. The server is tests/support/scripted_server.py with no token delay, so the harness, not a
backend, is what is timed.

    python -m benchmarks.overhead [--cells 12] [--out reports/bench/overhead.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness.results import ResultStore
from tests.support.scripted_backend import install_manual_pin

ROOT = Path(__file__).resolve().parents[1]


def matrix_text(versions: list[str], model: Path) -> str:
    listed = ", ".join(f'"{v}"' for v in versions)
    return f"""
backend = "scripted"
[platforms.cpu]
package = "scripted-server"
versions = [{listed}]
reference = "{versions[0]}"
serve_args = ["--token-delay", "0"]
[[platforms.cpu.models]]
name = "tiny"
source = "file://{model}"
[workload]
output_tokens = 16
concurrency = [1, 4]
requests_per_level = 16
agreement_prompts = 4
agreement_max_tokens = 8
paired = false  # cell by cell: what the harness adds to one server's cell
startup = ["cold", "warm"]
[accuracy]
items_per_task = 10
[thresholds]
startup_deadline_s = 30
throughput_noise = 0.5
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", type=int, default=12)
    ap.add_argument("--out", default="reports/bench/overhead.json")
    a = ap.parse_args()
    versions = [f"1.0.{i}" for i in range(a.cells)]
    with tempfile.TemporaryDirectory(prefix="pm-overhead-") as tmp:
        root = Path(tmp)
        model = root / "model" / "tiny.gguf"
        model.parent.mkdir()
        model.write_bytes(b"GGUF\x03\x00\x00\x00")  # the scripted server never reads it
        for v in versions:
            install_manual_pin(root / "bin", v)
        matrix = root / "scripted.toml"
        matrix.write_text(matrix_text(versions, model))
        argv = [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "tests.support.scripted_backend",
            "-p",
            "no:cacheprovider",
            "-q",
            str(matrix),
            "--data-dir",
            str(root / "data"),
            "--bin-dir",
            str(root / "bin"),
            "--reports-dir",
            str(root / "reports"),
            "--platform",
            "cpu",
            "--run-id",
            "overhead",
            "--no-history",
        ]
        print(f"running {a.cells} scripted cells (pins {versions[0]} .. {versions[-1]}), one after another")
        t0 = time.monotonic()
        proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, check=False)
        process_s = time.monotonic() - t0
        if proc.returncode != 0:
            print(proc.stdout[-3000:] + proc.stderr[-2000:])
            print("the scripted matrix failed: no overhead to report")
            return 1
        cells = ResultStore(root / "reports" / "scripted" / "overhead" / "results.jsonl").load()
    walls = [c.wall_s for c in cells]
    overheads = [c.overhead_s() or 0.0 for c in cells]
    phases: dict[str, float] = {}
    for c in cells:
        for name, s in c.phases.items():
            phases[name] = phases.get(name, 0.0) + s
    cell_total = sum(walls)
    run_own = process_s - cell_total
    share_cells = sum(overheads) / cell_total
    share_run = (sum(overheads) + run_own) / process_s
    print(f"\nharness overhead ({len(cells)} cells against a scripted server with no token delay):")
    print(
        f"  process wall {process_s:.1f} s; cells {cell_total:.1f} s; "
        f"run's own (pytest start, collection, reports) {run_own:.1f} s"
    )
    print("  measured phases: " + ", ".join(f"{k} {v:.1f} s" for k, v in sorted(phases.items(), key=lambda kv: -kv[1])))
    print(
        f"  per cell: wall median {statistics.median(walls):.2f} "
        f"s, overhead median {statistics.median(overheads):.3f} s "
        f"(max {max(overheads):.3f} s)"
    )
    print(
        f"  overhead share inside cells: {share_cells:.1%}; of the "
        f"whole run (cells' overhead + run's own): {share_run:.1%}"
    )
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "benchmark": "overhead",
                "cells": len(cells),
                "process_s": process_s,
                "cells_wall_s": walls,
                "cells_overhead_s": overheads,
                "phases_s": phases,
                "run_own_s": run_own,
                "overhead_share_in_cells": share_cells,
                "overhead_share_of_run": share_run,
            },
            indent=2,
        )
    )
    print(f"  written: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
