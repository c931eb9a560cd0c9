"""The real GPUStack 2.3.0 server from PyPI, started here on Debian's PostgreSQL with its gateway off and no
worker: the harness creates a model through the API, sees it not schedule ("No available workers", GPUStack's
own reason) within the startup deadline, and deletes it, leaving the server with no models.

GPUStack is installed in its own venv in the data dir (it pins its own pytest-asyncio, setuptools...), once;
PostgreSQL runs from its Debian binaries in a temp dir for the test only."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from harness.install import default_data_dir
from harness.launch import free_port

ROOT = Path(__file__).resolve().parents[2]
GPUSTACK = "gpustack==2.3.0"
PG_BIN = Path("/usr/lib/postgresql/15/bin")
PASSWORD = "Pinmatrix-test-1"


def _gpustack() -> Path:
    venv = default_data_dir() / "tools" / "gpustack-2.3.0"
    exe = venv / "bin" / "gpustack"
    if not (venv / ".complete").exists():
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True)
        pip = subprocess.run(
            [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", GPUSTACK], capture_output=True, text=True
        )
        if pip.returncode != 0:
            pytest.skip(f"{GPUSTACK} does not install here: {(pip.stderr or pip.stdout).strip().splitlines()[-1:]}")
        (venv / ".complete").write_text("ok\n")
    return exe


def _as_postgres(argv: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: as the postgres user then."""
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


@pytest.fixture
def postgres() -> Iterator[str]:
    if not (PG_BIN / "initdb").exists():
        pytest.skip("Debian's PostgreSQL 15 is not installed (apt-get install postgresql)")
    root = Path(tempfile.mkdtemp(prefix="pinmatrix-pg-"))  # pytest's tmp dirs are root-only: postgres cannot enter
    root.chmod(0o755)
    data = root / "pg"
    data.mkdir()
    if os.geteuid() == 0:
        shutil.chown(data, "postgres")
    subprocess.run(
        _as_postgres([str(PG_BIN / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres"]),
        check=True,
        capture_output=True,
    )
    port = free_port()
    options = f"-p {port} -k {data} -c listen_addresses=127.0.0.1"
    start = [str(PG_BIN / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(data / "log"), "-w", "start"]
    subprocess.run(_as_postgres(start), check=True, capture_output=True, timeout=60)
    try:
        subprocess.run(
            ["psql", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "-c", "create database gpustack"],
            check=True,
            capture_output=True,
            timeout=30,
        )
        yield f"postgresql://postgres@127.0.0.1:{port}/gpustack"
    finally:
        subprocess.run(
            _as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "fast", "stop"]), capture_output=True
        )
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def gpustack_server(tmp_path: Path, postgres: str) -> Iterator[tuple[str, str]]:
    """The server's API URL and an API key made through its own login."""
    exe = _gpustack()
    api = free_port()
    argv = [str(exe), "start", "--database-url", postgres, "--gateway-mode", "disabled", "--port", str(free_port())]
    argv += ["--api-port", str(api), "--data-dir", str(tmp_path / "gsdata"), "--bootstrap-password", PASSWORD]
    argv += ["--disable-update-check", "--disable-metrics", "--disable-worker-metrics"]
    log = (tmp_path / "gpustack.log").open("w")
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{api}"
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"gpustack exited {proc.returncode}: {(tmp_path / 'gpustack.log').read_text()[-2000:]}")
            try:
                if httpx.get(f"{url}/v2/models", timeout=2).status_code == 401:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(1)
        with httpx.Client(base_url=url, timeout=30) as c:
            assert c.post("/auth/login", data={"username": "admin", "password": PASSWORD}).status_code == 200
            key = c.post("/v2/api-keys", json={"name": "pinmatrix-test"}).json()["value"]
            c.post("/v2/clusters", json={"name": "pinmatrix-test", "provider": "Docker"}).raise_for_status()
        yield url, key
    finally:
        os.killpg(proc.pid, 15)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
        log.close()


def test_the_real_server_refuses_to_schedule_and_is_left_with_no_model(
    tmp_path: Path, gpustack_server: tuple[str, str]
) -> None:
    url, key = gpustack_server
    matrix = tmp_path / "real.toml"
    matrix.write_text(f"""
backend = "vllm"
[platforms.gpustack]
gpustack = {{ url = "{url}", api_key_env = "PM_REAL_GPUSTACK_KEY", backend = "vLLM", poll_s = 0.5 }}
versions = ["0.11.0"]
reference = "0.11.0"
[[platforms.gpustack.models]]
name = "qwen2.5-0.5b-instruct"
source = "hf://Qwen/Qwen2.5-0.5B-Instruct@7ae557604adf67be50417f59c2c2f167def9a775"
[thresholds]
startup_deadline_s = 60
""")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            str(matrix),
            "--data-dir",
            str(tmp_path / "data"),
            "--reports-dir",
            str(tmp_path / "reports"),
            "--run-id",
            "real",
            "--no-history",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PM_REAL_GPUSTACK_KEY": key},
    )
    out = proc.stdout + proc.stderr
    (cell,) = [
        json.loads(ln) for ln in (tmp_path / "reports" / "vllm" / "real" / "results.jsonl").read_text().splitlines()
    ]
    assert cell["failure_class"] == "startup-failed", out[-3000:]
    # GPUStack's own words for why: "pending: No available workers" once its scheduler has looked (measured
    # ~25 s after create here), "analyzing: Evaluating resource requirements" before
    assert re.fullmatch(r"GPUStack: not running after 60 s \(pinmatrix-\S+ (pending|analyzing): .+\)", cell["reason"])
    assert cell["startup"]["cold"]["phases"].get("pending_s") is not None  # the states seen, as startup phases
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30) as c:
        assert c.get("/v2/models").json()["items"] == []  # what the harness created, it deleted
    assert key not in out
    assert "pinmatrix" not in (tmp_path / "data" / "gpustack" / "created.jsonl").read_text()
