"""Where a cell runs: GPUs found by a chain of providers, else the CPU slot.

Providers are tried in order, each returning a list of GPU indices or None (no opinion):
``PINMATRIX_GPUS`` (an override: "0,1", or "" for none) -> pynvml -> none (CPU).

GPUStack's own detector (``gpustack-runtime`` 0.2.6 on PyPI) was considered for the chain: it detects ten
vendors' devices (NVIDIA through the same NVML, AMD, Ascend, Cambricon, ...), but it pulls in docker,
kubernetes and podman client libraries, and the backends here have cpu and cuda flavours only. NVML answers
everything a cuda cell needs; a provider for gpustack-runtime belongs here when a non-NVIDIA flavour does.
"""

from __future__ import annotations

import importlib
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .errors import HarnessError

Provider = Callable[[], "list[int] | None"]


class GpuDiscoveryError(HarnessError):
    """GPUs that are there but cannot be used as found (one line; set PINMATRIX_GPUS to override)."""


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
        except Exception as exc:  # a driver that loads but cannot count its devices: say so, in one line
            raise GpuDiscoveryError(
                f"NVML found a driver but could not list its GPUs: {type(exc).__name__}: {exc}"
            ) from exc
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


class GpuMemorySampler:
    """Samples used memory on a cell's GPUs in a background thread; ``peaks_mib`` holds the maxima.

    ``nvml`` is the pynvml module (a fake in tests). Without GPUs, or without NVML, it does nothing.
    """

    def __init__(self, gpus: Sequence[int], *, interval_s: float = 0.5, nvml: Any = None) -> None:
        self.gpus, self.interval_s, self._nvml = tuple(gpus), interval_s, nvml
        self.peaks_mib: dict[int, float] = {}
        self.samples = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> GpuMemorySampler:
        if not self.gpus:
            return self
        if self._nvml is None:
            try:
                self._nvml = importlib.import_module("pynvml")
            except ImportError:
                return self
        try:
            self._nvml.nvmlInit()
        except Exception:  # no driver: nothing to sample
            self._nvml = None
            return self
        handles = {g: self._nvml.nvmlDeviceGetHandleByIndex(g) for g in self.gpus}
        self._thread = threading.Thread(target=self._run, args=(handles,), name="gpu-memory", daemon=True)
        self._thread.start()
        return self

    def _sample(self, handles: dict[int, Any]) -> None:
        for g, h in handles.items():
            used = self._nvml.nvmlDeviceGetMemoryInfo(h).used / (1 << 20)
            self.peaks_mib[g] = max(self.peaks_mib.get(g, 0.0), used)
        self.samples += 1

    def _run(self, handles: dict[int, Any]) -> None:
        while True:
            self._sample(handles)
            if self._stop.wait(self.interval_s):
                self._sample(handles)  # one last look at the end of the cell
                return

    def __exit__(self, *exc: object) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._nvml.nvmlShutdown()


def slot_count(gpus: Sequence[int], per_cell: int) -> int:
    """How many cells can run at once: one per group of ``per_cell`` GPUs; the CPU is one slot."""
    return max(1, len(gpus) // per_cell) if per_cell > 0 and gpus else 1


def wait_for_free_memory(
    gpus: Sequence[int],
    *,
    max_used_mib: float,
    timeout_s: float,
    nvml: Any = None,
    sleep: Callable[[float], None] = time.sleep,
) -> str | None:
    """Wait until every GPU in ``gpus`` uses less than ``max_used_mib`` (vLLM's CI waits for < 1 GiB: a
    previous server still letting go of its memory, or someone else's job). None when free (or when NVML
    cannot tell); else why not, naming each GPU's use. A busy GPU is the machine's problem, not the pin's."""
    if not gpus:
        return None
    try:
        mod = nvml or importlib.import_module("pynvml")
        mod.nvmlInit()
    except Exception:
        return None
    try:
        handles = {g: mod.nvmlDeviceGetHandleByIndex(g) for g in gpus}
        deadline = time.monotonic() + timeout_s
        while True:
            used = {g: mod.nvmlDeviceGetMemoryInfo(h).used / (1 << 20) for g, h in handles.items()}
            if all(u < max_used_mib for u in used.values()):
                return None
            if time.monotonic() >= deadline:
                busy = ", ".join(f"GPU {g} {u:.0f} MiB" for g, u in used.items() if u >= max_used_mib)
                return (
                    f"GPU memory not free after {timeout_s:g} s ({busy} used; "
                    f"at most {max_used_mib:g} MiB allowed before a cell)"
                )
            sleep(1.0)
    finally:
        mod.nvmlShutdown()


def cuda_driver_version(nvml: Any = None) -> tuple[int, int] | None:
    """The CUDA version the driver supports (picks llama-box's cuda-12.4 or cuda-12.8 asset)."""
    try:
        mod = nvml or importlib.import_module("pynvml")
        mod.nvmlInit()
    except Exception:
        return None
    try:
        v = int(mod.nvmlSystemGetCudaDriverVersion())  # e.g. 12080
        return (v // 1000, (v % 1000) // 10)
    except Exception:
        return None
    finally:
        mod.nvmlShutdown()
