"""tests/support/slowed: the hook that makes a real vLLM slower on purpose, checked on a stand-in package with
vLLM's module path (the e2e test relies on it slowing the real engine by the share it is given)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SLOWED = Path(__file__).resolve().parents[1] / "support" / "slowed"
STEP_S = 0.2
TIMED = (
    "import time\nfrom vllm.v1.engine.core import EngineCore\n"
    "t = time.perf_counter(); EngineCore().step(); print(time.perf_counter() - t)"
)


def _stand_in(root: Path) -> Path:
    engine = root / "vllm" / "v1" / "engine"
    engine.mkdir(parents=True)
    for folder in (root / "vllm", root / "vllm" / "v1", engine):
        (folder / "__init__.py").write_text("")
    (engine / "core.py").write_text(
        f"import time\nclass EngineCore:\n    def step(self):\n        time.sleep({STEP_S})\n"
    )
    return root


def _step_s(packages: Path, share: str | None) -> tuple[float, str]:
    env = {k: v for k, v in os.environ.items() if k != "PINMATRIX_SLOWDOWN"}
    env["PYTHONPATH"] = f"{SLOWED}{os.pathsep}{packages}"
    if share is not None:
        env["PINMATRIX_SLOWDOWN"] = share
    proc = subprocess.run([sys.executable, "-c", TIMED], env=env, capture_output=True, text=True, check=True)
    return float(proc.stdout), proc.stderr


@pytest.mark.parametrize("share", ["0.5", "1"])
def test_each_engine_step_takes_the_share_longer(tmp_path: Path, share: str) -> None:
    took, said = _step_s(_stand_in(tmp_path), share)
    expected = STEP_S * (1 + float(share))
    assert expected * 0.95 <= took < expected + 0.15, took
    assert "EngineCore slowed by" in said


def test_without_a_share_nothing_is_touched(tmp_path: Path) -> None:
    took, said = _step_s(_stand_in(tmp_path), None)
    assert STEP_S * 0.95 <= took < STEP_S + 0.1 and said == ""
