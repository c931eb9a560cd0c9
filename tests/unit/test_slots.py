from __future__ import annotations

import pytest

from harness.slots import Slot, default_platform, discover_gpus, env_provider, nvml_provider, slot_for_worker


class FakeNVML:
    """Stands in for the pynvml module at the NVML boundary."""

    def __init__(self, count: int | None) -> None:
        self.count, self.calls = count, []

    def nvmlInit(self) -> None:
        self.calls.append("init")
        if self.count is None:
            raise RuntimeError("NVML Shared Library Not Found")

    def nvmlDeviceGetCount(self) -> int:
        return self.count or 0

    def nvmlShutdown(self) -> None:
        self.calls.append("shutdown")


def test_env_override_wins() -> None:
    nvml = FakeNVML(8)
    assert discover_gpus([env_provider({"PINMATRIX_GPUS": "1,3"}), nvml_provider(nvml)]) == [1, 3]
    assert discover_gpus([env_provider({"PINMATRIX_GPUS": ""}), nvml_provider(nvml)]) == []
    assert nvml.calls == []


def test_nvml_counts_devices_and_shuts_down() -> None:
    nvml = FakeNVML(2)
    assert discover_gpus([env_provider({}), nvml_provider(nvml)]) == [0, 1]
    assert nvml.calls == ["init", "shutdown"]


def test_no_driver_means_cpu() -> None:
    gpus = discover_gpus([env_provider({}), nvml_provider(FakeNVML(None))])
    assert gpus == []
    assert default_platform(gpus) == "cpu"
    assert default_platform([0]) == "cuda"


def test_workers_get_disjoint_gpu_groups() -> None:
    assert slot_for_worker("cuda", [0, 1, 2, 3], 2, 0) == Slot(platform="cuda", gpus=(0, 1))
    assert slot_for_worker("cuda", [0, 1, 2, 3], 2, 1) == Slot(platform="cuda", gpus=(2, 3))
    assert slot_for_worker("cuda", [0, 1, 2, 3], 1, 5).gpus == (1,)
    assert slot_for_worker("cpu", [], 0, 3) == Slot(platform="cpu")


def test_not_enough_gpus() -> None:
    with pytest.raises(ValueError, match="a cell needs 2 GPU"):
        slot_for_worker("cuda", [0], 2, 0)
