"""The download path over real HTTP: a mirror on 127.0.0.1 laid out like GitHub releases."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest

from harness.backends import Host
from harness.backends.llama_box import LLAMA_BOX
from harness.errors import InstallError
from harness.install import InstallPaths, InstallRequest, install_pin
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
    req = InstallRequest(
        backend=LLAMA_BOX,
        platform="cpu",
        pin=parse_pin(version),
        download_base_url=base,
        allow_http=True,
        host=Host(os="linux", arch="amd64"),
    )
    return install_pin(req, paths)


def test_install_from_mirror_and_faults(tmp_path: Path) -> None:
    root = tmp_path / "mirror"
    good = _zip({"llama-box": b"#!/bin/sh\necho ok\n"})
    publish(root, "v1.0.0", {f"{ASSET}.zip": good})
    publish(root, "v2.0.0", {f"{ASSET}.zip": good}, sums={f"{ASSET}.zip": "f" * 64})
    publish(root, "v3.0.0", {f"{ASSET}.zip": _zip({"../../escape": b"x", "llama-box": b"x"})})
    with serve(root) as base:
        got = _install(tmp_path, base, "v1.0.0")
        assert got.installed_now and Path(got.executable).resolve().read_bytes().startswith(b"#!/bin/sh")
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
    (api / "releases").write_text(
        json.dumps([{"tag_name": t, "draft": False, "prerelease": False} for t in ("v0.0.138", "v0.0.139", "v0.0.140")])
    )
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
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "-p",
                "no:cacheprovider",
                str(matrix),
                "--collect-only",
                "-q",
                "--platform",
                "cpu",
                "--tools-download-base-url",
                base,
                "--allow-http-mirror",
            ],
            cwd=Path(__file__).resolve().parents[2],
            capture_output=True,
            text=True,
            timeout=60,
        )
    cells = [ln.split("::")[-1] for ln in proc.stdout.splitlines() if "::cell[" in ln]
    assert cells == ["cell[llama-box_v0.0.140-tiny-cpu]", "cell[llama-box_v0.0.139-tiny-cpu]"], (
        proc.stdout + proc.stderr
    )


def test_custom_backend_downloads_its_pin_from_a_url_with_the_version(tmp_path: Path, gguf_model: Path) -> None:
    # GPUStack v2 custom backend with a download source: the archive holds a launcher of the scripted server.
    import hashlib
    import sys

    from harness.cell import RunContext, run_cell
    from harness.install import list_pins
    from harness.results import FailureClass, Status
    from harness.slots import Slot
    from harness.spec import parse_matrix
    from tests.support.scripted_backend import SERVER

    launcher = f"#!/bin/sh\nexec '{sys.executable}' '{SERVER}' \"$@\"\n".encode()
    archive = _zip({"srv-1.2.0/bin/scripted-srv": launcher, "srv-1.2.0/README": b"docs"})
    rel = tmp_path / "mirror" / "builds" / "1.2.0"
    rel.mkdir(parents=True)
    (rel / "srv-1.2.0.zip").write_bytes(archive)
    (rel / "sha256sum.txt").write_text(f"{hashlib.sha256(archive).hexdigest()}  srv-1.2.0.zip\n")
    with serve(tmp_path / "mirror") as base:
        matrix = parse_matrix(
            {
                "backend": "my-srv",
                "custom": {
                    "run_command": "scripted-srv --host {{host}} --port {{port}} --served-model-name {{model_name}}",
                    "installer": "download",
                    "download_url": base + "/builds/{{version}}/srv-{{version}}.zip",
                    "health_check_path": "/health",
                },
                "platforms": {
                    "cpu": {
                        "versions": ["1.2.0", {"version": "1.3.0", "sha256": "0" * 64}],
                        "reference": "1.2.0",
                        "models": [{"name": "tiny", "source": f"file://{gguf_model}"}],
                    }
                },
                "workload": {"output_tokens": 4, "concurrency": [1], "requests_per_level": 2, "agreement_prompts": 2},
                "accuracy": {"tasks": []},
                "thresholds": {"startup_deadline_s": 20},
            },
            "dl.toml",
        )
        paths = InstallPaths(data_dir=tmp_path / "data", bin_dir=tmp_path / "bin", pipx=("false",))
        ctx = RunContext(
            matrix=matrix,
            platform="cpu",
            paths=paths,
            run_dir=tmp_path / "run",
            slot=Slot(platform="cpu"),
            download_base_url=base,
            allow_http_mirror=True,
        )
        plat = matrix.platforms["cpu"]
        good = run_cell(ctx, plat.versions[0], plat.models[0])
        missing = run_cell(
            ctx, plat.versions[1], plat.models[0]
        )  # not on the mirror: its sha256sum.txt is never needed
        ctx_https_only = RunContext(
            matrix=matrix, platform="cpu", paths=paths, run_dir=tmp_path / "run", slot=Slot(platform="cpu")
        )
        refused = run_cell(ctx_https_only, plat.versions[1], plat.models[0])
    assert good.status is Status.PASSED, (good.reason, good.log_excerpt)
    assert good.install is not None and (good.install.kind, good.install.url) == (
        "download",
        f"{base}/builds/1.2.0/srv-1.2.0.zip",
    )
    assert len(good.install.sha256) == 64 and good.install.export()["sha256"] == good.install.sha256
    assert (
        Path(good.executable).resolve()
        == paths.bin_dir / "my-srv" / "my-srv-1.2.0" / "srv-1.2.0" / "bin" / "scripted-srv"
    )
    assert [(p.backend, p.version, p.origin) for p in list_pins(paths)] == [("my-srv", "1.2.0", "download")]
    assert missing.failure_class is FailureClass.INSTALL_FAILED
    assert missing.reason == f"HTTP 404 Not Found: {base}/builds/1.3.0/srv-1.3.0.zip"
    assert refused.failure_class is FailureClass.INSTALL_FAILED and refused.reason.startswith(
        f"refusing download URL '{base}/builds/1.3.0"
    )


def test_cli_installs_a_llama_box_pin_from_a_loopback_mirror(tmp_path: Path) -> None:
    import subprocess
    import sys

    root = tmp_path / "mirror"
    publish(root, "v1.0.0", {f"{ASSET}.zip": _zip({"llama-box": b"#!/bin/sh\necho ok\n"})})
    argv = [
        sys.executable,
        "-m",
        "harness",
        "install",
        "llama-box",
        "v1.0.0",
        "--platform",
        "cpu",
        "--bin-dir",
        str(tmp_path / "bin"),
        "--data-dir",
        str(tmp_path / "data"),
    ]
    with serve(root) as base:
        refused = subprocess.run([*argv, "--tools-download-base-url", base], capture_output=True, text=True, timeout=60)
        proc = subprocess.run(
            [*argv, "--tools-download-base-url", base, "--allow-http-mirror"],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert refused.returncode == 1 and "https only (allow an http mirror explicitly)" in refused.stderr
    assert proc.returncode == 0, proc.stdout + proc.stderr
    exe = tmp_path / "bin" / "llama-box_v1.0.0"
    assert f"{exe}  (installed, download," in proc.stdout and "sha256 " in proc.stdout
    assert exe.resolve() == tmp_path / "bin" / "llama-box" / "llama-box-v1.0.0" / "llama-box"


def test_cli_installs_a_custom_download_backend_from_its_matrix(tmp_path: Path) -> None:
    import subprocess
    import sys

    root = tmp_path / "mirror"
    archive = _zip({"srv-2.0.0/bin/srv": b"#!/bin/sh\necho srv\n"})
    (root / "builds" / "2.0.0").mkdir(parents=True)
    (root / "builds" / "2.0.0" / "srv-2.0.0.zip").write_bytes(archive)
    import hashlib

    (root / "builds" / "2.0.0" / "sha256sum.txt").write_text(f"{hashlib.sha256(archive).hexdigest()}  srv-2.0.0.zip\n")
    with serve(root) as base:
        matrix = tmp_path / "my-srv.toml"
        matrix.write_text(f"""backend = "my-srv"
[custom]
run_command = "srv --port {{{{port}}}} --model {{{{model_path}}}}"
installer = "download"
download_url = "{base}/builds/{{{{version}}}}/srv-{{{{version}}}}.zip"
[platforms.cpu]
versions = ["2.0.0"]
reference = "2.0.0"
[[platforms.cpu.models]]
name = "m"
source = "file://{matrix}"
""")
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "harness",
                "install",
                "--matrix",
                str(matrix),
                "2.0.0",
                "--platform",
                "cpu",
                "--bin-dir",
                str(tmp_path / "bin"),
                "--data-dir",
                str(tmp_path / "data"),
                "--allow-http-mirror",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (
        tmp_path / "bin" / "my-srv_2.0.0"
    ).resolve() == tmp_path / "bin" / "my-srv" / "my-srv-2.0.0" / "srv-2.0.0" / "bin" / "srv"


def test_a_fresh_run_installs_its_pins_ahead_of_the_cells_with_the_model_alongside(
    tmp_path: Path, gguf_model: Path
) -> None:
    """Fresh runs: every pin installed (and the model prepared alongside) before the first cell is measured;
    a pin that cannot be installed is left for its cell, which records the failure as before."""
    import hashlib
    import json
    import subprocess
    import sys

    from tests.support.scripted_backend import SERVER

    launcher = f"#!/bin/sh\nexec '{sys.executable}' '{SERVER}' \"$@\"\n".encode()
    for version in ("1.2.0", "1.3.0"):
        archive = _zip({f"srv-{version}/bin/scripted-srv": launcher})
        rel = tmp_path / "mirror" / "builds" / version
        rel.mkdir(parents=True)
        (rel / f"srv-{version}.zip").write_bytes(archive)
        (rel / "sha256sum.txt").write_text(f"{hashlib.sha256(archive).hexdigest()}  srv-{version}.zip\n")
    matrix = tmp_path / "my-srv.toml"
    with serve(tmp_path / "mirror") as base:
        matrix.write_text(f"""
backend = "my-srv"
[custom]
run_command = "scripted-srv --host {{{{host}}}} --port {{{{port}}}} --served-model-name {{{{model_name}}}}"
installer = "download"
download_url = "{base}/builds/{{{{version}}}}/srv-{{{{version}}}}.zip"
health_check_path = "/health"
[platforms.cpu]
versions = ["1.2.0", "1.3.0", "1.4.0"]
reference = "1.2.0"
[[platforms.cpu.models]]
name = "tiny"
source = "file://{gguf_model}"
[workload]
output_tokens = 4
concurrency = [1]
requests_per_level = 2
agreement_prompts = 2
[accuracy]
tasks = []
[thresholds]
startup_deadline_s = 20
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
                "--data-dir",
                str(tmp_path / "data"),
                "--bin-dir",
                str(tmp_path / "bin"),
                "--reports-dir",
                str(tmp_path / "reports"),
                "--run-id",
                "fresh",
                "--no-history",
                "--tools-download-base-url",
                base,
                "--allow-http-mirror",
            ],
            cwd=Path(__file__).resolve().parents[2],
            capture_output=True,
            text=True,
            timeout=240,
        )
    out = proc.stdout
    assert "preparing ahead of the cells: installing 1.2.0, 1.3.0, 1.4.0 while 1 model(s)" in out, out + proc.stderr
    assert "installed my-srv_1.3.0 in " in out
    assert out.index("installed my-srv_1.3.0") < out.index("waiting for ready")  # before any server started
    lines = (tmp_path / "reports" / "my-srv" / "fresh" / "results.jsonl").read_text().splitlines()
    cells = {c["version"]: c for c in map(json.loads, lines)}
    assert cells["1.3.0"]["status"] == "passed" and cells["1.3.0"]["notes"]["install"].startswith(
        "installed ahead of the cells in "
    )
    assert (
        cells["1.4.0"]["failure_class"] == "install-failed" and "404" in cells["1.4.0"]["reason"]
    )  # its cell met the failure
