"""Where a cell runs: GPUs found by a chain of providers, else the CPU slot.

Providers are tried in order, each returning a list of GPU indices or None (no opinion):
``PINMATRIX_GPUS`` (an override: "0,1", or "" for none) -> pynvml -> none (CPU).
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

Provider = Callable[[], "list[int] | None"]


def env_provider(environ: dict[str, str] | None = None) -> Provider:
    def provide() -> list[int] | None:
        env = os.environ if environ is None else environ
        if "PINMATRIX_GPUS" not in env:
            return None
        raw = env["PINMATRIX_GPUS"].strip()
        return [int(x) for x in raw.split(",") if x.strip()] if raw else []

    return provide


def nvml_provider(nvml: object | None = None) -> Provider:
    """GPUs as NVML sees them; ``nvml`` is the pynvml module (a fake in tests)."""

    def provide() -> list[int] | None:
        mod: Any = nvml
        if mod is None:
            try:
                mod = importlib.import_module("pynvml")
            except ImportError:
                return None
        try:
            mod.nvmlInit()
        except Exception:  # NVMLError_LibraryNotFound / DriverNotLoaded: no NVIDIA GPU here
            return None
        try:
            return list(range(mod.nvmlDeviceGetCount()))
        finally:
            mod.nvmlShutdown()

    return provide


def discover_gpus(providers: Sequence[Provider] | None = None) -> list[int]:
    for provide in providers if providers is not None else (env_provider(), nvml_provider()):
        found = provide()
        if found is not None:
            return found
    return []


def default_platform(gpus: Sequence[int]) -> str:
    return "cuda" if gpus else "cpu"


@dataclass(frozen=True, kw_only=True)
class Slot:
    platform: str
    gpus: tuple[int, ...] = ()

    @property
    def label(self) -> str:
        return self.platform if not self.gpus else f"{self.platform}:{','.join(map(str, self.gpus))}"


def slot_for_worker(platform: str, gpus: Sequence[int], per_cell: int, worker_index: int) -> Slot:
    """pytest-xdist worker N gets the N-th group of ``per_cell`` GPUs (one worker per GPU slot)."""
    if platform == "cpu" or per_cell == 0:
        return Slot(platform=platform)
    groups = [tuple(gpus[i : i + per_cell]) for i in range(0, len(gpus) - per_cell + 1, per_cell)]
    if not groups:
        raise ValueError(f"a cell needs {per_cell} GPU(s) but {len(gpus)} were found")
    return Slot(platform=platform, gpus=groups[worker_index % len(groups)])
