from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.errors import ReadinessTimeout, ServerExited
from harness.launch import HOST, Server, free_port, group_usage
from tests.conftest import which_or_skip
from tests.support.scripted_backend import SERVER, pid_alive

ROOT = Path(__file__).resolve().parents[2]


def _server(tmp_path: Path, mode: str) -> tuple[Server, Path]:
    port = free_port()
    pid_file = tmp_path / "pids"
    argv = [
        sys.executable,
        str(SERVER),
        "--host",
        HOST,
        "--port",
        str(port),
        "--mode",
        mode,
        "--pid-file",
        str(pid_file),
    ]
    return Server(
        argv,
        env=dict(os.environ),
        log_path=tmp_path / "server.log",
        base_url=f"http://{HOST}:{port}",
        readiness_path="/v1/models",
    ), pid_file


def test_ready_after_loading(tmp_path: Path) -> None:
    server, _ = _server(tmp_path, "slow-ready:0.5")
    with server:
        startup = server.wait_ready(10)
    assert 0.5 <= startup < 5


def test_exit_at_start_fails_fast_with_the_reason(tmp_path: Path) -> None:
    server, _ = _server(tmp_path, "exit")
    t0 = time.monotonic()
    with server, pytest.raises(ServerExited) as info:
        server.wait_ready(60)
    assert time.monotonic() - t0 < 10  # long before the 60 s deadline
    assert str(info.value) == "server exited with code 3 before it was ready: RuntimeError: scripted failure at start"
    assert info.value.log == tmp_path / "server.log"


def test_hang_past_deadline_times_out_and_is_killed(tmp_path: Path) -> None:
    server, pid_file = _server(tmp_path, "hang")
    with server, pytest.raises(ReadinessTimeout, match=r"server not ready after 1\.5 s"):
        server.wait_ready(1.5)
    pid = int(pid_file.read_text().split()[0])
    assert not pid_alive(pid)


def test_stop_reaches_the_whole_process_group(tmp_path: Path) -> None:
    # The child ignores SIGINT, like an engine worker that outlives its parent's first signal.
    server, pid_file = _server(tmp_path, "child")
    with server:
        server.wait_ready(10)
        for _ in range(50):
            if len(pid_file.read_text().split()) == 2:
                break
            time.sleep(0.1)
        pids = [int(p) for p in pid_file.read_text().split()]
        assert len(pids) == 2 and all(pid_alive(p) for p in pids)
    assert not any(pid_alive(p) for p in pids)


def test_server_output_goes_to_the_log(tmp_path: Path) -> None:
    server, _ = _server(tmp_path, "ok")
    with server:
        server.wait_ready(10)
    text = (tmp_path / "server.log").read_text()
    assert text.startswith("$ ")
    assert "GET /v1/models" in text


def test_a_server_dies_with_a_harness_killed_by_sigkill(tmp_path: Path) -> None:
    which_or_skip("setpriv")  # util-linux sets the parent-death signal; without it only the reaper helps
    # The harness is a process that starts a server and is then SIGKILLed (an OOM killer, a CI timeout).
    pid_file = tmp_path / "pids"
    code = f"""
import sys, time
from pathlib import Path
sys.path.insert(0, {str(ROOT)!r})
from harness.launch import Server, free_port
port = free_port()
srv = Server([sys.executable, {str(SERVER)!r}, "--port", str(port), "--mode", "hang", "--pid-file", {str(pid_file)!r}],
             env=dict(__import__("os").environ), log_path=Path({str(tmp_path / "s.log")!r}), base_url=f"http://127.0.0.1:{{port}}",
             readiness_path="/v1/models", records=Path({str(tmp_path / "servers")!r}))
srv.start()
time.sleep(600)
"""
    harness = subprocess.Popen([sys.executable, "-c", code])
    deadline = time.monotonic() + 30
    while not pid_file.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    server_pid = int(pid_file.read_text().split()[0])
    assert pid_alive(server_pid) and len(list((tmp_path / "servers").iterdir())) == 1
    harness.kill()
    harness.wait()
    deadline = time.monotonic() + 10
    while pid_alive(server_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not pid_alive(server_pid), "the server outlived its harness"


def test_a_new_run_reaps_what_a_killed_run_left(tmp_path: Path) -> None:
    from harness.launch import reap_leftovers

    records = tmp_path / "servers"
    # A server group a killed run left (started without a parent-death signal, as on a system without one)
    left = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True)
    try:
        from harness.launch import record_server

        record_server(records, left.pid, [sys.executable, "-c", "..."])
        (records / "99999999.json").write_text('{"pgid": 99999999, "start_ticks": 1, "argv0": "gone"}')  # long gone
        reaped = reap_leftovers(records)
        assert reaped == [left.pid]
        assert left.wait(timeout=10) == -9
        assert list(records.iterdir()) == []
    finally:
        if left.poll() is None:
            left.kill()


def test_group_usage_sums_the_group_and_sees_it_go_quiet() -> None:
    # a leader and a child in their own group: the child burns CPU for 0.6 s, then both sleep
    burn = "import time\nend = time.process_time() + 0.6\nwhile time.process_time() < end: pass\ntime.sleep(30)"
    leader = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', {burn!r}]); time.sleep(30)",
        ],
        start_new_session=True,
    )
    try:
        time.sleep(2.0)
        first = group_usage(leader.pid)
        time.sleep(0.5)
        second = group_usage(leader.pid)
        assert first is not None and second is not None
        assert first.cpu_s >= 0.6  # the child's burn counted in its leader's group
        assert second.cpu_s - first.cpu_s < 0.05  # quiet now
        assert first.rss_bytes > 2 * 5 * 2**20  # two Python interpreters resident
    finally:
        os.killpg(leader.pid, 9)
        leader.wait()
    after = group_usage(leader.pid)
    assert after is not None and after.rss_bytes == 0  # nobody resident in the group (a zombie keeps its CPU time)
