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


class FakeMemNVML(FakeNVML):
    """NVML with per-device used memory that rises and falls while a cell runs."""

    def __init__(self, used_mib: dict[int, list[float]]) -> None:
        super().__init__(len(used_mib))
        self.used = {g: list(v) for g, v in used_mib.items()}

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        return index

    def nvmlDeviceGetMemoryInfo(self, handle: int):
        series = self.used[handle]
        value = series.pop(0) if len(series) > 1 else series[0]
        return type("Mem", (), {"used": value * (1 << 20)})()


def test_gpu_memory_sampler_records_the_peak() -> None:
    import time

    from harness.slots import GpuMemorySampler

    nvml = FakeMemNVML({0: [100, 900, 300], 1: [50, 60, 2000, 10]})
    with GpuMemorySampler([0, 1], interval_s=0.01, nvml=nvml) as sampler:
        time.sleep(0.2)
    assert sampler.peaks_mib == {0: 900.0, 1: 2000.0}
    assert sampler.samples >= 4
    assert nvml.calls == ["init", "shutdown"]


def test_gpu_memory_sampler_is_inert_without_gpus_or_driver() -> None:
    from harness.slots import GpuMemorySampler

    with GpuMemorySampler([]) as s:
        pass
    assert s.peaks_mib == {}
    with GpuMemorySampler([0], nvml=FakeNVML(None)) as s:
        pass
    assert s.peaks_mib == {}


def test_a_cell_waits_for_its_gpus_to_be_let_go_and_names_them_when_they_are_not() -> None:
    from harness.slots import slot_count, wait_for_free_memory

    naps: list[float] = []
    freed = FakeMemNVML({0: [5000, 3000, 200], 1: [100]})  # GPU 0: a previous server still letting go
    assert wait_for_free_memory([0, 1], max_used_mib=1024, timeout_s=60, nvml=freed, sleep=naps.append) is None
    assert naps == [1.0, 1.0] and freed.calls == ["init", "shutdown"]
    held = FakeMemNVML({0: [100], 1: [40000]})
    why = wait_for_free_memory([0, 1], max_used_mib=1024, timeout_s=0, nvml=held, sleep=naps.append)
    assert why == "GPU memory not free after 0 s (GPU 1 40000 MiB used; at most 1024 MiB allowed before a cell)"
    assert (
        wait_for_free_memory([0], max_used_mib=1024, timeout_s=0, nvml=FakeNVML(None)) is None
    )  # no driver: cannot tell
    assert [
        slot_count([0, 1, 2, 3], 1),
        slot_count([0, 1, 2, 3], 2),
        slot_count([0, 1, 2, 3], 8),
        slot_count([], 0),
    ] == [4, 2, 1, 1]


def test_a_driver_that_cannot_list_its_gpus_is_one_line() -> None:
    from harness.slots import GpuDiscoveryError

    class Broken(FakeNVML):
        def nvmlDeviceGetCount(self) -> int:
            raise RuntimeError("GPU is lost")

    nvml = Broken(2)
    with pytest.raises(
        GpuDiscoveryError, match=r"^NVML found a driver but could not list its GPUs: RuntimeError: GPU is lost$"
    ):
        discover_gpus([env_provider({}), nvml_provider(nvml)])
    assert nvml.calls == ["init", "shutdown"]
