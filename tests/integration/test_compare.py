"""`python -m harness compare <run A> <run B>`: the verdict table between two runs' stored results."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

from harness.fingerprint import Fingerprint, Machine
from harness.results import ResultStore
from tests.support import cells
from tests.unit.test_verdict import _point

ROOT = Path(__file__).resolve().parents[2]
AMX = Machine(
    hostname="a",
    os="Linux",
    arch="x86_64",
    python="3.11",
    cpu_model="Xeon",
    cores=2,
    memory_bytes=1,
    cpu_flags=("avx2", "avx512f"),
)
EPYC = dataclasses.replace(AMX, cpu_model="EPYC", cpu_flags=("avx2",))


def _run(tmp_path: Path, name: str, rate: float, machine: Machine) -> Path:
    run = tmp_path / "reports" / "vllm" / name
    store = ResultStore(run / "results.jsonl")
    for version, reference in (("0.31.0", True), ("0.32.0", False)):
        store.append(
            cells.cell(
                version,
                reference=reference,
                throughput=[_point(rate if not reference else 30.0, len(name))],
                fingerprint=Fingerprint(machine=machine),
            )
        )
    return run


def test_compare_two_nights_names_each_cell_and_never_crosses_machines(tmp_path: Path) -> None:
    monday, tuesday = _run(tmp_path, "mon", 30.0, AMX), _run(tmp_path, "tue", 24.0, AMX)
    other = _run(tmp_path, "epyc", 10.0, EPYC)
    proc = subprocess.run(
        [sys.executable, "-m", "harness", "compare", str(monday), str(tuesday)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "0.32.0 (tue) vs 0.32.0 (mon): output tok/s ×0.8" in proc.stdout and "— slower" in proc.stdout
    assert "0.31.0 (tue) vs 0.31.0 (mon): output tok/s ×1.0" in proc.stdout  # the reference pin did not move
    crossed = subprocess.run(
        [sys.executable, "-m", "harness", "compare", str(monday), str(other), "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    rows = json.loads(crossed.stdout)
    assert {r["verdict"] for r in rows} == {"different machines: not compared"}
    bad = subprocess.run(
        [sys.executable, "-m", "harness", "compare", str(monday), str(tmp_path / "nope")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (
        bad.returncode == 2
        and bad.stderr.strip() == f"error: {tmp_path / 'nope'}: no results.jsonl (not a run directory)"
    )
