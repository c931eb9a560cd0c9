"""The install command pins.json exports, run as printed on a fresh machine, installs the pin.

A real pipx install of a small real PyPI package (cowsay 6.1, one console script) as a custom pipx
backend; then the exported argv runs with fresh PIPX_HOME / PIPX_BIN_DIR (what a fresh machine has).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from harness.install import InstallPaths, InstallRequest, install_pin, pipx_command
from harness.spec import parse_matrix
from harness.versions import parse_pin

MATRIX = {
    "backend": "cowsay",
    "custom": {"run_command": "cowsay -t {{model_name}}", "installer": "pipx", "pipx_app": "cowsay"},
    "platforms": {
        "cpu": {
            "package": "cowsay",
            "versions": ["6.1"],
            "reference": "6.1",
            "models": [{"name": "m", "source": f"file://{Path(__file__).resolve()}"}],
        }
    },
}


def test_exported_pipx_command_installs_the_pin_on_a_fresh_machine(tmp_path: Path) -> None:
    matrix = parse_matrix(MATRIX, "cowsay.toml")
    paths = InstallPaths(data_dir=tmp_path / "here", bin_dir=tmp_path / "here" / "bin", pipx=pipx_command(None))
    rec = install_pin(
        InstallRequest(backend=matrix.get_backend(), platform="cpu", pin=parse_pin("6.1"), package="cowsay"), paths
    )
    assert (rec.kind, rec.installed_now) == ("pipx", True) and rec.ran[0][-4:] == (
        "--force",
        "--suffix",
        "_6.1",
        "cowsay==6.1",
    )
    exported = rec.export()
    assert exported["commands"] == [["pipx", "install", "--force", "--suffix", "_6.1", "cowsay==6.1"]]

    fresh = tmp_path / "fresh"
    env = {**os.environ, **exported["env"], "PIPX_HOME": str(fresh / "pipx"), "PIPX_BIN_DIR": str(fresh / "bin")}
    for argv in exported["commands"]:
        if shutil.which(argv[0]) is None:  # pipx installed with the harness but not on PATH: the same program
            argv = [sys.executable, "-m", "pipx", *argv[1:]]
        proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    out = subprocess.run([str(fresh / "bin" / "cowsay_6.1"), "-t", "moo"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "moo" in out.stdout
