from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from harness.errors import ReadinessTimeout, ServerExited
from harness.launch import HOST, Server, free_port
from tests.support.scripted_backend import SERVER, pid_alive


def _server(tmp_path: Path, mode: str) -> tuple[Server, Path]:
    port = free_port()
    pid_file = tmp_path / "pids"
    argv = [sys.executable, str(SERVER), "--host", HOST, "--port", str(port), "--mode", mode, "--pid-file", str(pid_file)]
    return Server(argv, env=dict(os.environ), log_path=tmp_path / "server.log", base_url=f"http://{HOST}:{port}",
                  readiness_path="/v1/models"), pid_file


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
