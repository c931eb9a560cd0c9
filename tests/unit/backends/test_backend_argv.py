"""Launch lines exactly as GPUStack builds them, for backends that cannot run on this machine (SGLang)
or whose flags matter (vox-box)."""

from __future__ import annotations

import re
from pathlib import Path

from harness.backends import LaunchContext, get_backend
from harness.backends.sglang import is_python


def _ctx(exe: Path, gpus: tuple[int, ...] = (0,), extra: tuple[str, ...] = ()) -> LaunchContext:
    return LaunchContext(
        executable=exe,
        model_path=Path("/models/qwen"),
        served_name="qwen",
        host="127.0.0.1",
        port=30000,
        gpus=gpus,
        extra_args=extra,
        cache_dir=Path("/tmp/c"),
    )


def test_sglang_serve_subcommand_when_the_pin_is_the_console_script(tmp_path: Path) -> None:
    flavour = get_backend("sglang").flavour("cuda")
    exe = tmp_path / "sglang_0.5.23"
    exe.symlink_to(tmp_path / "venv" / "bin" / "sglang")
    assert flavour.launch_argv(_ctx(exe, gpus=(2, 3), extra=("--mem-fraction-static", "0.8"))) == [
        str(exe),
        "serve",
        "--model-path",
        "/models/qwen",
        "--host",
        "127.0.0.1",
        "--port",
        "30000",
        "--served-model-name",
        "qwen",
        "--tp-size",
        "2",
        "--enable-metrics",  # what metrics.token_accounting reads
        "--mem-fraction-static",
        "0.8",
    ]
    env = flavour.launch_env(_ctx(exe, gpus=(2, 3)))
    assert env["CUDA_VISIBLE_DEVICES"] == "2,3" and env["HF_HUB_OFFLINE"] == "1"
    assert (flavour.readiness_path, flavour.default_package, flavour.pipx_app) == ("/health", "sglang", "sglang")


def test_sglang_module_form_when_the_pin_is_a_python(tmp_path: Path) -> None:
    flavour = get_backend("sglang").flavour("cuda")
    (tmp_path / "venv" / "bin").mkdir(parents=True)
    python = tmp_path / "venv" / "bin" / "python3.11"
    python.write_text("")
    exe = tmp_path / "sglang_0.4.6"
    exe.symlink_to(python)
    assert is_python(exe) and not is_python(tmp_path / "sglang_0.5.23")
    assert flavour.launch_argv(_ctx(exe)) == [
        str(exe),
        "-m",
        "sglang.launch_server",
        "--model-path",
        "/models/qwen",
        "--host",
        "127.0.0.1",
        "--port",
        "30000",
        "--served-model-name",
        "qwen",
        "--enable-metrics",
    ]


class _Venv:
    def __init__(self, root: Path) -> None:
        self.python, self.site_packages = root / "bin" / "python", root / "lib"

    def runpip(self, args: object) -> str:
        raise AssertionError("no pip for this")


def test_sglang_bin_target_follows_what_the_release_ships(tmp_path: Path) -> None:
    flavour = get_backend("sglang").flavour("cuda")
    (tmp_path / "bin").mkdir()
    venv = _Venv(tmp_path)
    launcher = tmp_path / "pinmatrix-bin" / "python"
    assert flavour.bin_target(venv) == launcher  # 0.4.x: no console script, a launcher of the interpreter
    flavour.post_install(venv, "0.4.6")
    assert launcher.read_text() == f'#!/bin/sh\nexec {venv.python} "$@"\n' and is_python(launcher)
    (tmp_path / "bin" / "sglang").write_text("")
    assert flavour.bin_target(venv) is None  # pipx's `sglang` app is the GPUStack executable


def test_vox_box_start_line_and_build_constraint() -> None:
    flavour = get_backend("vox-box").flavour("cpu")
    exe = Path("/bin/vox-box_0.0.21")
    assert flavour.launch_argv(_ctx(exe, gpus=())) == [
        "/bin/vox-box_0.0.21",
        "start",
        "--model",
        "/models/qwen",
        "--data-dir",
        "/tmp/c/vox-box",
        "--device",
        "cpu",
        "--host",
        "127.0.0.1",
        "--port",
        "30000",
    ]
    cuda = get_backend("vox-box").flavour("cuda")
    assert "cuda:0" in cuda.launch_argv(_ctx(exe, gpus=(3,)))  # CUDA_VISIBLE_DEVICES=3 makes it device 0
    assert cuda.launch_env(_ctx(exe, gpus=(3,)))["CUDA_VISIBLE_DEVICES"] == "3"
    assert flavour.build_constraints == ("setuptools<81",) and flavour.api_kinds == ("stt", "tts")
    line = "2026-11-27T19:54:41+00:00 - vox_box.server.server - INFO - Serving on 127.0.0.1:52111."  # 0.0.21's log
    assert flavour.ready_line and re.search(flavour.ready_line, line)
