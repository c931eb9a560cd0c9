"""A real vLLM made slower on purpose, by a known share: with this directory on PYTHONPATH and
PINMATRIX_SLOWDOWN=0.15, every engine step of vLLM (``vllm.v1.engine.core.EngineCore``) is followed by a sleep
of 0.15 of that step's own duration, in whichever process the engine runs. The e2e tests use it as a pin that is
~15% slower per token on any machine, to ask whether the harness calls it slower; nothing in the product uses it.

Python imports ``sitecustomize`` at start-up from the path, so the hook is in place before vLLM is imported; it
patches the class when its module is first executed and stays out of every other import."""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import sys
import time
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

TARGET = "vllm.v1.engine.core"
STEPS = ("step", "step_with_batch_queue")  # vLLM's V1 engine core runs one of these per scheduler step


def _slowed(step: Callable[..., Any], share: float) -> Callable[..., Any]:
    def slowed(self: Any, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        out = step(self, *args, **kwargs)
        time.sleep((time.perf_counter() - started) * share)
        return out

    slowed.__wrapped__ = step  # type: ignore[attr-defined]
    return slowed


class _Hook(importlib.abc.MetaPathFinder):
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
        loader = spec.loader
        original = loader.exec_module

        def exec_module(module: ModuleType) -> None:
            original(module)
            engine = module.EngineCore
            patched = [n for n in STEPS if hasattr(engine, n)]
            for n in patched:
                setattr(engine, n, _slowed(getattr(engine, n), self.share))
            print(f"pinmatrix slowdown: {', '.join(patched)} of EngineCore slowed by {self.share:.0%}", file=sys.stderr)

        loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


_share = float(os.environ.get("PINMATRIX_SLOWDOWN") or 0)
if _share > 0:
    sys.meta_path.insert(0, _Hook(_share))
