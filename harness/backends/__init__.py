"""The backend registry.

A backend is data plus a few hooks, one module each (``contract.py`` says what); nothing outside this
package asks which backend it is dealing with. Built-in modules are loaded on first use; a matrix's
``[custom]`` backend travels on its ``Matrix`` and is never registered here.
"""

from __future__ import annotations

from ..errors import HarnessError
from .contract import (
    Backend,
    BaseFlavour,
    DownloadPlan,
    Flavour,
    Host,
    InstalledVenv,
    LaunchContext,
    ServedMetrics,
)

__all__ = [
    "Backend",
    "BaseFlavour",
    "DownloadPlan",
    "Flavour",
    "Host",
    "InstalledVenv",
    "LaunchContext",
    "ServedMetrics",
    "get_backend",
    "known_backends",
    "register",
]

_REGISTRY: dict[str, Backend] = {}


def register(backend: Backend) -> Backend:
    _REGISTRY[backend.name] = backend
    return backend


def known_backends() -> list[str]:
    _load_builtin()
    return sorted(_REGISTRY)


def get_backend(name: str) -> Backend:
    _load_builtin()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise HarnessError(f"unknown backend {name!r} (known: {', '.join(sorted(_REGISTRY))})") from None


def _load_builtin() -> None:
    from . import llama_box, llama_cpp, sglang, vllm, vox_box

    for backend in (llama_box.LLAMA_BOX, llama_cpp.LLAMA_CPP, sglang.SGLANG, vllm.VLLM, vox_box.VOX_BOX):
        _REGISTRY.setdefault(backend.name, backend)
