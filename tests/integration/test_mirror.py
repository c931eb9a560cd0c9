"""The download path over real HTTP: a mirror on 127.0.0.1 laid out like GitHub releases."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest

from harness.download import install_download
from harness.errors import InstallError
from harness.install import InstallPaths
from harness.versions import parse_pin
from tests.support.mirror import publish, serve

ASSET = "llama-box-linux-amd64-avx2"


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _install(tmp_path: Path, base: str, version: str):
    paths = InstallPaths(data_dir=tmp_path / "data", bin_dir=tmp_path / "bin", pipx=("false",))
    return install_download("llama-box", parse_pin(version), paths, asset=ASSET, base_url=base, allow_http=True)


def test_install_from_mirror_and_faults(tmp_path: Path) -> None:
    root = tmp_path / "mirror"
    good = _zip({"llama-box": b"#!/bin/sh\necho ok\n"})
    publish(root, "v1.0.0", {f"{ASSET}.zip": good})
    publish(root, "v2.0.0", {f"{ASSET}.zip": good}, sums={f"{ASSET}.zip": "f" * 64})
    publish(root, "v3.0.0", {f"{ASSET}.zip": _zip({"../../escape": b"x", "llama-box": b"x"})})
    with serve(root) as base:
        got = _install(tmp_path, base, "v1.0.0")
        assert got.installed_now and got.executable.resolve().read_bytes().startswith(b"#!/bin/sh")
        failures = {}
        for version in ("v2.0.0", "v3.0.0", "v9.9.9"):
            with pytest.raises(InstallError) as info:
                _install(tmp_path, base, version)
            failures[version] = str(info.value)
    assert failures["v2.0.0"].startswith(f"sha256 mismatch for {ASSET}.zip: expected {'f' * 64}, got ")
    assert failures["v3.0.0"] == "refusing archive member '../../escape': it escapes the target directory"
    assert failures["v9.9.9"] == f"HTTP 404 Not Found: {base}/gpustack/llama-box/releases/download/v9.9.9/sha256sum.txt"
    assert sorted(p.name for p in (tmp_path / "bin").iterdir()) == ["llama-box", "llama-box_v1.0.0"]
    assert sorted(p.name for p in (tmp_path / "bin" / "llama-box").iterdir()) == ["llama-box-v1.0.0"]
    assert not (tmp_path / "escape").exists()


def test_range_of_llama_box_releases_from_the_mirror(tmp_path: Path, gguf_model: Path) -> None:
    import json
    import subprocess
    import sys

    root = tmp_path / "mirror"
    api = root / "api" / "v3" / "repos" / "gpustack" / "llama-box"
    api.mkdir(parents=True)
    (api / "releases").write_text(json.dumps([{"tag_name": t, "draft": False, "prerelease": False}
                                              for t in ("v0.0.138", "v0.0.139", "v0.0.140")]))  # fmt: skip
    matrix = tmp_path / "llama-box.toml"
    matrix.write_text(f"""
backend = "llama-box"
[platforms.cpu]
package = "llama-box"
versions = [{{ spec = ">=0.0.139", newest = 2 }}]
reference = "v0.0.140"
[[platforms.cpu.models]]
name = "tiny"
source = "file://{gguf_model}"
""")
    with serve(root) as base:
        proc = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", str(matrix), "--collect-only", "-q",
                               "--platform", "cpu", "--tools-download-base-url", base, "--allow-http-mirror"],
                              cwd=Path(__file__).resolve().parents[2], capture_output=True, text=True, timeout=60)  # fmt: skip
    cells = [ln.split("::")[-1] for ln in proc.stdout.splitlines() if "::cell[" in ln]
    assert cells == ["cell[llama-box_v0.0.140-tiny-cpu]", "cell[llama-box_v0.0.139-tiny-cpu]"], proc.stdout + proc.stderr
