"""What a server says about itself, through run_cell against the scripted server: the version it reports,
its token counters and its metric families; each planted fault fails exactly its check."""

from __future__ import annotations

from pathlib import Path

from harness.cell import RunContext, run_cell
from harness.install import InstallPaths
from harness.results import FailureClass, Status
from harness.slots import Slot
from harness.spec import parse_matrix
from tests.support.scripted_backend import install_manual_pin

SERVED_CHECKS = ("server.version", "metrics.token_accounting", "metrics.names")


def _ctx(tmp_path: Path, required: list[str] | None = None) -> RunContext:
    model = tmp_path / "tiny.gguf"
    model.write_bytes(b"GGUF")
    cpu: dict[str, object] = {
        "package": "scripted-server",
        "versions": ["1.0.0", "2.0.0"],
        "reference": "1.0.0",
        "models": [{"name": "tiny", "source": f"file://{model}"}],
    }
    if required is not None:
        cpu["required_metrics"] = required
    matrix = parse_matrix(
        {
            "backend": "scripted",
            "platforms": {"cpu": cpu},
            "workload": {"output_tokens": 4, "concurrency": [1], "requests_per_level": 2, "agreement_prompts": 2},
            "accuracy": {"tasks": []},
            "thresholds": {"startup_deadline_s": 20},
        },
        "served.toml",
    )
    return RunContext(
        matrix=matrix,
        platform="cpu",
        paths=InstallPaths(data_dir=tmp_path / "data", bin_dir=tmp_path / "bin", pipx=("false",)),
        run_dir=tmp_path / "run",
        slot=Slot(platform="cpu"),
    )


def _cell(ctx: RunContext, index: int, *args: str):  # type: ignore[no-untyped-def]
    plat = ctx.matrix.platforms["cpu"]
    install_manual_pin(ctx.paths.bin_dir, plat.versions[index].pin.text, *args)
    return run_cell(ctx, plat.versions[index], plat.models[0])


def _checks(result) -> dict[str, bool | None]:  # type: ignore[no-untyped-def]
    return {c.name: c.passed for c in result.checks if c.name in SERVED_CHECKS}


def test_a_server_that_is_its_pin_and_counts_right_passes(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path)
    ref = _cell(ctx, 0)
    assert ref.status is Status.PASSED, ref.reason
    assert _checks(ref) == {"server.version": True, "metrics.token_accounting": True, "metrics.names": True}
    other = _cell(ctx, 1)
    assert other.status is Status.PASSED, other.reason
    assert other.served is not None and other.served.version == "2.0.0" and other.served.tokens_match is True
    assert other.served.compared_with == "1.0.0" and other.served.added == () and other.served.removed == ()
    assert other.served.server_ttft_p50_ms is not None and other.served.client_ttft_p50_ms is not None
    assert other.served.line == "2.0.0; counters match; families +0/-0 vs 1.0.0"


def test_an_executable_that_runs_another_version_fails_server_version(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path)
    _cell(ctx, 0)
    result = _cell(ctx, 1, "--report-version", "1.9.3")
    assert result.failure_class is FailureClass.CHECK_FAILED
    assert _checks(result)["server.version"] is False and "1.9.3" in result.reason
    assert [n for n, ok in _checks(result).items() if ok is False] == ["server.version"]


def test_counters_that_disagree_with_the_usage_fail_token_accounting(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path)
    _cell(ctx, 0)
    result = _cell(ctx, 1, "--mode", "wrong-counters")
    assert [n for n, ok in _checks(result).items() if ok is False] == ["metrics.token_accounting"]
    check = next(c for c in result.checks if c.name == "metrics.token_accounting")
    assert check.detail.startswith("scripted:generation_tokens_total moved by ")
    assert "(+4)" in check.detail  # one token too many for each of the 4 requests


def test_families_added_and_a_required_one_missing(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path, required=["scripted:kv_cache_usage_perc"])
    ref = _cell(ctx, 0, "--extra-metric", "scripted:kv_cache_usage_perc")
    assert ref.status is Status.PASSED, ref.reason
    result = _cell(ctx, 1, "--extra-metric", "scripted:num_requests_waiting")
    names = next(c for c in result.checks if c.name == "metrics.names")
    assert names.passed is False and names.detail.endswith("missing required: scripted:kv_cache_usage_perc")
    assert result.served is not None and result.served.added == ("scripted:num_requests_waiting",)
    assert result.served.removed == ("scripted:kv_cache_usage_perc",)


def test_a_server_without_a_version_says_not_exposed(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path)
    result = _cell(ctx, 0, "--report-version", "")
    check = next(c for c in result.checks if c.name == "server.version")
    assert check.passed is None and check.detail == "not exposed: GET /version answered HTTP 404"
    assert result.status is Status.PASSED, result.reason
