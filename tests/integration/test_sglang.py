"""SGLang cannot run here (GPU only): its launch lines, both forms, drive the scripted server through
run_cell, so the argv GPUStack would use and the text probes are exercised end to end on CPU."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from harness.backends import Backend, register
from harness.backends.sglang import SglangFlavour
from harness.cell import RunContext, run_cell
from harness.install import InstallPaths
from harness.results import Status
from harness.slots import Slot
from harness.spec import parse_matrix
from tests.support.scripted_backend import SERVER

# SGLang's own flavour, on the CPU platform so a scripted stand-in can answer for it.
register(Backend(name="sglang-on-cpu", installer="pipx", flavours={"cpu": SglangFlavour(platform="cpu")}))


def _pin(tmp: Path, form: str) -> Path:
    bin_dir = tmp / "bin"
    bin_dir.mkdir()
    exe = bin_dir / "sglang-on-cpu_0.5.0"
    if form == "serve":  # the console script: `sglang serve --model-path ...`
        exe.write_text(
            f'#!/bin/sh\n[ "$1" = serve ] || exit 64\nshift\n'
            f"exec '{sys.executable}' '{SERVER}' --metrics-prefix sglang \"$@\"\n"
        )
        exe.chmod(0o755)
    else:  # an interpreter: `python -m sglang.launch_server --model-path ...`, the module a stand-in
        pkg = tmp / "site" / "sglang"
        pkg.mkdir(parents=True)
        (pkg / "__init__.py").write_text("")
        stand_in = (
            f"import runpy, sys\nsys.argv[0] = {str(SERVER)!r}\nsys.argv += ['--metrics-prefix', 'sglang']\n"
            f"runpy.run_path({str(SERVER)!r}, run_name='__main__')\n"
        )
        (pkg / "launch_server.py").write_text(stand_in)
        exe.symlink_to(sys.executable)
    return exe


@pytest.mark.parametrize("form", ["serve", "module"])
def test_sglang_launch_forms_serve_and_pass_the_text_probes(tmp_path: Path, form: str) -> None:
    exe = _pin(tmp_path, form)
    model = tmp_path / "model"
    model.mkdir()
    for name, data in (("config.json", b"{}"), ("tokenizer.json", b"{}"), ("model.safetensors", b"x")):
        (model / name).write_bytes(data)  # an HF directory as SGLang loads one (the model check reads these)
    matrix = parse_matrix(
        {
            "backend": "sglang-on-cpu",
            "platforms": {
                "cpu": {
                    "versions": ["0.5.0"],
                    "reference": "0.5.0",
                    "env": {"PYTHONPATH": str(tmp_path / "site")},
                    "models": [{"name": "qwen", "source": f"file://{model}"}],
                }
            },
            "workload": {"output_tokens": 4, "concurrency": [1], "requests_per_level": 2, "agreement_prompts": 2},
            "accuracy": {"tasks": []},
            "thresholds": {"startup_deadline_s": 20},
        },
        "sglang.toml",
    )
    ctx = RunContext(
        matrix=matrix,
        platform="cpu",
        paths=InstallPaths(data_dir=tmp_path / "data", bin_dir=exe.parent, pipx=("false",)),
        run_dir=tmp_path / "run",
        slot=Slot(platform="cpu"),
    )
    plat = matrix.platforms["cpu"]
    result = run_cell(ctx, plat.versions[0], plat.models[0])
    assert result.status is Status.PASSED, (result.reason, result.log_excerpt)
    assert result.install is not None and result.install.kind == "manual" and result.throughput
    log = Path(result.log_path).read_text()
    assert "scripted: serving" in log


def _library_only_wheel(where: Path) -> None:
    """An SGLang release as 0.4.x shipped: a library with no console script, served by
    `python -m sglang.launch_server` (here a stand-in module that runs the scripted server)."""
    import zipfile

    where.mkdir(parents=True)
    dist = "sglang-0.4.6.dist-info"
    stand_in = (
        f"import runpy, sys\nsys.argv[0] = {str(SERVER)!r}\nsys.argv += ['--metrics-prefix', 'sglang']\n"
        f"runpy.run_path({str(SERVER)!r}, run_name='__main__')\n"
    )
    with zipfile.ZipFile(where / "sglang-0.4.6-py3-none-any.whl", "w") as zf:
        zf.writestr("sglang/__init__.py", "")
        zf.writestr("sglang/launch_server.py", stand_in)
        zf.writestr(f"{dist}/METADATA", "Metadata-Version: 2.1\nName: sglang\nVersion: 0.4.6\n")
        zf.writestr(f"{dist}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        zf.writestr(f"{dist}/RECORD", "")


def test_a_release_without_the_console_script_installs_with_uv_and_launches_as_a_module(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # pipx refuses a package with no console script of its own; uv does not. The pin's executable is then
    # the venv's python, and the launch line follows: `sglang_0.4.6 -m sglang.launch_server ...`.
    import shutil

    assert shutil.which("uv"), "uv is not on PATH (pip install uv; `nox -s tests` installs it)"
    _library_only_wheel(tmp_path / "wheels")
    monkeypatch.setenv("UV_OFFLINE", "1")  # never the real sglang from PyPI
    monkeypatch.setenv("UV_CACHE_DIR", str(tmp_path / "uv-cache"))
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "wheels"))  # passed to uv as --find-links
    model = tmp_path / "model"
    model.mkdir()
    for name, data in (("config.json", b"{}"), ("tokenizer.json", b"{}"), ("model.safetensors", b"x")):
        (model / name).write_bytes(data)  # an HF directory as SGLang loads one (the model check reads these)
    matrix = parse_matrix(
        {
            "backend": "sglang-on-cpu",
            "platforms": {
                "cpu": {
                    "versions": ["0.4.6"],
                    "reference": "0.4.6",
                    "installer": "uv",
                    "models": [{"name": "qwen", "source": f"file://{model}"}],
                }
            },
            "workload": {"output_tokens": 4, "concurrency": [1], "requests_per_level": 2, "agreement_prompts": 2},
            "accuracy": {"tasks": []},
            "thresholds": {"startup_deadline_s": 20},
        },
        "sglang.toml",
    )
    paths = InstallPaths(data_dir=tmp_path / "data", bin_dir=tmp_path / "bin", pipx=("false",))
    ctx = RunContext(matrix=matrix, platform="cpu", paths=paths, run_dir=tmp_path / "run", slot=Slot(platform="cpu"))
    plat = matrix.platforms["cpu"]
    result = run_cell(ctx, plat.versions[0], plat.models[0])
    assert result.status is Status.PASSED, (result.reason, result.log_excerpt)
    assert result.installed_now and result.install is not None and result.install.kind == "uv"
    exe = paths.bin_dir / "sglang-on-cpu_0.4.6"
    assert exe.resolve().name.startswith("python") and (paths.data_dir / "uv" / "venvs") in exe.resolve().parents
