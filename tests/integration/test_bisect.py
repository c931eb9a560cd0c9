"""`python -m harness bisect` on scripted pins 1.0.0 ... 1.0.7 where 1.0.5 onward is slow: it names 1.0.5 in at most
4 cells, with the evidence, against real processes and real timing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.__main__ import main
from tests.support.scripted_backend import install_manual_pin

MATRIX = """
backend = "scripted"
[platforms.cpu]
package = "scripted-server"
versions = ["1.0.0"]
reference = "1.0.0"
models = [{{ name = "tiny", source = "file://{model}" }}]
[workload]
output_tokens = 8
concurrency = [2]
requests_per_level = 10
agreement_prompts = 1
warmup_requests = 1
[accuracy]
tasks = []
[thresholds]
startup_deadline_s = 20
# Under `pytest -n 2` on two cores another worker's tests come and go: the machine moves by design. The
# search is under test here; "machine unstable" has its own tests (test_verdict.py).
machine_drift = 0.5
# A release is good only where its verdicts are shown equivalent (or faster): 10 requests a point give
# intervals of several percent, so the margin fits them; the slow releases are 2x slower, far beyond it.
throughput_noise = 0.3
"""


def test_bisect_names_the_first_slow_release_within_budget(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF")
    matrix = tmp_path / "scripted.toml"
    matrix.write_text(MATRIX.format(model=model))
    for i in range(8):  # 10 ms per token, then twice that from 1.0.5 on
        install_manual_pin(tmp_path / "bin", f"1.0.{i}", "--token-delay", "0.02" if i >= 5 else "0.01")
    code = main(
        [
            "bisect",
            str(matrix),
            "--good",
            "1.0.0",
            "--bad",
            "1.0.7",
            "--versions-from",
            "installed",
            "--platform",
            "cpu",
            "--bin-dir",
            str(tmp_path / "bin"),
            "--data-dir",
            str(tmp_path / "data"),
            "--reports-dir",
            str(tmp_path / "reports"),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert "first bad release on throughput: 1.0.5 (last good: 1.0.4) — 1.0.5 vs 1.0.0 (good): output tok/s ×0." in out
    [run] = (tmp_path / "reports" / "scripted").glob("bisect-*")
    outcome = json.loads((run / "bisect.json").read_text())
    assert outcome["first_bad"] == "1.0.5" and outcome["cells_run"] <= outcome["budget"] == 4
    assert [s["version"] for s in outcome["steps"]] == ["1.0.4", "1.0.6", "1.0.5"]
    assert (
        "## Verdicts against the deployed pin" in (run / "report.md").read_text()
    )  # every cell's evidence, as any run's


def test_bisect_refuses_what_it_cannot_do(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF")
    matrix = tmp_path / "scripted.toml"
    matrix.write_text(MATRIX.format(model=model))
    common = [
        "--versions-from",
        "installed",
        "--platform",
        "cpu",
        "--bin-dir",
        str(tmp_path / "bin"),
        "--data-dir",
        str(tmp_path / "d"),
    ]
    assert main(["bisect", str(matrix), "--good", "1.0.7", "--bad", "1.0.0", *common]) == 2
    assert capsys.readouterr().err.strip() == "error: --good 1.0.7 must be older than --bad 1.0.0"
    assert main(["bisect", str(matrix), "--good", "1.0.0", "--bad", "1.0.7", "--model", "nope", *common]) == 2
    assert capsys.readouterr().err.strip() == "error: --model 'nope': not a model of platform cpu (has: tiny)"
