"""tests/support/slowed_vllm: the pin that runs a real vLLM slower on purpose, checked on a stand-in venv with
vLLM's module path and console-script shape (``python -E``, the engine stepped in a spawned child, as vLLM's CPU
platform does). The e2e test relies on it slowing the real engine by the share it is given."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.slowed_vllm import write_pin

STEP_S = 0.2
CORE = f"""import time
class EngineCore:
    def step(self):
        time.sleep({STEP_S})
"""
# what the wrapper runs as main(): steps the engine in a spawned child, as vLLM does, and prints how long it took
CLI = """import multiprocessing as mp, sys, time
def _child(q):
    from vllm.v1.engine.core import EngineCore
    t = time.perf_counter(); EngineCore().step(); q.put(time.perf_counter() - t)
def main():
    ctx = mp.get_context("spawn"); q = ctx.Queue(); p = ctx.Process(target=_child, args=(q,)); p.start()
    print(q.get()); p.join(); return 0
"""


def _stand_in(root: Path) -> Path:
    """A real venv (no pip) whose site-packages hold a stand-in vllm; returns its bin/vllm."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True)
    (site,) = (root / "lib").glob("python3*/site-packages")
    for folder in ("vllm", "vllm/v1", "vllm/v1/engine", "vllm/entrypoints", "vllm/entrypoints/cli"):
        (site / folder).mkdir(parents=True, exist_ok=True)
        (site / folder / "__init__.py").write_text("")
    (site / "vllm/v1/engine/core.py").write_text(CORE)
    (site / "vllm/entrypoints/cli/main.py").write_text(CLI)
    (root / "bin" / "vllm").write_text("")
    return root / "bin" / "vllm"


def _step_s(tmp_path: Path, share: float) -> tuple[float, str]:
    exe = write_pin(tmp_path, "vllm_0.0.1+slowed", _stand_in(tmp_path / "venv"), share)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    proc = subprocess.run([str(exe)], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return float(proc.stdout), proc.stderr


@pytest.mark.parametrize("share", [0.5, 1.0])
def test_each_engine_step_takes_the_share_longer_in_a_spawned_child(tmp_path: Path, share: float) -> None:
    took, said = _step_s(tmp_path, share)
    expected = STEP_S * (1 + share)
    assert expected * 0.95 <= took < expected + 0.15, took
    assert f"EngineCore slowed by {share:.0%}" in said


def test_without_a_share_nothing_is_touched(tmp_path: Path) -> None:
    took, said = _step_s(tmp_path, 0.0)
    assert STEP_S * 0.95 <= took < STEP_S + 0.1 and "slowed" not in said
