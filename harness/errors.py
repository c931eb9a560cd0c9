"""The harness's exceptions, under one base.

    HarnessError
    ├── SpecError            a matrix file is invalid (carries every error found)
    ├── InstallError         a pin could not be installed (carries the decisive log line)
    ├── ModelError           a reference model could not be fetched or converted
    ├── LaunchError          a server did not become ready
    │   ├── ServerExited     ... because its process exited
    │   └── ReadinessTimeout ... because the deadline passed
    ├── ProbeError           a probe could not talk to the server at all
    ├── MachineBusy          the machine cannot host a cell now (its GPUs are in use): infrastructure
    ├── InvalidPin           a version string is not PEP 440 (versions.py, beside the Pin it guards)
    ├── GpuDiscoveryError    GPUs that are there but cannot be used as found (slots.py)
    ├── IndexError_          a package index could not be asked, or had nothing that matched (index.py)
    ├── CatalogueError       GPUStack's runner catalogue could not be read (catalogue.py)
    └── GpustackError        a GPUStack 2.x server refused or could not answer (gpustack.py; never holds the key)

Errors from httpx, subprocess and pynvml are translated at the boundary (``raise ... from exc``). A subclass
defined beside its only raiser is still drawn here (tests/unit/test_errors.py holds the tree complete).
"""

from __future__ import annotations

from pathlib import Path

from .safe import terminal


class HarnessError(Exception):
    """Base of every error the harness raises on purpose."""


class SpecError(HarnessError):
    """A matrix file is invalid; ``errors`` lists every problem found, each naming its path."""

    def __init__(self, source: str, errors: list[str]) -> None:
        self.source = source
        # one line each, whatever a key or value in the file held (newlines, escape sequences)
        self.errors = [terminal(e) for e in errors]
        super().__init__("\n".join(f"{source}: {e}" for e in self.errors))


class InstallError(HarnessError):
    """A pin could not be installed. ``reason`` is the one decisive line; ``log`` the full log."""

    def __init__(self, reason: str, log: Path | None = None) -> None:
        self.reason = reason
        self.log = log
        super().__init__(reason if log is None else f"{reason} (log: {log})")


class ModelError(HarnessError):
    """A reference model could not be resolved to a local path."""


class LaunchError(HarnessError):
    """A server did not become ready."""

    def __init__(self, message: str, log: Path | None = None) -> None:
        self.log = log
        super().__init__(message)


class ServerExited(LaunchError):
    """The server process exited before it was ready."""


class ReadinessTimeout(LaunchError):
    """The server was still not ready when the deadline passed."""


class ProbeError(HarnessError):
    """A probe could not get a usable answer from the server."""


class MachineBusy(HarnessError):
    """The machine cannot host the cell now (its GPUs are in use): an infrastructure failure, not the pin's."""
