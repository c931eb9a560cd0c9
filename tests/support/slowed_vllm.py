"""A real vLLM made slower on purpose, by a known share, as a bin-dir pin: ``write_pin`` puts an executable named
like a GPUStack pin (``vllm_0.32.0+slowed``) next to the real one; it runs the real venv's vLLM with every engine
step (``vllm.v1.engine.core.EngineCore``) followed by a sleep of ``share`` of that step's own duration, in
whichever process the engine runs. The e2e tests use it as a pin ~share slower per token on any machine, to ask
whether the harness calls it slower; nothing in the product uses it.

The venv's console script runs ``python -E`` (PYTHONPATH is ignored), so the hook goes into the wrapper script
itself, above its ``__main__`` guard: vLLM's CPU platform starts its engine and workers with multiprocessing's
spawn, which re-runs the parent's main script (as ``__mp_main__``) in each child, hook included. This module
imports nothing from the test suite, so the wrapper can import it by path alone."""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

TARGET = "vllm.v1.engine.core"
STEPS = ("step", "step_with_batch_queue")  # vLLM's V1 engine core runs one of these per scheduler step

WRAPPER = """#!{python} -E
import sys
sys.path.insert(0, {here!r})
import slowed_vllm
slowed_vllm.install({share!r})
if __name__ == "__main__":
    from vllm.entrypoints.cli.main import main
    sys.exit(main())
"""


def write_pin(bin_dir: Path, name: str, real: Path, share: float) -> Path:
    """An executable ``bin_dir/name`` running the vLLM of ``real`` (a venv's ``vllm`` script) ``share`` slower."""
    python = Path(real).resolve().parent / "python"
    exe = bin_dir / name
    exe.write_text(WRAPPER.format(python=python, here=str(Path(__file__).resolve().parent), share=share))
    exe.chmod(0o755)
    return exe


def slowed(step: Callable[..., Any], share: float) -> Callable[..., Any]:
    def run(self: Any, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        out = step(self, *args, **kwargs)
        time.sleep((time.perf_counter() - started) * share)
        return out

    run.__wrapped__ = step  # type: ignore[attr-defined]
    return run


class _Hook(importlib.abc.MetaPathFinder):
    """Patches EngineCore when its module is first executed; stays out of every other import."""

    def __init__(self, share: float) -> None:
        self.share = share

    def find_spec(
        self, name: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if name != TARGET:
            return None
        sys.meta_path.remove(self)  # once: the module is imported once per process
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return spec
        original = spec.loader.exec_module

        def exec_module(module: ModuleType) -> None:
            original(module)
            engine = module.EngineCore
            patched = [n for n in STEPS if hasattr(engine, n)]
            for n in patched:
                setattr(engine, n, slowed(getattr(engine, n), self.share))
            print(f"slowed_vllm: {', '.join(patched)} of EngineCore slowed by {self.share:.0%}", file=sys.stderr)

        spec.loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


def install(share: float) -> None:
    """From now on, this process's vLLM engine steps take ``share`` longer (nothing when share <= 0)."""
    if share > 0 and not any(isinstance(f, _Hook) for f in sys.meta_path):
        sys.meta_path.insert(0, _Hook(share))
