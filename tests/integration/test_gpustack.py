"""A GPUStack 2.x server as a platform, through the plugin, against the stand-in server (tests/support): each
pin deployed by the API with its backend_version, its identity checked, probed through /v1 with the key,
and deleted; the key never written anywhere; a killed run's models deleted by the next, and only those."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.gpustack_standin import running

ROOT = Path(__file__).resolve().parents[2]
KEY = "gpustack_test_key_7f3a9c"  # a key that must appear in no file and no output


def _matrix(tmp_path: Path, url: str, versions: list[str], *, deadline: int = 30, extra: str = "") -> Path:
    path = tmp_path / "gpustack.toml"
    quoted = ", ".join(f'"{v}"' for v in versions)
    path.write_text(f"""
backend = "vllm"
[platforms.gpustack]
gpustack = {{ url = "{url}", api_key_env = "PM_TEST_GPUSTACK_KEY", backend = "vLLM", poll_s = 0.1 }}
versions = [{quoted}]
reference = "{versions[0]}"
serve_args = ["--max-model-len", "4096"]
{extra}
[[platforms.gpustack.models]]
name = "qwen2.5-0.5b-instruct"
source = "hf://Qwen/Qwen2.5-0.5B-Instruct@7ae557604adf67be50417f59c2c2f167def9a775"
[workload]
output_tokens = 8
concurrency = [1]
requests_per_level = 8
repeats = 2
agreement_prompts = 2
[accuracy]
tasks = []
[thresholds]
startup_deadline_s = {deadline}
throughput_noise = 0.3
""")
    return path


def _argv(tmp_path: Path, matrix: Path, *extra: str) -> list[str]:
    return [
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
        "--no-history",
        *extra,
    ]


def _env() -> dict[str, str]:
    return {**os.environ, "PM_TEST_GPUSTACK_KEY": KEY}


def test_five_versions_on_gpustack(tmp_path: Path) -> None:
    versions = {
        "0.31.0": "ok",  # the reference
        "0.32.0": "ok",
        "0.30.0": "slow:0.03",  # 15x the time per token
        "0.33.0": "runs:0.32.0",  # GPUStack silently runs another version
        "0.29.0": "error:CUDA out of memory. Tried to allocate 20.00 GiB",
    }
    with running(KEY, versions) as standin:
        matrix = _matrix(tmp_path, standin.url, list(versions))
        proc = subprocess.run(
            _argv(tmp_path, matrix, "--run-id", "g1"),
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=400,
            env=_env(),
        )
        out = proc.stdout + proc.stderr
        assert not standin.models, standin.models  # every model the run created is gone
        assert not [p for p in standin.processes.values() if p.poll() is None]
        posted = [body for method, path, body in standin.requests if (method, path) == ("POST", "/v2/models")]
    assert proc.returncode == 1, out[-4000:]
    run_dir = tmp_path / "reports" / "vllm" / "g1"
    cells = {c["version"]: c for c in (json.loads(ln) for ln in (run_dir / "results.jsonl").read_text().splitlines())}
    assert cells["0.31.0"]["status"] == "passed" and cells["0.32.0"]["status"] == "passed", out[-3000:]
    substituted = {c["name"]: c for c in cells["0.33.0"]["checks"]}["server.version"]
    assert substituted["passed"] is False and substituted["detail"].startswith("asked 0.33.0, GPUStack runs 0.32.0")
    assert cells["0.29.0"]["failure_class"] == "startup-failed"
    assert "CUDA out of memory. Tried to allocate 20.00 GiB" in cells["0.29.0"]["reason"]
    assert "recommended pin for qwen2.5-0.5b-instruct on gpustack: vllm 0.32.0" in out or (
        "recommended pin for qwen2.5-0.5b-instruct on gpustack: vllm 0.31.0" in out
    ), out[-3000:]
    assert "0.30.0" in out and "slower" in out  # the slow version's verdict
    slow = [ln for ln in out.splitlines() if ln.startswith("verdict: 0.30.0") and "output tok/s" in ln]
    assert slow and "— slower" in slow[0], slow
    body = next(b for b in posted if b["backend_version"] == "0.32.0")
    assert body["restart_on_error"] is False and body["enable_model_route"] is True
    assert body["source"] == "huggingface" and body["huggingface_repo_id"] == "Qwen/Qwen2.5-0.5B-Instruct"
    assert body["backend_parameters"] == ["--max-model-len", "4096"] and body["name"].startswith("pinmatrix-")
    # the key: in no file the run wrote, and not in its output
    assert KEY not in out
    for path in [*(tmp_path / "reports").rglob("*"), *(tmp_path / "data").rglob("*")]:
        if path.is_file():
            assert KEY.encode() not in path.read_bytes(), path
    pins = json.loads((run_dir / "pins.json").read_text())
    entry = pins["models"][0]
    assert (
        entry["deployment"]["backend"] == "vLLM" and entry["deployment"]["backend_version"] == entry["backend_version"]
    )
    assert entry["measured_on"] == "gpustack-NVIDIA H100 80GB HBM3"


def test_a_killed_run_leaves_a_record_and_the_next_deletes_exactly_its_models(tmp_path: Path) -> None:
    with running(KEY, {"0.31.0": "start-delay:60"}) as standin:
        matrix = _matrix(tmp_path, standin.url, ["0.31.0"], deadline=120)
        proc = subprocess.Popen(
            _argv(tmp_path, matrix, "--run-id", "k1"),
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=_env(),
            start_new_session=True,
        )
        ledger = tmp_path / "data" / "gpustack" / "created.jsonl"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (
            ledger.exists() and '"id": 1' in ledger.read_text() and standin.models
        ):
            time.sleep(0.1)
        assert standin.models, "the run never created its model"
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        assert len(standin.models) == 1  # SIGKILL: nothing could delete it
        other = standin.create(
            {
                "name": "someone-elses-model",
                "source": "huggingface",
                "backend": "vLLM",
                "backend_version": "0.31.0",
                "cluster_id": 1,
            }
        )
        assert other[0] == 200
        cleanup = subprocess.run(
            [
                sys.executable,
                "-m",
                "harness",
                "gpustack-cleanup",
                "--data-dir",
                str(tmp_path / "data"),
                "--url",
                standin.url,
                "--api-key-env",
                "PM_TEST_GPUSTACK_KEY",
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            env=_env(),
        )
        assert cleanup.returncode == 0, cleanup.stdout + cleanup.stderr
        assert [m["name"] for m in standin.models.values()] == ["someone-elses-model"]
        assert "deleted pinmatrix-" in cleanup.stdout and KEY not in cleanup.stdout + cleanup.stderr
        assert "pinmatrix" not in ledger.read_text()


def test_a_missing_key_is_one_line_naming_the_variable(tmp_path: Path) -> None:
    matrix = _matrix(tmp_path, "https://gpustack.example", ["0.31.0"])
    env = {k: v for k, v in os.environ.items() if k != "PM_TEST_GPUSTACK_KEY"}
    proc = subprocess.run(_argv(tmp_path, matrix), cwd=ROOT, capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode != 0
    assert "platforms.gpustack.gpustack.api_key_env: $PM_TEST_GPUSTACK_KEY is not set" in proc.stdout


@pytest.mark.parametrize(
    ("target", "error"),
    [
        (
            '{ url = "ftp://x", api_key_env = "K", backend = "vLLM" }',
            "platforms.gpustack.gpustack.url: expected an http(s) URL, got 'ftp://x'",
        ),
        (
            '{ url = "https://x", api_key_env = "my key", backend = "vLLM" }',
            "platforms.gpustack.gpustack.api_key_env: expected the name of an environment variable, got 'my key'",
        ),
        ('{ url = "https://x", backend = "vLLM" }', "platforms.gpustack.gpustack.api_key_env: missing"),
    ],
)
def test_a_bad_target_is_named_by_its_path(target: str, error: str) -> None:
    import tomllib

    from harness.errors import SpecError
    from harness.spec import parse_matrix

    doc = tomllib.loads(f"""
backend = "vllm"
[platforms.gpustack]
gpustack = {target}
versions = ["0.31.0"]
reference = "0.31.0"
[[platforms.gpustack.models]]
name = "m"
source = "hf://Qwen/Qwen2.5-0.5B-Instruct@main"
""")
    with pytest.raises(SpecError) as caught:
        parse_matrix(doc, "g.toml")
    assert error in caught.value.errors
