"""A run says what its cells should take, from history on this kind of machine."""

from __future__ import annotations

from pathlib import Path

from tests.integration.test_plugin import _matrix, _run
from tests.support.scripted_backend import install_manual_pin


def test_a_second_run_prints_each_cells_expected_time_from_history(tmp_path: Path, gguf_model: Path) -> None:
    for version in ("1.0.0", "2.0.0"):
        install_manual_pin(tmp_path / "bin", version)
    matrix = _matrix(tmp_path, '"1.0.0", "2.0.0"', "1.0.0", gguf_model)
    first = _run(tmp_path, matrix, "--run-id", "one")
    assert first.returncode == 0, first.stdout + first.stderr
    assert "history expects" not in first.stdout and "expected to take" not in first.stdout  # nothing known yet
    second = _run(tmp_path, matrix, "--run-id", "two")
    assert second.returncode == 0, second.stdout + second.stderr
    assert (
        "pinmatrix: history expects " in second.stdout and "for 2 of 2 cell(s) on this kind of machine" in second.stdout
    )
    assert "[scripted_2.0.0-tiny-cpu] expected to take ~" in second.stdout
    third = _run(tmp_path, matrix, "--run-id", "three", "--no-history")
    assert "history expects" not in third.stdout
