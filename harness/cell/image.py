"""The pin's venv next to GPUStack's own image of that version: what a deployment through GPUStack would run."""

from __future__ import annotations

import functools
from pathlib import Path

from .. import catalogue
from ..results import CellResult
from .context import RunContext


@functools.cache
def _catalogue(data_dir: Path) -> list[catalogue.Image] | str:
    try:
        return catalogue.load(data_dir)
    except catalogue.CatalogueError as exc:
        return str(exc)


def against_gpustack_image(ctx: RunContext, result: CellResult) -> None:
    """A note: "torch 2.13.0+cpu here, 2.13.0+cu130 in gpustack/runner:cuda13.0-vllm0.32.0"."""
    if result.backend not in catalogue.SERVICES or result.fingerprint is None or not result.fingerprint.distributions:
        return
    images = _catalogue(ctx.paths.data_dir)
    if isinstance(images, str):
        result.notes["gpustack image"] = f"not compared: {images}"
        return
    # CPU pins: next to the CUDA image GPUStack ships
    accelerator = "cuda" if ctx.platform in ("cpu", "cuda") else ctx.platform
    image = catalogue.image_for(images, result.backend, result.version, accelerator)
    if image is None:
        result.notes["gpustack image"] = f"GPUStack ships no {accelerator} image of {result.backend} {result.version}"
        return
    diff = catalogue.differences(image, result.fingerprint.distributions)
    result.notes["gpustack image"] = f"{image.image}: " + (
        "; ".join(diff) if diff else "every shared dependency pinned alike"
    )
