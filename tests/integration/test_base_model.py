"""A base model (kind = "completion", no chat template) is probed with completions only, passes, and can be
recommended: no chat request of any kind reaches its server."""

from __future__ import annotations

from pathlib import Path

from harness.cell import RunContext, run_cell
from harness.install import InstallPaths
from harness.report import write_reports
from harness.results import Status
from harness.slots import Slot
from harness.spec import parse_matrix
from tests.support.scripted_backend import install_manual_pin


def test_a_base_model_is_recommended_without_a_chat_check(tmp_path: Path) -> None:
    model = tmp_path / "base.gguf"
    model.write_bytes(b"GGUF")
    matrix = parse_matrix(
        {
            "backend": "scripted",
            "platforms": {
                "cpu": {
                    "package": "scripted-server",
                    "versions": ["1.0.0", "2.0.0"],
                    "reference": "1.0.0",
                    "models": [{"name": "base", "source": f"file://{model}", "kind": "completion"}],
                }
            },
            "workload": {"output_tokens": 4, "concurrency": [1], "requests_per_level": 2, "agreement_prompts": 2},
            "accuracy": {"tasks": ["copy"], "items_per_task": 4},
            "thresholds": {"startup_deadline_s": 20},
        },
        "base.toml",
    )
    ctx = RunContext(
        matrix=matrix,
        platform="cpu",
        paths=InstallPaths(data_dir=tmp_path / "data", bin_dir=tmp_path / "bin", pipx=("false",)),
        run_dir=tmp_path / "run",
        slot=Slot(platform="cpu"),
    )
    plat = matrix.platforms["cpu"]
    results = []
    for pin in plat.versions:
        install_manual_pin(ctx.paths.bin_dir, pin.pin.text)
        results.append(run_cell(ctx, pin, plat.models[0]))
    for r in results:
        assert r.status is Status.PASSED, r.reason
        assert not [c.name for c in r.checks if c.name.startswith("chat.")], [c.name for c in r.checks]
        assert "chat" not in r.conformance_s
    _, recs = write_reports(matrix, ctx.run_dir, "run", results)
    assert recs[0].version in ("1.0.0", "2.0.0"), recs[0].reasons
