from __future__ import annotations

import shutil
from pathlib import Path

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # The tier of a test is the folder under tests/ it lives in (tests/unit/cell/... is unit).
    here = Path(__file__).resolve().parent
    for item in items:
        try:
            tier = Path(str(item.path)).resolve().relative_to(here).parts[0]
        except ValueError:  # not under tests/ (a matrix file given to the plugin)
            continue
        if tier in ("unit", "integration", "e2e"):
            item.add_marker(getattr(pytest.mark, tier))


@pytest.fixture
def gguf_model(tmp_path: Path) -> Path:
    """A stand-in model file for the scripted backend (it never reads it)."""
    path = tmp_path / "model" / "tiny.gguf"
    path.parent.mkdir()
    path.write_bytes(b"GGUF\x03\x00\x00\x00")
    return path


@pytest.fixture
def hostile() -> str:
    return "<script>alert(\"x\")</script> & 'quote'"


def which_or_skip(name: str) -> str:
    found = shutil.which(name)
    if not found:
        pytest.skip(f"{name} not found")
    return found
