from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.results import CellResult, FailureClass, ResultStore, Status


def _cell(version: str, status: Status = Status.PASSED) -> CellResult:
    return CellResult(cell_id=f"vllm_{version}-m-cpu", backend="vllm", version=version, model="m", platform="cpu",
                      is_reference=False, status=status,
                      failure_class=None if status is Status.PASSED else FailureClass.INSTALL_FAILED)


def test_round_trip_and_schema_version(tmp_path: Path) -> None:
    store = ResultStore(tmp_path / "results.jsonl")
    store.append(_cell("0.31.0"))
    store.append(_cell("0.26.0", Status.ERROR))
    line = json.loads((tmp_path / "results.jsonl").read_text().splitlines()[1])
    assert line["schema_version"] == 1
    assert line["failure_class"] == "install-failed"
    loaded = store.load()
    assert [(c.version, c.status) for c in loaded] == [("0.31.0", Status.PASSED), ("0.26.0", Status.ERROR)]


def test_a_rerun_of_a_cell_replaces_it(tmp_path: Path) -> None:
    store = ResultStore(tmp_path / "r.jsonl")
    store.append(_cell("0.32.0", Status.ERROR))
    store.append(_cell("0.32.0"))
    assert [c.status for c in store.load()] == [Status.PASSED]


def test_nan_is_stored_as_null(tmp_path: Path) -> None:
    cell = _cell("0.32.0")
    cell.startup_s = float("nan")
    store = ResultStore(tmp_path / "r.jsonl")
    store.append(cell)
    assert store.load()[0].startup_s is None


def test_unknown_schema_is_refused_with_line_number(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps({**_cell("1.0").to_dict(), "schema_version": 99}) + "\n")
    with pytest.raises(ValueError, match=r"r\.jsonl:1: schema_version 99 is not supported \(expected 1\)"):
        ResultStore(path).load()
