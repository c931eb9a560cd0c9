"""GPUStack's own catalogue of the backend versions it ships: ``gpustack-runner``'s ``runner.py.json``.

GPUStack v2 publishes on PyPI, in the ``gpustack-runner`` wheel, every image it runs a backend in: the
accelerator (cuda, rocm, cann, ...) and its version, the service (vllm, sglang, mindie, voxbox) and its
version, the image, and the exact dependency pins inside (e.g. cuda 13.0, vllm 0.32.0, torch 2.13.0+cu130).
A version set ``{ gpustack_runner = "cuda", newest = 2 }`` resolves to the newest service versions shipped for
that accelerator, and each cell's installed dependencies are compared with the image's pins.

The catalogue comes from the installed ``gpustack_runner`` package when there is one, else from its newest
wheel on the package index (``pip download``, cached in the data dir; pip verifies the index's hashes).
"""

from __future__ import annotations

import importlib.resources
import json
import subprocess
import sys
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from packaging.version import InvalidVersion, Version

from .errors import HarnessError

SERVICES = {
    "vllm": "vllm",
    "sglang": "sglang",
    "vox-box": "voxbox",
    "mindie": "mindie",
}  # our backend -> GPUStack's service
MEMBER = "gpustack_runner/runner.py.json"


class CatalogueError(HarnessError):
    """GPUStack's runner catalogue could not be fetched or read."""


@dataclass(frozen=True, kw_only=True)
class Image:
    accelerator: str  # cuda, rocm, cann, ...
    accelerator_version: str
    service: str
    version: str
    image: str
    platform: str
    deprecated: bool
    dependencies: Mapping[str, str] = field(default_factory=dict)


def parse(entries: Any, source: str) -> list[Image]:
    if not isinstance(entries, list):
        raise CatalogueError(f"{source}: expected a list of images, got {type(entries).__name__}")
    out = []
    for i, e in enumerate(entries):
        try:
            out.append(
                Image(
                    accelerator=str(e["backend"]),
                    accelerator_version=str(e.get("backend_version", "")),
                    service=str(e["service"]),
                    version=str(e["service_version"]),
                    image=str(e.get("docker_image", "")),
                    platform=str(e.get("platform", "")),
                    deprecated=bool(e.get("deprecated", False)),
                    dependencies={str(k): str(v) for k, v in (e.get("dependencies") or {}).items()},
                )
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise CatalogueError(f"{source}[{i}]: not an image entry ({type(exc).__name__}: {exc})") from exc
    return out


def load(data_dir: Path) -> list[Image]:
    """The catalogue: the installed package's, else the newest wheel's from the index (cached)."""
    try:
        text = (importlib.resources.files("gpustack_runner") / "runner.py.json").read_text(encoding="utf-8")
        return parse(json.loads(text), "gpustack_runner/runner.py.json")
    except (ModuleNotFoundError, FileNotFoundError):
        pass
    folder = data_dir / "catalogue"
    wheels = sorted(folder.glob("gpustack_runner-*.whl"))
    if not wheels:
        folder.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--only-binary",
                ":all:",
                "-q",
                "--disable-pip-version-check",
                "-d",
                str(folder),
                "gpustack-runner",
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
        wheels = sorted(folder.glob("gpustack_runner-*.whl"))
        if proc.returncode != 0 or not wheels:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no wheel"]
            raise CatalogueError(f"cannot fetch gpustack-runner from the package index: {tail[0]}")
    try:
        with zipfile.ZipFile(wheels[-1]) as z:
            return parse(json.loads(z.read(MEMBER)), f"{wheels[-1].name}:{MEMBER}")
    except (KeyError, zipfile.BadZipFile, ValueError) as exc:
        raise CatalogueError(f"{wheels[-1]}: no readable {MEMBER} ({exc})") from exc


def _version(text: str) -> Version | None:
    try:
        return Version(text)
    except InvalidVersion:
        return None


def versions(images: Sequence[Image], backend: str, accelerator: str, newest: int) -> list[str]:
    """The newest ``newest`` versions of ``backend`` GPUStack ships for ``accelerator``
    (not deprecated), oldest first."""
    service = SERVICES.get(backend, backend)
    found = {i.version for i in images if i.service == service and i.accelerator == accelerator and not i.deprecated}
    ordered = sorted((v for v in found if _version(v) is not None), key=lambda v: _version(v) or Version("0"))
    if not ordered:
        raise CatalogueError(f"gpustack-runner ships no {service} image for {accelerator}")
    return ordered[-newest:]


def image_for(images: Sequence[Image], backend: str, version: str, accelerator: str) -> Image | None:
    """GPUStack's image of this backend version for the accelerator (the newest accelerator version)."""
    service, want = SERVICES.get(backend, backend), _version(version.removeprefix("v"))
    matching = [
        i for i in images if i.service == service and i.accelerator == accelerator and _version(i.version) == want
    ]
    return max(matching, key=lambda i: _version(i.accelerator_version) or Version("0"), default=None)


def differences(image: Image, installed: Mapping[str, str]) -> list[str]:
    """Where the pin's venv differs from GPUStack's image, dependency by dependency (only those both have)."""
    norm = {k.lower().replace("_", "-"): v for k, v in installed.items()}
    out = []
    for name, pinned in sorted(image.dependencies.items()):
        have = norm.get(name.lower().replace("_", "-"))
        if have is not None and have != pinned:
            out.append(f"{name} {have} here, {pinned} in {image.image}")
    return out
