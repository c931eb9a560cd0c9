"""Adding a probe, as the README says: one function of ``Probing`` and one line in a plan. Run through
run_cell against the scripted server: the new check lands in the cell's result, in the plan's order, and a
failing one fails the cell like any other check."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.cell import Probing, RunContext, paired, plan_for, register, run_cell
from harness.install import InstallPaths
from harness.results import Check, FailureClass, Status
from harness.slots import Slot
from harness.spec import parse_matrix
from harness.words import ModelKind
from tests.support.scripted_backend import install_manual_pin


def served_models(p: Probing) -> None:
    """The new probe: /v1/models names exactly the served model (a check with its evidence)."""
    with p.client() as client:
        ids = [m["id"] for m in client.get("/v1/models").json()["data"]]
    ok = ids == [p.model.name]
    p.result.checks.append(Check(group="conformance", name="models.exactly_one", passed=ok, detail=f"ids {ids}"))
    p.result.notes["ran before load"] = str(not p.result.throughput)


@pytest.fixture
def ctx(tmp_path: Path) -> RunContext:
    model = tmp_path / "tiny.gguf"
    model.write_bytes(b"GGUF")
    install_manual_pin(tmp_path / "bin", "1.0.0")
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
            "workload": {"output_tokens": 4, "concurrency": [1], "requests_per_level": 2, "agreement_prompts": 2},
            "accuracy": {"tasks": []},
            "thresholds": {"startup_deadline_s": 20},
        },
        "probe.toml",
    )
    return RunContext(
        matrix=matrix,
        platform="cpu",
        paths=InstallPaths(data_dir=tmp_path / "data", bin_dir=tmp_path / "bin", pipx=("false",)),
        run_dir=tmp_path / "run",
        slot=Slot(platform="cpu"),
    )


@pytest.fixture
def chat_plan_with_the_probe():  # type: ignore[no-untyped-def]
    original = plan_for(ModelKind.CHAT)
    register(original.with_probe(served_models, before=paired.throughput))  # the one line
    yield
    register(original)


@pytest.mark.usefixtures("chat_plan_with_the_probe")
def test_a_new_probe_runs_in_its_place_and_records_its_check(ctx: RunContext) -> None:
    plat = ctx.matrix.platforms["cpu"]
    result = run_cell(ctx, plat.versions[0], plat.models[0])
    assert result.status is Status.PASSED, result.reason
    check = next(c for c in result.checks if c.name == "models.exactly_one")
    assert check.passed is True and check.detail == "ids ['tiny']"
    assert result.notes["ran before load"] == "True" and result.throughput


def test_a_new_probe_that_fails_fails_the_cell(ctx: RunContext) -> None:
    def server_is_v2(p: Probing) -> None:  # a check the scripted server cannot pass
        with p.client() as client:
            status = client.get("/v2/health").status_code
        p.result.checks.append(
            Check(group="conformance", name="v2.health", passed=status == 200, detail=f"HTTP {status}")
        )

    original = plan_for(ModelKind.CHAT)
    register(original.with_probe(server_is_v2))
    try:
        plat = ctx.matrix.platforms["cpu"]
        result = run_cell(ctx, plat.versions[0], plat.models[0])
    finally:
        register(original)
    assert result.status is Status.FAILED and result.failure_class is FailureClass.CHECK_FAILED
    assert result.reason == "failed: v2.health (HTTP 404)"


def test_without_the_line_the_probe_does_not_run(ctx: RunContext) -> None:
    plat = ctx.matrix.platforms["cpu"]
    result = run_cell(ctx, plat.versions[0], plat.models[0])
    assert result.status is Status.PASSED, result.reason
    assert "models.exactly_one" not in {c.name for c in result.checks}
