"""Each planted fault fails exactly the check it should; the well-behaved server passes them all.

The cells run in-process through run_cell (the product's code path) against the scripted server,
installed as manual bin-dir pins: 1.0.0 behaves (the reference), 2.0.0 misbehaves one way.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from harness.cell import RunContext, run_cell
from harness.install import InstallPaths
from harness.probes.accuracy import builtin_items
from harness.results import CellResult, FailureClass, Status, TextAccuracy
from harness.slots import Slot
from harness.spec import parse_matrix
from tests.support.scripted_backend import install_manual_pin, run_second_pin

SEED = 5
TASKS = ("arithmetic", "copy")
ITEMS = 20


def _matrix(model: Path):
    return parse_matrix(
        {
            "backend": "scripted",
            "platforms": {
                "cpu": {
                    "package": "scripted-server",
                    "versions": ["1.0.0", "2.0.0"],
                    "reference": "1.0.0",
                    "models": [{"name": "tiny", "source": f"file://{model}"}],
                }
            },
            "workload": {
                "seed": SEED,
                "output_tokens": 4,
                "concurrency": [1],
                "requests_per_level": 2,
                "agreement_prompts": 4,
                "agreement_max_tokens": 4,
            },
            "accuracy": {"tasks": list(TASKS), "items_per_task": ITEMS},
            "thresholds": {"startup_deadline_s": 20},
        },
        "planted.toml",
    )


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory: pytest.TempPathFactory):
    """The reference cell once; every fault compares against its stored outputs."""
    tmp = tmp_path_factory.mktemp("planted")
    model = tmp / "tiny.gguf"
    model.write_bytes(b"GGUF")
    answers = tmp / "answers.json"
    answers.write_text(json.dumps({i.prompt: i.answer for t in TASKS for i in builtin_items(t, ITEMS, SEED)}))
    install_manual_pin(tmp / "bin", "1.0.0", "--answers", str(answers))
    matrix = _matrix(model)
    ctx = RunContext(
        matrix=matrix,
        platform="cpu",
        paths=InstallPaths(data_dir=tmp / "data", bin_dir=tmp / "bin", pipx=("false",)),
        run_dir=tmp / "run",
        slot=Slot(platform="cpu"),
    )
    plat = matrix.platforms["cpu"]
    ref = run_cell(ctx, plat.versions[0], plat.models[0])
    assert ref.status is Status.PASSED, ref.reason
    return ctx, answers


@pytest.mark.parametrize(
    ("mode", "expected_failures"),
    [
        ("ok", set()),
        ("wrong-usage", {"chat.shape", "completion.shape"}),
        ("stop-ignored", {"completion.stop"}),
        ("stream-differs", {"stream.equals_plain"}),
        ("special-tokens", {"chat.template_applied"}),
        ("error-500", {"error.negative_max_tokens", "error.unknown_model", "error.bad_json"}),
        ("diverge", {"agreement.greedy"}),
        ("dumb", {"accuracy.tasks"}),
        ("degenerate", {"accuracy.no_degeneration", "agreement.greedy"}),
    ],
)
def test_planted_fault_fails_exactly_its_check(reference_run, mode: str, expected_failures: set[str]) -> None:
    ctx, answers = reference_run
    result, failed = run_second_pin(ctx, "--answers", str(answers), "--mode", mode)
    assert failed == expected_failures, [c for c in result.checks if c.passed is not True]
    assert all(c.passed is True for c in result.checks if c.name not in expected_failures)
    if expected_failures:
        assert (result.status, result.failure_class) == (Status.FAILED, FailureClass.CHECK_FAILED)
        for name in expected_failures:
            assert name in result.reason
            check = next(c for c in result.checks if c.name == name)
            assert check.detail and check.evidence, check
    else:
        assert result.status is Status.PASSED, result.reason
        assert result.agreement is not None and result.agreement.identical == 4
        assert isinstance(result.accuracy, TextAccuracy) and result.accuracy.overall.accuracy == 1.0


@pytest.mark.parametrize(("mode", "agrees"), [("ok", True), ("diverge", False)])
def test_embedding_model_probes(tmp_path: Path, mode: str, agrees: bool) -> None:
    model = tmp_path / "emb.gguf"
    model.write_bytes(b"GGUF")
    matrix = parse_matrix(
        {
            "backend": "scripted",
            "platforms": {
                "cpu": {
                    "package": "scripted-server",
                    "versions": ["1.0.0", "2.0.0"],
                    "reference": "1.0.0",
                    "models": [
                        {"name": "emb", "source": f"file://{model}", "kind": "embedding", "normalized_embeddings": True}
                    ],
                }
            },
            "thresholds": {"startup_deadline_s": 20},
        },
        "emb.toml",
    )
    install_manual_pin(tmp_path / "bin", "1.0.0")
    install_manual_pin(tmp_path / "bin", "2.0.0", "--mode", mode)
    ctx = RunContext(
        matrix=matrix,
        platform="cpu",
        paths=InstallPaths(data_dir=tmp_path / "data", bin_dir=tmp_path / "bin", pipx=("false",)),
        run_dir=tmp_path / "run",
        slot=Slot(platform="cpu"),
    )
    plat = matrix.platforms["cpu"]
    ref = run_cell(ctx, plat.versions[0], plat.models[0])
    got = run_cell(ctx, plat.versions[1], plat.models[0])
    names = {c.name: c.passed for c in got.checks}
    assert ref.status is Status.PASSED, ref.reason
    assert names["embeddings.dimension_stable"] is True and names["embeddings.unit_norm"] is True
    assert names["agreement.embeddings"] is agrees
    assert not got.throughput and not got.accuracy  # text-generation probes do not apply


def test_warm_start_and_phases_are_recorded(tmp_path: Path) -> None:
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF")
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
                "startup": ["cold", "warm"],
                "profile": "rate",
                "rates": [50.0],
                "repeats": 2,
                "requests_per_level": 4,
                "output_tokens": 3,
                "agreement_prompts": 2,
            },
            "accuracy": {"tasks": []},
            "slo": {"ttft_ms": 10000},
        },
        "warm.toml",
    )
    install_manual_pin(tmp_path / "bin", "1.0.0")
    ctx = RunContext(
        matrix=matrix,
        platform="cpu",
        paths=InstallPaths(data_dir=tmp_path / "data", bin_dir=tmp_path / "bin", pipx=("false",)),
        run_dir=tmp_path / "run",
        slot=Slot(platform="cpu"),
    )
    plat = matrix.platforms["cpu"]
    result = run_cell(ctx, plat.versions[0], plat.models[0])
    assert result.status is Status.PASSED, result.reason
    assert set(result.startup) == {"cold", "warm"}
    for start in result.startup.values():
        assert start.seconds > 0 and "boot_s" in start.phases
        # the server's own "serving" line was seen at a poll no later than the first ready answer
        assert start.log_ready_s is not None and start.log_ready_s <= start.seconds + 0.15
    (point,) = result.throughput
    assert point.label == "rate=50/s" and len(point.runs) == 2 and point.ci95 is not None
    assert point.run.goodput_req_s == pytest.approx(point.run.request_s)
    assert (tmp_path / "run" / "cells" / result.cell_id / "server-warm.log").exists()


def _one_pin(
    tmp_path: Path,
    *server_args: str,
    workload: dict | None = None,
    thresholds: dict | None = None,
    progress: list[str] | None = None,
) -> CellResult:
    """One scripted pin (started with ``server_args``) run as a one-cell matrix: the fault cases below."""
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF")
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
                "output_tokens": 3,
                "concurrency": [1],
                "requests_per_level": 2,
                "agreement_prompts": 2,
                **(workload or {}),
            },
            "accuracy": {"tasks": []},
            "thresholds": {"startup_deadline_s": 20, **(thresholds or {})},
        },
        "fault.toml",
    )
    install_manual_pin(tmp_path / "bin", "1.0.0", *server_args)
    ctx = RunContext(
        matrix=matrix,
        platform="cpu",
        paths=InstallPaths(data_dir=tmp_path / "data", bin_dir=tmp_path / "bin", pipx=("false",)),
        run_dir=tmp_path / "run",
        slot=Slot(platform="cpu"),
        progress=progress.append if progress is not None else lambda _: None,
    )
    plat = matrix.platforms["cpu"]
    return run_cell(ctx, plat.versions[0], plat.models[0])


def test_a_server_killed_mid_throughput_is_named_and_stops_the_load(tmp_path: Path) -> None:
    said: list[str] = []
    result = _one_pin(
        tmp_path,
        "--mode",
        "die-in-load:6",  # the 4 token-accounting requests (streamed, ignore_eos like the load) come first
        workload={"concurrency": [1, 2], "requests_per_level": 4, "warmup_requests": 0},
        progress=said,
    )
    # SIGKILL out of the blue is what the kernel's OOM killer sends: its own class, the signal in the reason
    assert (result.status, result.failure_class) == (Status.ERROR, FailureClass.OUT_OF_MEMORY)
    # then the log's decisive line (which line that is depends on what the server printed last: not pinned here)
    assert result.reason.startswith("server exited on signal 9 (SIGKILL) during load point c=1: "), result.reason
    assert result.log_path.endswith("server.log") and "killed during load" in result.log_excerpt
    assert not any(line.startswith("c=2") for line in said)  # the next point never ran against a dead server


def test_a_stream_that_stalls_mid_response_is_ended_by_the_request_timeout(tmp_path: Path) -> None:
    t0 = time.monotonic()
    result = _one_pin(
        tmp_path, "--mode", "stall-stream", workload={"warmup_requests": 0}, thresholds={"request_timeout_s": 1.5}
    )
    assert time.monotonic() - t0 < 30  # not the hour the server would keep it open
    assert (result.status, result.failure_class) == (Status.ERROR, FailureClass.PROBE_FAILED)
    # the first streamed requests with ignore_eos are the token-accounting ones (then the load's): they stall
    assert result.reason.startswith("4 of 4 token-accounting requests failed: ReadTimeout"), result.reason


def test_a_port_taken_before_the_server_binds_it_is_retried_on_another(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import socket

    import harness.cell.launcher
    from harness.launch import free_port

    squatter = socket.socket()
    squatter.bind(("127.0.0.1", 0))
    squatter.listen()
    ports = iter([squatter.getsockname()[1]])  # the first port handed out is taken by someone else by then
    monkeypatch.setattr(harness.cell.launcher, "free_port", lambda: next(ports, None) or free_port())
    said: list[str] = []
    try:
        result = _one_pin(tmp_path, progress=said)
    finally:
        squatter.close()
    assert result.status is Status.PASSED, result.reason
    assert any("was taken before the server bound it; starting again on another port" in line for line in said)


def test_out_of_memory_at_start_is_its_own_class(tmp_path: Path) -> None:
    result = _one_pin(tmp_path, "--mode", "oom")
    assert (result.status, result.failure_class) == (Status.ERROR, FailureClass.OUT_OF_MEMORY)
    assert result.reason == (
        "server exited with code 1 before it was ready: torch.OutOfMemoryError: CUDA out of memory. "
        "Tried to allocate 20.00 GiB"
    )


def test_a_reference_pin_whose_text_loops_fails_on_its_own(tmp_path: Path) -> None:
    """Every other check is relative to the reference: a model broken for all pins must still fail somewhere."""
    model = tmp_path / "tiny.gguf"
    model.write_bytes(b"GGUF")
    install_manual_pin(tmp_path / "bin", "1.0.0", "--mode", "degenerate")
    matrix = _matrix(model)
    ctx = RunContext(
        matrix=matrix,
        platform="cpu",
        paths=InstallPaths(data_dir=tmp_path / "data", bin_dir=tmp_path / "bin", pipx=("false",)),
        run_dir=tmp_path / "run",
        slot=Slot(platform="cpu"),
    )
    plat = matrix.platforms["cpu"]
    ref = run_cell(ctx, plat.versions[0], plat.models[0])
    assert ref.status is Status.FAILED and "accuracy.no_degeneration (4 of 4 greedy answers loop" in ref.reason
