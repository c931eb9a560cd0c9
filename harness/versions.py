"""Pin versions and the GPUStack naming rules built on them.

GPUStack keeps a pinned version exactly as the user wrote it (``v0.8.5`` stays ``v0.8.5``) in the
executable's name, ``<backend>_<version>`` (``.exe`` on Windows), and PEP 440 accepts the ``v`` in
``vllm==v0.8.5``. Every version passes through :func:`parse_pin` before it reaches a name, a path or an
argv list, so nothing but a valid PEP 440 string ever does.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass

from packaging.version import InvalidVersion, Version

from .errors import HarnessError

# Backend names as GPUStack spells them: lower-case words joined by '-', '.' (llama.cpp) or digits.
_BACKEND_NAME = re.compile(r"^[a-z][a-z0-9]*(?:[.-][a-z0-9]+)*$")


class InvalidPin(HarnessError):
    """A version string is not a valid PEP 440 version."""


@dataclass(frozen=True, order=False)
class Pin:
    """A pinned backend version: ``text`` as written, ``version`` for ordering."""

    text: str
    version: Version

    def __str__(self) -> str:
        return self.text


def parse_pin(text: str) -> Pin:
    """Validate ``text`` as a PEP 440 version, keeping it as written."""
    if text != text.strip() or not text:
        raise InvalidPin(f"invalid version {text!r}: empty or surrounded by spaces")
    try:
        return Pin(text=text, version=Version(text))
    except InvalidVersion as exc:
        raise InvalidPin(f"invalid version {text!r}: not a PEP 440 version") from exc


def valid_backend_name(name: str) -> bool:
    return bool(_BACKEND_NAME.match(name))


def executable_name(backend: str, pin: Pin, *, windows: bool | None = None) -> str:
    """The bin-dir name GPUStack looks for: ``vllm_v0.7.3`` (``vllm_v0.7.3.exe`` on Windows)."""
    if not valid_backend_name(backend):
        raise HarnessError(f"invalid backend name {backend!r}")
    windows = sys.platform == "win32" if windows is None else windows
    return f"{backend}_{pin.text}" + (".exe" if windows else "")


def pipx_suffix(pin: Pin) -> str:
    """``pipx install --suffix`` value; pipx appends it to every app name: ``vllm`` -> ``vllm_0.32.0``."""
    return f"_{pin.text}"


def requirement(package: str, pin: Pin) -> str:
    """``vllm==v0.8.5``: the version kept as written, which pip normalises itself."""
    return f"{package}=={pin.text}"


def path_safe(text: str) -> str:
    """A file-name-safe form of a label (versions are already safe; model names may not be)."""
    return re.sub(r"[^A-Za-z0-9._+-]", "_", text).strip(".") or "_"


def is_windows() -> bool:
    return os.name == "nt"


def split_executable_name(name: str) -> tuple[str, Pin] | None:
    """``vllm_v0.7.3`` -> ("vllm", Pin("v0.7.3")); None when the name is not ``<backend>_<version>``."""
    stem = name.removesuffix(".exe")
    backend, sep, version = stem.rpartition("_")
    if not sep or not valid_backend_name(backend):
        return None
    try:
        return backend, parse_pin(version)
    except InvalidPin:
        return None
