"""Verdicts on scripted pins, real processes and real timing: an A/A pair never differs, a slower pin is slower."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.cell import RunContext, run_cell
from harness.install import InstallPaths
from harness.report import verdicts
from harness.results import Status
from harness.slots import Slot
from harness.spec import parse_matrix
from harness.verdict import Verdict
from harness.words import VerdictWord
from tests.support.scripted_backend import install_manual_pin


def _verdicts(tmp_path: Path, seed: int, slow_delay: float, output_tokens: int = 8) -> list[Verdict]:
    """The two cells measured one after the other, judged as the report judges them (the matrix's margins:
    sequential cells at sequential_noise, the calibration's drift at machine_drift)."""
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF")
    matrix = parse_matrix(
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
            # 10 ms per token: the pin's own pace dominates the machine's jitter, as a real server's does
            "workload": {
                "seed": seed,
                "output_tokens": output_tokens,
                "concurrency": [2],
                "requests_per_level": 10,
                "agreement_prompts": 1,
                "warmup_requests": 1,
                "paired": False,  # cells one after the other, judged at sequential_noise
            },
            "accuracy": {"tasks": []},
            # machine_drift: under `pytest -n 2` on two cores another worker's tests make the machine move by design
            "thresholds": {"startup_deadline_s": 20, "machine_drift": 0.5},
        },
        "aa.toml",
    )
    install_manual_pin(tmp_path / "bin", "1.0.0", "--token-delay", "0.01")
    install_manual_pin(tmp_path / "bin", "2.0.0", "--token-delay", str(slow_delay))
    ctx = RunContext(
        matrix=matrix,
        platform="cpu",
        paths=InstallPaths(data_dir=tmp_path / "data", bin_dir=tmp_path / "bin", pipx=("false",)),
        run_dir=tmp_path / "run",
        slot=Slot(platform="cpu"),
    )
    plat = matrix.platforms["cpu"]
    ref, other = run_cell(ctx, plat.versions[0], plat.models[0]), run_cell(ctx, plat.versions[1], plat.models[0])
    assert ref.status is Status.PASSED and other.status is Status.PASSED, (ref.reason, other.reason)
    return verdicts(matrix, [ref, other])


@pytest.mark.parametrize("seed", range(10))
def test_an_aa_pair_is_never_slower_or_faster(tmp_path: Path, seed: int) -> None:
    """Never a difference; "equivalent" where the interval shows it, else "inconclusive" with its bound."""
    found = _verdicts(tmp_path, seed, 0.01)
    words = {v.word for v in found}
    assert len(found) == 3 and words <= {VerdictWord.EQUIVALENT, VerdictWord.INCONCLUSIVE}, [v.line for v in found]


def test_a_pin_30_percent_slower_is_called_slower_cell_by_cell(tmp_path: Path) -> None:
    """Cell by cell the margin is the sequential ±15%: a test of "slower" must sit well past it. A pin with 25% more
    time per token measures ×0.81 [0.80, 0.82] on output tok/s on an idle machine, and measured ×0.85 [0.82, 0.90]
    ("inconclusive") in CI, where the machine moved between the two cells: that is the sequential noise the margin
    is for. 43% more time per token over 32 tokens measures ×0.71 [0.70, 0.71], 14 points past the margin."""
    found = _verdicts(tmp_path, 0, 0.01 / 0.7, output_tokens=32)
    by_metric = {v.metric: v for v in found}
    assert by_metric["output tok/s"].word == "slower", by_metric["output tok/s"].line
    assert (by_metric["output tok/s"].high or 1.0) < 1.0
    assert by_metric["TPOT p50"].word == "slower", by_metric["TPOT p50"].line
