"""Installs across processes: one file lock per pin, so parallel workers install a pin once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# A stand-in for pipx at the process boundary: it lays out a venv the way pipx does (PIPX_HOME/venvs/<name>,
# app linked into PIPX_BIN_DIR with the suffix), slowly, and counts how often it ran.
FAKE_PIPX = r"""
import os, sys, time, pathlib
args = sys.argv[1:]
assert args[0] == "install", args
suffix = args[args.index("--suffix") + 1]
home, bin_dir = pathlib.Path(os.environ["PIPX_HOME"]), pathlib.Path(os.environ["PIPX_BIN_DIR"])
with open(os.environ["FAKE_PIPX_COUNT"], "a") as fh:
    fh.write("run\n")
time.sleep(1.0)
venv = home / "venvs" / ("scripted-server" + suffix.replace("_", "-").replace(".", "-"))
(venv / "bin").mkdir(parents=True, exist_ok=True)
app = venv / "bin" / "scripted"
app.write_text("#!/bin/sh\necho scripted\n")
app.chmod(0o755)
link = bin_dir / ("scripted" + suffix)
if link.is_symlink():
    link.unlink()
link.symlink_to(app)
"""

WORKER = r"""
import json, sys
from pathlib import Path
sys.path.insert(0, {root!r})
import tests.support.scripted_backend  # registers the backend
from harness.backends import get_backend
from harness.install import InstallPaths, ensure_installed
from harness.versions import parse_pin
b = get_backend("scripted")
paths = InstallPaths(data_dir=Path({data!r}), bin_dir=Path({bin!r}), pipx=(sys.executable, {pipx!r}))
got = ensure_installed(b, b.flavour("cpu"), "scripted-server", parse_pin("1.0.0"), paths)
print(json.dumps({{"exe": str(got.executable), "now": got.installed_now, "origin": got.kind}}))
"""


def test_two_workers_install_the_same_pin_once(tmp_path: Path) -> None:
    pipx = tmp_path / "fake_pipx.py"
    pipx.write_text(FAKE_PIPX)
    count = tmp_path / "count"
    code = WORKER.format(root=str(ROOT), data=str(tmp_path / "data"), bin=str(tmp_path / "bin"), pipx=str(pipx))
    env = {**os.environ, "FAKE_PIPX_COUNT": str(count)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=60) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    results = [json.loads(o[0].strip().splitlines()[-1]) for o in outs]
    assert count.read_text().count("run") == 1  # pipx ran once
    assert sorted(r["now"] for r in results) == [False, True]  # one installed, the other waited and reused
    assert {r["exe"] for r in results} == {str(tmp_path / "bin" / "scripted_1.0.0")}
    assert all(r["origin"] == "pipx" for r in results)
    marker = json.loads(next((tmp_path / "data" / "pipx" / "venvs").glob("*/pinmatrix-fixups")).read_text())
    assert marker["size_bytes"] > 0


def test_pins_command_lists_origins(tmp_path: Path) -> None:
    pipx = tmp_path / "fake_pipx.py"
    pipx.write_text(FAKE_PIPX)
    code = WORKER.format(root=str(ROOT), data=str(tmp_path / "data"), bin=str(tmp_path / "bin"), pipx=str(pipx))
    subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "FAKE_PIPX_COUNT": str(tmp_path / "c")},
        check=True,
        capture_output=True,
    )
    manual = tmp_path / "bin" / "vllm_v0.7.3"
    manual.write_text("#!/bin/sh\n")
    manual.chmod(0o755)
    (tmp_path / "bin" / "notes.txt").write_text("not a pin")
    box = tmp_path / "bin" / "llama-box" / "llama-box-v0.0.140"
    box.mkdir(parents=True)
    (box / "llama-box").write_text("#!/bin/sh\n")
    (box / "llama-box").chmod(0o755)
    (tmp_path / "bin" / "llama-box_v0.0.140").symlink_to(box / "llama-box")
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "harness",
            "pins",
            "--bin-dir",
            str(tmp_path / "bin"),
            "--data-dir",
            str(tmp_path / "data"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rows = [line.split()[:3] for line in out.splitlines()]
    assert rows == [["llama-box", "v0.0.140", "download"], ["scripted", "1.0.0", "pipx"], ["vllm", "v0.7.3", "manual"]]


FAKE_UV = r"""#!{python}
import os, sys, pathlib
args = sys.argv[1:]
with open(os.environ["FAKE_UV_LOG"], "a") as fh:
    fh.write(" ".join(args) + "\n")
if args[0] == "venv":
    root = pathlib.Path(args[-1])
    (root / "bin").mkdir(parents=True)
    (root / "bin" / "python").symlink_to(sys.executable)
elif args[:2] == ["pip", "install"]:
    python = pathlib.Path(args[args.index("--python") + 1])
    app = python.parent / "scripted"
    app.write_text("#!/bin/sh\n")
    app.chmod(0o755)
"""


def test_uv_installer_makes_the_same_bin_dir_layout(tmp_path: Path, monkeypatch) -> None:
    import tests.support.scripted_backend  # noqa: F401  (registers the backend)
    from harness.backends import get_backend
    from harness.install import InstallPaths, ensure_installed, list_pins
    from harness.versions import parse_pin

    tools = tmp_path / "tools"
    tools.mkdir()
    (tools / "uv").write_text(FAKE_UV.format(python=sys.executable))
    (tools / "uv").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tools}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_UV_LOG", str(tmp_path / "uv.log"))
    monkeypatch.setenv("PIP_FIND_LINKS", "/opt/wheels")
    b = get_backend("scripted")
    paths = InstallPaths(data_dir=tmp_path / "data", bin_dir=tmp_path / "bin", pipx=("false",))
    got = ensure_installed(b, b.flavour("cpu"), "scripted-server", parse_pin("1.0.0"), paths, installer="uv")
    assert (got.executable, got.kind, got.installed_now) == (str(tmp_path / "bin" / "scripted_1.0.0"), "uv", True)
    assert (
        Path(got.executable).resolve()
        == (tmp_path / "data" / "uv" / "venvs" / "scripted-server-1.0.0" / "bin" / "scripted").resolve()
    )
    calls = (tmp_path / "uv.log").read_text().splitlines()
    assert calls[0].startswith("venv --python ")
    assert (
        calls[1].startswith("pip install --python ") and "scripted-server==1.0.0 --find-links=/opt/wheels" in calls[1]
    )
    again = ensure_installed(b, b.flavour("cpu"), "scripted-server", parse_pin("1.0.0"), paths, installer="uv")
    assert (again.kind, again.installed_now) == ("uv", False)
    assert again.ran == got.ran and got.ran[1][:3] == (str(tools / "uv"), "pip", "install")  # what made it, remembered
    assert [(p.backend, p.origin) for p in list_pins(paths)] == [("scripted", "uv")]
