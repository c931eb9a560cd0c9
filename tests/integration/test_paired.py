"""Verdicts on a machine that drifts: every scripted server's time per token follows one shared wave over wall
time (x1.0 .. x1.8, a machine whose load changes, invisible to the harness's calibration). With paired rounds
an A/A twin is never called slower, faster or unstable, and a pin with 25% more time per token is "slower" at
every load point, at the 5% margin, over ten phases of the wave; measured cell by cell, the twin is flagged."""

from __future__ import annotations

from pathlib import Path

from harness.cell import RunContext, run_cell
from harness.install import InstallPaths
from harness.report import verdicts
from harness.results import CellResult, Status
from harness.slots import Slot
from harness.spec import parse_matrix
from harness.words import VerdictWord
from tests.support.scripted_backend import install_manual_pin

PERIOD_S = 12.0  # a full swing of the machine's speed every 12 s (the issue: ~40 s): cells meet different parts
NOT_ABOUT_THE_PIN = {VerdictWord.SLOWER, VerdictWord.FASTER, VerdictWord.MACHINE_UNSTABLE}


def _cells(tmp_path: Path, phase: float, *, paired: bool) -> tuple[object, list[CellResult]]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    model = tmp_path / "tiny.gguf"
    model.write_bytes(b"GGUF")
    matrix = parse_matrix(
        {
            "backend": "scripted",
            "platforms": {
                "cpu": {
                    "package": "scripted-server",
                    "versions": ["1.0.0", "1.0.1", "2.0.0"],
                    "reference": "1.0.0",
                    "models": [{"name": "tiny", "source": f"file://{model}"}],
                }
            },
            "workload": {
                "output_tokens": 6,
                "concurrency": [1, 2],
                "requests_per_level": 8,
                "repeats": 2,
                "rounds": 10,
                "max_point_s": 3,
                "agreement_prompts": 2,
                "paired": paired,  # true: pair whatever the cores (the scripted servers only sleep)
            },
            "accuracy": {"tasks": []},
            "thresholds": {"startup_deadline_s": 20, "throughput_noise": 0.05, "sequential_noise": 0.05},
        },
        "drift.toml",
    )
    ctx = RunContext(
        matrix=matrix,
        platform="cpu",
        paths=InstallPaths(data_dir=tmp_path / "data", bin_dir=tmp_path / "bin", pipx=("false",)),
        run_dir=tmp_path / "run",
        slot=Slot(platform="cpu"),
    )
    wave = ("--token-delay", "0.004", "--drift-period", str(PERIOD_S), "--drift-phase", str(phase))
    install_manual_pin(ctx.paths.bin_dir, "1.0.0", *wave)
    install_manual_pin(ctx.paths.bin_dir, "1.0.1", *wave)  # the twin: the same speed by construction
    install_manual_pin(ctx.paths.bin_dir, "2.0.0", *wave, "--slowdown", "1.25")
    plat = matrix.platforms["cpu"]
    results = [run_cell(ctx, pin, plat.models[0]) for pin in plat.versions]
    assert all(r.status is Status.PASSED for r in results), [r.reason for r in results]
    return matrix, results


def test_paired_rounds_see_the_pin_not_the_machine(tmp_path: Path) -> None:
    slow_everywhere = 0
    for seed in range(10):
        matrix, cells = _cells(tmp_path / f"s{seed}", phase=seed * PERIOD_S / 10, paired=True)
        found = verdicts(matrix, cells)
        assert cells[0].pairing.startswith("paired with 1.0.0"), cells[0].pairing  # the A/A control
        assert cells[2].pairing.startswith("paired with 1.0.0"), cells[2].pairing
        twin = [v for v in found if v.version == "1.0.1"]
        assert twin and all(v.rounds >= 10 for v in twin)
        assert not [v.line for v in twin if v.word in NOT_ABOUT_THE_PIN], seed
        slow = [v for v in found if v.version == "2.0.0" and v.metric == "output tok/s"]
        if len(slow) == 2 and all(v.word is VerdictWord.SLOWER for v in slow):
            slow_everywhere += 1
    assert slow_everywhere >= 9, slow_everywhere


def test_the_same_machine_cell_by_cell_flags_the_twin(tmp_path: Path) -> None:
    """The mechanism is what helps: without pairing, the same wave makes the twin look different."""
    flagged = 0
    for seed in range(4):
        matrix, cells = _cells(tmp_path / f"s{seed}", phase=seed * PERIOD_S / 4, paired=False)
        assert cells[1].pairing == "measured alone: workload.paired = false"
        twin = [v for v in verdicts(matrix, cells) if v.version == "1.0.1"]
        flagged += any(v.word in NOT_ABOUT_THE_PIN for v in twin)
    assert flagged >= 1, "a drifting machine should have misled cell-by-cell verdicts at least once"
