"""The whole flow (plugin -> install -> launch -> probes -> results -> reports) on the scripted backend."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jsonschema
import pytest

from harness.results import SCHEMA_FILE
from tests.conftest import which_or_skip
from tests.support.scripted_backend import install_manual_pin, pid_alive

ROOT = Path(__file__).resolve().parents[2]


def _matrix(tmp_path: Path, versions: str, reference: str, model: Path, deadline: float = 20) -> Path:
    path = tmp_path / "scripted.toml"
    path.write_text(f"""
backend = "scripted"
[platforms.cpu]
package = "scripted-server"
versions = [{versions}]
reference = "{reference}"
[[platforms.cpu.models]]
name = "tiny"
source = "file://{model}"
[workload]
output_tokens = 6
concurrency = [1, 2]
requests_per_level = 4
agreement_prompts = 3
agreement_max_tokens = 4
[thresholds]
startup_deadline_s = {deadline}
throughput_noise = 0.5
""")
    return path


def _pytest(tmp_path: Path, matrix: Path, *extra: str) -> list[str]:
    fake_pipx = tmp_path / "fake-pipx"
    fake_pipx.write_text("#!/bin/sh\necho 'ERROR: No matching distribution found for scripted-server==4.0.0'\nexit 1\n")
    fake_pipx.chmod(0o755)
    return [
        sys.executable,
        "-m",
        "pytest",
        "-p",
        "tests.support.scripted_backend",
        "-p",
        "no:cacheprovider",
        str(matrix),
        "--data-dir",
        str(tmp_path / "data"),
        "--bin-dir",
        str(tmp_path / "bin"),
        "--pipx-path",
        str(fake_pipx),
        "--reports-dir",
        str(tmp_path / "reports"),
        "--platform",
        "cpu",
        *extra,
    ]


def _run(tmp_path: Path, matrix: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(_pytest(tmp_path, matrix, *extra), cwd=ROOT, capture_output=True, text=True, timeout=240)


def test_matrix_run_records_every_cell_and_recommends(tmp_path: Path, gguf_model: Path) -> None:
    bin_dir = tmp_path / "bin"
    install_manual_pin(bin_dir, "1.0.0")
    install_manual_pin(bin_dir, "2.0.0")
    install_manual_pin(bin_dir, "3.0.0", "--mode", "wrong-usage")
    install_manual_pin(bin_dir, "5.0.0", "--mode", "exit")
    versions = (
        '"1.0.0", "2.0.0", "3.0.0", { version = "4.0.0", expect = "install-failed", why = "not on the index" }, "5.0.0"'
    )
    matrix = _matrix(tmp_path, versions, "1.0.0", gguf_model)
    proc = _run(tmp_path, matrix, "--junitxml", str(tmp_path / "junit.xml"), "--run-id", "r1")
    out = proc.stdout
    assert proc.returncode == 1, out + proc.stderr
    assert "2 failed, 2 passed, 1 xfailed" in out
    assert "recommended pin for tiny on cpu: scripted 2.0.0" in out
    assert "[scripted_1.0.0-tiny-cpu] waiting for ready (cold start) on http://127.0.0.1:" in out

    run_dir = tmp_path / "reports" / "scripted" / "r1"
    lines = [json.loads(ln) for ln in (run_dir / "results.jsonl").read_text().splitlines()]
    by_version = {c["version"]: c for c in lines}
    assert lines[0]["version"] == "1.0.0"  # the reference pin runs first
    assert by_version["1.0.0"]["status"] == "passed" and by_version["1.0.0"]["startup"]["cold"]["seconds"] > 0
    assert by_version["2.0.0"]["agreement"]["identical"] == 3
    # the default workload.paired = "auto": on this CPU both servers fit, so every load point ran in paired rounds
    # against the deployed pin's server (one wave of c requests a side per round), the deployed pin's own against a twin
    assert by_version["1.0.0"]["pairing"].startswith("paired with 1.0.0 (both servers up together)")
    assert by_version["2.0.0"]["pairing"].startswith("paired with 1.0.0 (both servers up together)")
    for lvl, c in zip(by_version["2.0.0"]["throughput"], (1, 2), strict=True):
        assert len(lvl["runs"]) >= 10 and lvl["label"] == f"c={c}" and lvl["unit"] == "output tok/s"
        assert all(run["output_tokens"] == 6 * run["completed"] == 6 * c for run in lvl["runs"])
    assert [len(p["rounds"]) >= 10 for p in by_version["2.0.0"]["paired"]] == [True, True]
    machine = by_version["2.0.0"]["fingerprint"]["machine"]
    assert (
        machine["cores"] > 0
        and machine["cpu_model"]
        and by_version["2.0.0"]["fingerprint"]["launch_argv"][0].endswith("scripted_2.0.0")
    )
    timed = by_version["2.0.0"]
    assert set(timed["probe_s"]) == {"conformance", "agreement", "accuracy", "load c=1", "load c=2"}
    assert sum(timed["probe_s"].values()) <= timed["phases"]["probes"] and timed["phases"]["calibration"] > 0.5
    assert 0 <= timed["wall_s"] - sum(timed["phases"].values()) < 0.5 * timed["wall_s"]  # the harness's own share
    assert by_version["3.0.0"]["failure_class"] == "failed"
    assert "chat.shape" in by_version["3.0.0"]["reason"]
    assert by_version["4.0.0"]["failure_class"] == "install-failed"
    assert by_version["4.0.0"]["reason"] == "pipx install: No matching distribution found for scripted-server==4.0.0"
    assert by_version["4.0.0"]["log_path"].endswith("logs/install/scripted_4.0.0.log")
    assert by_version["5.0.0"]["failure_class"] == "startup-failed"
    assert "RuntimeError: scripted failure at start" in by_version["5.0.0"]["reason"]

    pins = json.loads((run_dir / "pins.json").read_text())
    assert pins["models"][0]["backend_version"] == "2.0.0"
    assert pins["models"][0]["executable"] == "scripted_2.0.0"
    # a pin put in the bin dir by hand is exported as exactly that, never as a pipx command
    assert pins["models"][0]["install"] == {
        "kind": "manual",
        "executable": "scripted_2.0.0",
        "path": str(bin_dir / "scripted_2.0.0"),
    }
    results = json.loads((run_dir / "results.json").read_text())
    jsonschema.validate(results, json.loads(SCHEMA_FILE.read_text()))
    md = (run_dir / "report.md").read_text()
    for v in ("1.0.0", "2.0.0", "3.0.0", "4.0.0", "5.0.0"):
        assert f"scripted_{v}" in md
    assert "INSTALL-FAILED (expected)" in md
    assert "- harness overhead: " in md and "Where the time went: 5 cells, " in md
    assert (tmp_path / "reports" / "scripted" / "latest").resolve() == run_dir.resolve()
    junit = (tmp_path / "junit.xml").read_text()
    assert 'tests="5"' in junit and "cell[scripted_3.0.0-tiny-cpu]" in junit


def test_a_ci_step_summary_gets_the_first_screen(tmp_path: Path, gguf_model: Path) -> None:
    install_manual_pin(tmp_path / "bin", "1.0.0", "--token-delay", "0.02")
    install_manual_pin(tmp_path / "bin", "2.0.0", "--token-delay", "0.02", "--slowdown", "4")  # shown: slower
    matrix = _matrix(tmp_path, '"1.0.0", "2.0.0"', "1.0.0", gguf_model)
    summary = tmp_path / "step-summary.md"
    proc = subprocess.run(
        _pytest(tmp_path, matrix, "--run-id", "gh"),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, "GITHUB_STEP_SUMMARY": str(summary)},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    text = summary.read_text()
    assert "## Recommendation" in text and "## Verdicts against the deployed pin" in text and "## Summary" in text
    assert "## Details" not in text
    assert "verdict: 2.0.0 vs 1.0.0 (deployed): output tok/s" in proc.stdout, proc.stdout[-3000:]


def test_k_selects_cells(tmp_path: Path, gguf_model: Path) -> None:
    install_manual_pin(tmp_path / "bin", "1.0.0")
    install_manual_pin(tmp_path / "bin", "2.0.0")
    matrix = _matrix(tmp_path, '"1.0.0", "2.0.0"', "1.0.0", gguf_model)
    proc = _run(tmp_path, matrix, "-k", "2.0.0", "--run-id", "k")
    assert "1 passed, 1 deselected" in proc.stdout, proc.stdout + proc.stderr
    cells = (tmp_path / "reports" / "scripted" / "k" / "results.jsonl").read_text().splitlines()
    assert [json.loads(c)["version"] for c in cells] == ["2.0.0"]


def test_spec_errors_are_reported_whole(tmp_path: Path, gguf_model: Path) -> None:
    matrix = _matrix(tmp_path, '"1.0.0", "oops!"', "9.9", gguf_model)
    proc = _run(tmp_path, matrix)
    assert proc.returncode == 2
    assert f"{matrix}: platforms.cpu.versions[1]: invalid version 'oops!': not a PEP 440 version" in proc.stdout
    assert f"{matrix}: platforms.cpu.reference: '9.9' is not one of versions" in proc.stdout


@pytest.mark.parametrize("kind", ["a-file", "read-only"])
def test_an_unusable_reports_dir_is_one_line_before_any_install(tmp_path: Path, gguf_model: Path, kind: str) -> None:
    install_manual_pin(tmp_path / "bin", "1.0.0")
    reports = tmp_path / "reports"
    if kind == "a-file":
        reports.write_text("not a directory")
    else:
        reports.mkdir()
        reports.chmod(0o500)
    matrix = _matrix(tmp_path, '"1.0.0"', "1.0.0", gguf_model)
    try:
        proc = _run(tmp_path, matrix, "--run-id", "x")
    finally:
        reports.chmod(0o700)
    if kind == "read-only" and os.geteuid() == 0 and not proc.returncode:  # root writes anywhere
        pytest.skip("root ignores directory permissions")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = [ln for ln in proc.stdout.splitlines() if "--reports-dir" in ln]
    assert lines and lines[0].startswith(f"{matrix}: --reports-dir {reports}: cannot write reports there ("), (
        proc.stdout
    )
    assert "Traceback" not in proc.stdout and "installing" not in proc.stdout
    assert len(proc.stdout.splitlines()) < 40


def test_a_plain_http_download_url_is_refused_at_collection_unless_allowed(tmp_path: Path) -> None:
    matrix = tmp_path / "dl.toml"
    matrix.write_text(f"""backend = "my-dl"
[custom]
run_command = "srv --port {{{{port}}}}"
installer = "download"
download_url = "http://mirror.invalid/{{{{version}}}}/srv.zip"
[platforms.cpu]
versions = ["1.0"]
reference = "1.0"
[[platforms.cpu.models]]
name = "m"
source = "file://{matrix}"
""")
    refused = _run(tmp_path, matrix, "--collect-only")
    assert refused.returncode == 2
    assert (
        f"{matrix}: custom.download_url: plain http needs --allow-http-mirror, got 'http://mirror.invalid/{{{{version}}}}/srv.zip'"
        in refused.stdout
    ), refused.stdout
    allowed = _run(tmp_path, matrix, "--collect-only", "--allow-http-mirror")
    assert allowed.returncode == 0 and "cell[my-dl_1.0-m-cpu]" in allowed.stdout, allowed.stdout


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_interrupt_stops_the_server_and_keeps_finished_cells(
    tmp_path: Path, gguf_model: Path, sig: signal.Signals
) -> None:
    pids = tmp_path / "pids"
    install_manual_pin(tmp_path / "bin", "1.0.0")
    install_manual_pin(tmp_path / "bin", "2.0.0", "--mode", "hang", "--pid-file", str(pids))
    matrix = _matrix(tmp_path, '"1.0.0", "2.0.0"', "1.0.0", gguf_model, deadline=120)
    # The suite itself may run as a background job (SIGINT ignored, inherited): the harness under test gets a
    # default SIGINT, as a user's terminal gives it.
    default_int = (
        ["env", "--default-signal=INT"]
        if subprocess.run(["env", "--default-signal=INT", "true"]).returncode == 0
        else []
    )
    proc = subprocess.Popen(
        [*default_int, *_pytest(tmp_path, matrix, "--run-id", "int")],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not pids.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert pids.exists(), "the second cell's server never started"
        server_pid = int(pids.read_text().split()[0])
        assert pid_alive(server_pid)
        proc.send_signal(sig)
        out, _ = proc.communicate(timeout=120)  # stopping the server takes up to 20 s; a slow machine more
    finally:
        if proc.poll() is None:  # reaped too: a Popen collected while its process runs warns in a later test
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
    assert proc.returncode == 2, out  # pytest's "interrupted"
    assert not pid_alive(server_pid)
    run = tmp_path / "reports" / "scripted" / "int"
    cells = [json.loads(c) for c in (run / "results.jsonl").read_text().splitlines()]
    # the finished cell, and the interrupted one with what it was doing when it stopped
    assert [(c["version"], c["status"], c["failure_class"]) for c in cells] == [
        ("1.0.0", "passed", None),
        ("2.0.0", "skipped", "interrupted"),
    ]
    assert cells[1]["reason"] == "interrupted during startup"
    md = (run / "report.md").read_text()
    assert md.splitlines()[2] == "**Partial run: 1 of 2 cells ran; not run: scripted_2.0.0-tiny-cpu (interrupted).**", (
        md[:500]
    )
    assert json.loads((run / "pins.json").read_text())["partial"] == {
        "ran": 1,
        "of": 2,
        "not_run": ["scripted_2.0.0-tiny-cpu"],
    }
    assert os.path.exists(tmp_path / "reports" / "scripted" / "latest")

    # The same run id again picks up where it stopped: the finished cell is not run twice.
    install_manual_pin(tmp_path / "bin", "2.0.0")  # the pin that hung now starts
    again = _run(tmp_path, matrix, "--run-id", "int")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "[scripted_1.0.0-tiny-cpu] already recorded in this run: PASSED" in again.stdout
    lines = [json.loads(c) for c in (run / "results.jsonl").read_text().splitlines()]
    assert [(c["version"], c["status"]) for c in lines] == [
        ("1.0.0", "passed"),
        ("2.0.0", "skipped"),
        ("2.0.0", "passed"),
    ]
    results = json.loads((run / "results.json").read_text())
    assert sorted(c["version"] for c in results["cells"]) == ["1.0.0", "2.0.0"]  # every cell exactly once
    assert "partial" not in json.loads((run / "pins.json").read_text())
    assert "Partial run" not in (run / "report.md").read_text()


def test_sigkill_of_the_harness_takes_its_server_along_and_the_run_resumes(tmp_path: Path, gguf_model: Path) -> None:
    which_or_skip("setpriv")  # util-linux sets the parent-death signal; without it only the reaper helps
    pids = tmp_path / "pids"
    install_manual_pin(tmp_path / "bin", "1.0.0")
    install_manual_pin(tmp_path / "bin", "2.0.0", "--mode", "hang", "--pid-file", str(pids))
    matrix = _matrix(tmp_path, '"1.0.0", "2.0.0"', "1.0.0", gguf_model, deadline=120)
    proc = subprocess.Popen(
        _pytest(tmp_path, matrix, "--run-id", "killed"), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 60
        while not pids.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        server_pid = int(pids.read_text().split()[0])
        proc.kill()  # what an OOM killer or a CI timeout does: no handler runs
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:  # reaped too: a Popen collected while its process runs warns in a later test
            proc.kill()
            proc.wait()
    deadline = time.monotonic() + 10
    while pid_alive(server_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not pid_alive(server_pid), "the server outlived the harness"
    run = tmp_path / "reports" / "scripted" / "killed"
    assert [json.loads(c)["version"] for c in (run / "results.jsonl").read_text().splitlines()] == ["1.0.0"]

    install_manual_pin(tmp_path / "bin", "2.0.0")
    again = _run(tmp_path, matrix, "--run-id", "killed")
    assert again.returncode == 0, again.stdout + again.stderr
    results = json.loads((run / "results.json").read_text())
    assert sorted((c["version"], c["status"]) for c in results["cells"]) == [("1.0.0", "passed"), ("2.0.0", "passed")]
    assert not list((tmp_path / "data" / "servers").glob("*.json"))  # every record removed or reaped


def test_every_pin_installed_in_the_bin_dir(tmp_path: Path, gguf_model: Path) -> None:
    install_manual_pin(tmp_path / "bin", "1.0.0")
    install_manual_pin(tmp_path / "bin", "2.0.0")
    install_manual_pin(tmp_path / "bin", "v3.0")  # a `v` kept as written, as GPUStack names it
    (tmp_path / "bin" / "vllm_9.9.9").write_text("#!/bin/sh\n")  # another backend's pin: not ours
    (tmp_path / "bin" / "vllm_9.9.9").chmod(0o755)
    matrix = _matrix(tmp_path, "{ installed = true }", "1.0.0", gguf_model)
    proc = _run(tmp_path, matrix, "--run-id", "inst", "--collect-only", "-q")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    cells = [ln.split("::")[-1] for ln in proc.stdout.splitlines() if "::cell[" in ln]
    assert cells == ["cell[scripted_1.0.0-tiny-cpu]", "cell[scripted_2.0.0-tiny-cpu]", "cell[scripted_v3.0-tiny-cpu]"]


FAKE_PIPX_INSTALL = """#!{python}
# pipx at its boundary: `install --force --suffix _<v> <pkg>==<v>` makes a venv dir whose app runs the
# scripted server, linked into PIPX_BIN_DIR, as pipx lays it out.
import os, sys
from pathlib import Path
args = sys.argv[1:]
assert args[0] == "install", args
suffix = args[args.index("--suffix") + 1]
pkg = args[-1].split("==")[0]
venv = Path(os.environ["PIPX_HOME"]) / "venvs" / (pkg + suffix).replace("_", "-").replace(".", "-")
(venv / "bin").mkdir(parents=True, exist_ok=True)
app = venv / "bin" / "scripted"
app.write_text("#!/bin/sh\\nexec '{python}' '{server}' \\"$@\\"\\n")
app.chmod(0o755)
(venv / "bin" / "python").write_text("")
link = Path(os.environ["PIPX_BIN_DIR"]) / ("scripted" + suffix)
link.parent.mkdir(parents=True, exist_ok=True)
link.unlink(missing_ok=True)
link.symlink_to(app)
with open(os.environ["PIPX_HOME"] + "/installs.log", "a") as fh:
    fh.write(suffix + "\\n")
"""


def test_remove_venvs_runs_pin_by_pin_and_deletes_each_venv_after_its_last_cell(
    tmp_path: Path, gguf_model: Path
) -> None:
    from tests.support.scripted_backend import SERVER

    fake = tmp_path / "pipx-installs"
    fake.write_text(FAKE_PIPX_INSTALL.format(python=sys.executable, server=SERVER))
    fake.chmod(0o755)
    matrix = _matrix(tmp_path, '"1.0.0", "2.0.0"', "1.0.0", gguf_model)
    text = matrix.read_text() + f'[[platforms.cpu.models]]\nname = "tiny2"\nsource = "file://{gguf_model}"\n'
    matrix.write_text(text)
    argv = _pytest(tmp_path, matrix, "-v", "--remove-venvs")
    argv[argv.index("--pipx-path") + 1] = str(fake)
    proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:]
    cells = [ln.split("::")[1].split(" ")[0] for ln in proc.stdout.splitlines() if "::cell[" in ln]
    assert cells == [
        "cell[scripted_1.0.0-tiny-cpu]",
        "cell[scripted_1.0.0-tiny2-cpu]",
        "cell[scripted_2.0.0-tiny-cpu]",
        "cell[scripted_2.0.0-tiny2-cpu]",
    ]  # pin by pin
    removed = [ln for ln in proc.stdout.splitlines() if "venv (" in ln and "freed; --remove-venvs)" in ln]
    # each venv once no cell needs it: the deployed pin's after the last cell it was the paired-rounds partner of
    assert [ln.split(" venv (")[0].split("] ")[-1] for ln in removed] == [
        "removed scripted_2.0.0's",
        "removed scripted_1.0.0's",
    ] and all("[scripted_2.0.0-tiny2-cpu]" in ln for ln in removed), removed
    assert list((tmp_path / "data" / "pipx" / "venvs").iterdir()) == []
    assert not [p for p in (tmp_path / "bin").iterdir() if p.name.startswith("scripted_")]
    assert (tmp_path / "data" / "pipx" / "installs.log").read_text().split() == ["_1.0.0", "_2.0.0"]


def test_a_second_run_meets_the_first_in_history_and_a_run_dir_rebuilds_alone(tmp_path: Path, gguf_model: Path) -> None:
    install_manual_pin(tmp_path / "bin", "1.0.0")
    install_manual_pin(tmp_path / "bin", "2.0.0")
    matrix = _matrix(tmp_path, '"1.0.0", "2.0.0"', "1.0.0", gguf_model)
    first = _run(tmp_path, matrix, "--run-id", "mon")
    assert first.returncode == 0 and "history:" not in first.stdout, first.stdout[-3000:]  # nothing to compare with yet
    second = _run(tmp_path, matrix, "--run-id", "tue")
    assert second.returncode == 0, second.stdout[-3000:]
    # 4 requests per point: below the 7 a median needs, so nothing is flagged; the plumbing is what is under test
    assert "history: 2.0.0 on tiny: steady — no slower metric against the last 1 run(s)" in second.stdout
    assert (tmp_path / "data" / "history" / "scripted" / "cpu" / "tiny" / "2.0.0.jsonl").read_text().count("\n") == 2
    run_dir = tmp_path / "reports" / "scripted" / "tue"
    info = json.loads((run_dir / "run.json").read_text())
    assert info["expected"] == ["scripted_1.0.0-tiny-cpu", "scripted_2.0.0-tiny-cpu"] and info["references"] == {
        "cpu": "1.0.0"
    }
    before = json.loads((run_dir / "pins.json").read_text())
    (run_dir / "report.md").unlink()
    rebuilt = subprocess.run(
        [sys.executable, "-m", "harness", "report", str(run_dir), "--data-dir", str(tmp_path / "data")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert (
        json.loads((run_dir / "pins.json").read_text()) == before
        and "## History" in (run_dir / "report.md").read_text()
    )


def test_two_shards_merged_give_the_cells_and_recommendation_of_the_whole_run(tmp_path: Path, gguf_model: Path) -> None:
    for v in ("1.0.0", "2.0.0", "3.0.0"):
        install_manual_pin(tmp_path / "bin", v)
    matrix = _matrix(tmp_path, '"1.0.0", "2.0.0", "3.0.0"', "1.0.0", gguf_model)
    whole = _run(tmp_path, matrix, "--run-id", "whole", "--no-history")
    assert whole.returncode == 0, whole.stdout[-3000:]
    for i in (1, 2):
        shard = _run(tmp_path, matrix, "--run-id", f"s{i}", "--shard", f"{i}/2", "--no-history")
        assert shard.returncode == 0 and "1 deselected" in shard.stdout, shard.stdout[
            -3000:
        ]  # the reference runs in both
    reports = tmp_path / "reports" / "scripted"
    merged = subprocess.run(
        [
            sys.executable,
            "-m",
            "harness",
            "report",
            str(reports / "s1"),
            str(reports / "s2"),
            "--out",
            str(reports / "merged"),
            "--no-history",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert merged.returncode == 0, merged.stderr
    assert "note: scripted_1.0.0-tiny-cpu: run s2's result is kept over run s1's" in merged.stdout
    cells = {
        p: sorted(c["cell_id"] for c in json.loads((reports / p / "results.json").read_text())["cells"])
        for p in ("whole", "merged")
    }
    assert (
        cells["merged"]
        == cells["whole"]
        == ["scripted_1.0.0-tiny-cpu", "scripted_2.0.0-tiny-cpu", "scripted_3.0.0-tiny-cpu"]
    )
    recs = {
        p: json.loads((reports / p / "pins.json").read_text())["models"][0]["backend_version"]
        for p in ("whole", "merged")
    }
    assert recs["merged"] == recs["whole"] == "3.0.0"
    only_one = subprocess.run(
        [
            sys.executable,
            "-m",
            "harness",
            "report",
            str(reports / "s1"),
            "--out",
            str(reports / "half"),
            "--no-history",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert only_one.returncode == 0 and "Partial run: 2 of 3 cells ran" in (reports / "half" / "report.md").read_text()
    bad = _run(tmp_path, matrix, "--shard", "3/2")
    assert bad.returncode != 0 and "--shard '3/2': expected i/n with 1 <= i <= n" in bad.stderr + bad.stdout


def test_under_xdist_every_cell_compares_with_a_reference_that_finished_first(tmp_path: Path, gguf_model: Path) -> None:
    for v in ("1.0.0", "2.0.0", "3.0.0"):
        install_manual_pin(tmp_path / "bin", v)
    matrix = _matrix(tmp_path, '"1.0.0", "2.0.0", "3.0.0"', "1.0.0", gguf_model)
    matrix.write_text(
        matrix.read_text() + f'[[platforms.cpu.models]]\nname = "tiny2"\nsource = "file://{gguf_model}"\n'
    )
    proc = _run(tmp_path, matrix, "-n", "2", "--run-id", "x", "--no-history")
    assert proc.returncode == 0 and "6 passed" in proc.stdout, proc.stdout[-3000:]
    cells = [
        json.loads(ln) for ln in (tmp_path / "reports" / "scripted" / "x" / "results.jsonl").read_text().splitlines()
    ]
    for model in ("tiny", "tiny2"):
        ref = next(c for c in cells if c["model"] == model and c["is_reference"])
        for other in (c for c in cells if c["model"] == model and not c["is_reference"]):
            assert other["agreement"]["kind"] == "greedy", other["agreement"]  # compared, never "not compared"
            assert other["started_at"] >= ref["finished_at"]


def test_remove_venvs_under_xdist_never_removes_a_venv_another_worker_still_needs(
    tmp_path: Path, gguf_model: Path
) -> None:
    from tests.support.scripted_backend import SERVER

    fake = tmp_path / "pipx-installs"
    fake.write_text(FAKE_PIPX_INSTALL.format(python=sys.executable, server=SERVER))
    fake.chmod(0o755)
    matrix = _matrix(tmp_path, '"1.0.0", "2.0.0"', "1.0.0", gguf_model)
    matrix.write_text(
        matrix.read_text()
        + "".join(f'[[platforms.cpu.models]]\nname = "m{i}"\nsource = "file://{gguf_model}"\n' for i in range(3))
    )
    argv = _pytest(tmp_path, matrix, "-n", "2", "--remove-venvs", "--run-id", "rv", "--no-history")
    argv[argv.index("--pipx-path") + 1] = str(fake)
    proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0 and "8 passed" in proc.stdout, proc.stdout[-3000:]
    assert (
        list((tmp_path / "data" / "pipx" / "venvs").iterdir()) == []
    )  # removed in the end, each once all its cells ran


def _gpu_matrix(tmp_path: Path, model: Path, per_cell: int, name: str) -> Path:
    path = tmp_path / f"{name}.toml"
    models = "".join(f'[[platforms.cuda.models]]\nname = "{m}"\nsource = "file://{model}"\n' for m in ("a", "b"))
    path.write_text(f"""backend = "scripted"
[platforms.cuda]
package = "scripted-server"
versions = ["1.0.0", "2.0.0", "3.0.0", "4.0.0"]
reference = "1.0.0"
gpus_per_cell = {per_cell}
{models}[workload]
output_tokens = 4
concurrency = [1]
requests_per_level = 2
agreement_prompts = 2
agreement_max_tokens = 4
[accuracy]
tasks = []
[thresholds]
startup_deadline_s = 20
""")
    return path


@pytest.mark.parametrize(("per_cell", "workers"), [(1, "auto"), (2, "4")])
def test_gpu_slots_under_xdist_never_share_a_gpu_and_the_reference_goes_first(
    tmp_path: Path, gguf_model: Path, per_cell: int, workers: str
) -> None:
    """A fake 4-GPU machine (PINMATRIX_GPUS): TP=1 gets 4 workers from `-n auto`;
    TP=2 on 4 workers has 2 slots to share."""
    for v in ("1.0.0", "2.0.0", "3.0.0", "4.0.0"):
        install_manual_pin(tmp_path / "bin", v)
    matrix = _gpu_matrix(tmp_path, gguf_model, per_cell, f"tp{per_cell}")
    argv = [a for a in _pytest(tmp_path, matrix, "-n", workers, "--run-id", "g", "--no-history") if a != "cpu"]
    argv[argv.index("--platform") + 1 : argv.index("--platform") + 1] = ["cuda"]
    proc = subprocess.run(
        argv, cwd=ROOT, capture_output=True, text=True, timeout=300, env={**os.environ, "PINMATRIX_GPUS": "0,1,2,3"}
    )
    assert proc.returncode == 0 and "8 passed" in proc.stdout, proc.stdout[-3000:]
    assert "4 workers [8 items]" in proc.stdout
    cells = [
        json.loads(ln) for ln in (tmp_path / "reports" / "scripted" / "g" / "results.jsonl").read_text().splitlines()
    ]
    spans = []
    for c in cells:
        gpus = c["fingerprint"]["launch_env"]["CUDA_VISIBLE_DEVICES"]
        assert len(gpus.split(",")) == per_cell and c["fingerprint"]["slot"] == f"cuda:{gpus}"
        spans.append((set(gpus.split(",")), c["started_at"], c["finished_at"], c["cell_id"]))
    for i, (g1, s1, e1, id1) in enumerate(spans):
        for g2, s2, e2, id2 in spans[i + 1 :]:
            assert not (g1 & g2 and s1 < e2 and s2 < e1), f"{id1} and {id2} held GPU {g1 & g2} at once"
    for model in ("a", "b"):
        ref = next(c for c in cells if c["model"] == model and c["is_reference"])
        assert all(
            c["started_at"] >= ref["finished_at"] for c in cells if c["model"] == model and not c["is_reference"]
        )


def test_a_cell_needing_more_gpus_than_the_machine_has_is_skipped_with_the_reason(
    tmp_path: Path, gguf_model: Path
) -> None:
    matrix = _gpu_matrix(tmp_path, gguf_model, 8, "tp8")
    argv = [a for a in _pytest(tmp_path, matrix, "-rs", "--no-history") if a != "cpu"]
    argv[argv.index("--platform") + 1 : argv.index("--platform") + 1] = ["cuda"]
    proc = subprocess.run(
        argv, cwd=ROOT, capture_output=True, text=True, timeout=120, env={**os.environ, "PINMATRIX_GPUS": "0,1,2,3"}
    )
    assert "8 skipped" in proc.stdout and "needs 8 GPU(s) per cell; this machine has 4" in proc.stdout, proc.stdout[
        -3000:
    ]
