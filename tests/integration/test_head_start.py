"""The partner of a cell's paired rounds is spawned as the cell's probes begin, so it boots while the correctness
probes run instead of after them; a cell that ends before its rounds (a failed probe, an interrupt) stops the
partner as it stops its own server. Scripted servers that write their pids."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import pytest

from harness.cell import Probing, RunContext, plan_for, register, run_cell, text
from harness.errors import ProbeError
from harness.install import InstallPaths
from harness.results import Status
from harness.slots import Slot
from harness.spec import parse_matrix
from harness.words import ModelKind
from tests.support.scripted_backend import install_manual_pin, pid_alive


@pytest.fixture
def ctx(tmp_path: Path) -> RunContext:
    model = tmp_path / "tiny.gguf"
    model.write_bytes(b"GGUF")
    install_manual_pin(tmp_path / "bin", "1.0.0", "--pid-file", str(tmp_path / "pids"))
    matrix = parse_matrix(
        {
            "backend": "scripted",
            "platforms": {
                "cpu": {
                    "package": "scripted-server",
                    "versions": ["1.0.0"],
                    "reference": "1.0.0",
                    "models": [{"name": "tiny", "source": f"file://{model}"}],
                }
            },
            "workload": {
                "output_tokens": 4,
                "concurrency": [1],
                "rounds": 6,
                "max_point_s": 1,
                "agreement_prompts": 2,
                "paired": True,
                "startup": ["cold"],
            },
            "accuracy": {"tasks": []},
            "thresholds": {"startup_deadline_s": 20},
        },
        "head.toml",
    )
    return RunContext(
        matrix=matrix,
        platform="cpu",
        paths=InstallPaths(data_dir=tmp_path / "data", bin_dir=tmp_path / "bin", pipx=("false",)),
        run_dir=tmp_path / "run",
        slot=Slot(platform="cpu"),
    )


def _pids(ctx: RunContext) -> list[int]:
    path = ctx.paths.bin_dir.parent / "pids"
    return [int(line) for line in path.read_text().split()] if path.exists() else []


def test_the_partner_boots_while_the_correctness_probes_run(ctx: RunContext) -> None:
    said: list[str] = []
    ctx = dataclasses.replace(ctx, progress=said.append)
    plat = ctx.matrix.platforms["cpu"]
    result = run_cell(ctx, plat.versions[0], plat.models[0])
    assert result.status is Status.PASSED, result.reason
    assert result.pairing.startswith("paired with 1.0.0 (both servers up together)"), result.pairing
    started = next(i for i, m in enumerate(said) if m.startswith("starting the partner 1.0.0 now"))
    conformance = next(i for i, m in enumerate(said) if m.startswith("probing API conformance"))
    assert started < conformance, said
    assert len(_pids(ctx)) == 2 and not [pid for pid in _pids(ctx) if pid_alive(pid)]  # the cell's and the twin's


def test_a_cell_that_fails_before_its_rounds_stops_the_partner_it_started(ctx: RunContext) -> None:
    def fails_once_both_run(p: Probing) -> None:
        deadline = time.monotonic() + 15
        while len(_pids(p.ctx)) < 2 and time.monotonic() < deadline:  # the partner is up and has said its pid
            time.sleep(0.05)
        raise ProbeError("a probe failed before the paired rounds")

    original = plan_for(ModelKind.CHAT)
    register(original.with_probe(fails_once_both_run, before=text.api_conformance))
    try:
        plat = ctx.matrix.platforms["cpu"]
        result = run_cell(ctx, plat.versions[0], plat.models[0])
    finally:
        register(original)
    assert result.status is not Status.PASSED and "before the paired rounds" in result.reason, result.reason
    assert len(_pids(ctx)) == 2, _pids(ctx)
    assert not [pid for pid in _pids(ctx) if pid_alive(pid)]  # neither server outlives the cell
