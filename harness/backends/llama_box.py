"""llama-box (GPUStack's llama.cpp-based server): a prebuilt binary downloaded per pin (see harness.download).

Launch line as GPUStack builds it: ``llama-box --host --port --model --alias --ctx-size --gpu-layers
--parallel --no-mmap --no-warmup``; readiness is ``/health``.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..download import DownloadPlan, Host, asset_name, llama_box_plan
from . import Backend, BaseFlavour, LaunchContext, register


@dataclass(frozen=True)
class LlamaBoxFlavour(BaseFlavour):
    toolkit: str = "cpu"  # asset toolkit: cpu (avx2/neon) or cuda (12.4/12.8)
    default_package: str = "llama-box"
    model_format: str = "gguf"
    readiness_path: str = "/health"
    ready_line: str | None = r"listening on"
    ctx_size: int = 2048
    parallel: int = 4
    release_list: bool = True  # GitHub's releases API (or a mirror's copy of it)

    def asset(self, host: Host) -> str:
        return asset_name(host, self.toolkit)

    def download_plan(self, version: str, base_url: str, host: Host) -> DownloadPlan:
        return llama_box_plan(base_url, version, self.asset(host))

    def launch_argv(self, ctx: LaunchContext) -> list[str]:
        return [str(ctx.executable), "--host", ctx.host, "--port", str(ctx.port), "--model", str(ctx.model_path),
                "--alias", ctx.served_name, "--ctx-size", str(self.ctx_size), "--gpu-layers", "999" if ctx.gpus else "0",
                "--parallel", str(self.parallel), "--no-mmap", "--no-warmup", *ctx.extra_args]  # fmt: skip

    def launch_env(self, ctx: LaunchContext) -> dict[str, str]:
        env = super().launch_env(ctx)
        if ctx.gpus:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for g in ctx.gpus)
        return env


LLAMA_BOX = register(Backend(name="llama-box", installer="download", flavours={
    "cpu": LlamaBoxFlavour(platform="cpu", toolkit="cpu"),
    "cuda": LlamaBoxFlavour(platform="cuda", toolkit="cuda"),
}))  # fmt: skip
