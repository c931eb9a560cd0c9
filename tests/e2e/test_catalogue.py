"""GPUStack's real catalogue: the gpustack-runner wheel from PyPI, read as the harness reads it."""

from __future__ import annotations

from pathlib import Path

from harness import catalogue


def test_the_published_catalogue_lists_cuda_vllm_images_with_their_pins(tmp_path: Path) -> None:
    images = catalogue.load(tmp_path)  # pip download of the newest gpustack-runner wheel (cached in tmp_path)
    assert len(images) > 100 and list((tmp_path / "catalogue").glob("gpustack_runner-*.whl"))
    newest = catalogue.versions(images, "vllm", "cuda", 2)
    assert len(newest) == 2
    image = catalogue.image_for(images, "vllm", newest[-1], "cuda")
    assert image is not None and image.image.startswith("gpustack/runner:cuda") and "+cu" in image.dependencies["torch"]
