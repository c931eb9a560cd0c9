"""Which releases exist for a version set: the pins installed in the bin dir, a download backend's release
list; resolved into the matrix with the deployed pin always kept, and a failed lookup as the matrix's error."""

from __future__ import annotations

from pathlib import Path

import pytest
from packaging.specifiers import SpecifierSet

from harness import releases
from harness.errors import SpecError
from harness.install import InstallPaths
from harness.spec import VersionSet, parse_matrix

HERE = Path(__file__).resolve()


def _matrix(versions: list[object], reference: str = "0.30.0", **top: object):  # type: ignore[no-untyped-def]
    return parse_matrix(
        {
            "backend": "vllm",
            "platforms": {
                "cpu": {
                    "versions": versions,
                    "reference": reference,
                    "models": [{"name": "m", "source": f"file://{HERE}"}],
                }
            },
            **top,
        },
        "m.toml",
    )


def _bin(tmp_path: Path, *names: str) -> InstallPaths:
    paths = InstallPaths(data_dir=tmp_path / "d", bin_dir=tmp_path / "bin", pipx=("pipx",))
    paths.bin_dir.mkdir(parents=True)
    for name in names:
        exe = paths.bin_dir / name
        exe.write_text("#!/bin/sh\n")
        exe.chmod(0o755)
    return paths


def test_installed_pins_of_this_backend_in_range(tmp_path: Path) -> None:
    paths = _bin(tmp_path, "vllm_0.30.0", "vllm_0.32.0", "vllm_0.31.0", "sglang_0.5.0", "vllm_latest")
    vs = VersionSet(installed=True, spec=SpecifierSet(">=0.31"))
    found = releases.find(_matrix(["0.30.0"]), "cpu", vs, paths=paths, download_base_url="https://github.com")
    assert found == ["0.31.0", "0.32.0"]


def test_resolve_keeps_the_deployed_pin_and_orders_by_version(tmp_path: Path) -> None:
    paths = _bin(tmp_path, "vllm_0.32.0", "vllm_0.31.0")
    matrix = _matrix(["0.29.0", {"installed": True, "spec": ">=0.31"}], reference="0.30.0")
    plat = releases.resolve(matrix, "cpu", paths=paths, download_base_url="https://github.com").platforms["cpu"]
    assert [p.pin.text for p in plat.versions] == ["0.29.0", "0.30.0", "0.31.0", "0.32.0"]
    why = {p.pin.text: p.why for p in plat.versions}
    assert why["0.30.0"] == "the reference (deployed) pin" and why["0.31.0"] == "installed in the bin dir"


def test_a_matrix_without_version_sets_is_left_alone(tmp_path: Path) -> None:
    matrix = _matrix(["0.30.0"])
    assert releases.resolve(matrix, "cpu", paths=_bin(tmp_path), download_base_url="https://github.com") is matrix


def test_a_download_without_a_release_list_is_the_matrixs_error(tmp_path: Path) -> None:
    matrix = parse_matrix(
        {
            "backend": "my-srv",
            "custom": {
                "run_command": "srv --port {{port}} --model {{model_path}}",
                "installer": "download",
                "download_url": "https://host/builds/{{version}}/srv.zip",
            },
            "platforms": {
                "cpu": {
                    "versions": [{"spec": ">=1"}],
                    "reference": "1.0.0",
                    "models": [{"name": "m", "source": f"file://{HERE}"}],
                }
            },
        },
        "m.toml",
    )
    with pytest.raises(SpecError) as caught:
        releases.resolve(matrix, "cpu", paths=_bin(tmp_path), download_base_url="https://github.com")
    assert caught.value.errors == [
        "platforms.cpu.versions: range >=1 (newest 1): my-srv downloads from a URL with no release list; "
        "name its versions"
    ]
