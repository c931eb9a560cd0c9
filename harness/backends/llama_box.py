"""llama-box (GPUStack's llama.cpp-based server): a prebuilt binary downloaded per pin (see harness.install.download).

GPUStack's release layout: ``{base}/gpustack/llama-box/releases/download/{version}/{asset}.zip`` beside a
``sha256sum.txt``, ``base`` from ``--tools-download-base-url`` (default https://github.com). Launch line as
GPUStack builds it: ``llama-box --host --port --model --alias --ctx-size --gpu-layers --parallel
--no-mmap --no-warmup``; readiness is ``/health``.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import InstallError
from .contract import Backend, BaseFlavour, DownloadPlan, Host, LaunchContext


def asset_name(host: Host, toolkit: str, *, dynamic: bool = False) -> str:
    """GPUStack's llama-box asset: ``[dl-]llama-box-{os}-{arch}-{toolkit}[-{toolkit_version}]``.

    ``toolkit``: "cpu" (avx2 on amd64, neon on arm64: static CPU builds), "cuda" (12.4, or 12.8 when the
    host's CUDA is >= 12.8), "hip" (6.2), "metal"."""
    if toolkit == "cpu":
        suffix = "neon" if host.arch == "arm64" else "avx2"
    elif toolkit == "cuda":
        suffix = "cuda-12.8" if host.cuda_version and host.cuda_version >= (12, 8) else "cuda-12.4"
    elif toolkit == "hip":
        suffix = "hip-6.2"
    elif toolkit == "metal":
        suffix = "metal"
    else:
        raise InstallError(f"unknown llama-box toolkit {toolkit!r} (expected one of: cpu, cuda, hip, metal)")
    return f"{'dl-' if dynamic else ''}llama-box-{host.os}-{host.arch}-{suffix}"


def release_url(base: str, version: str, filename: str) -> str:
    return f"{base.rstrip('/')}/gpustack/llama-box/releases/download/{version}/{filename}"


def releases_url(base: str) -> str:
    """Where a mirror lists llama-box releases: GitHub's API for github.com, else the GitHub Enterprise
    layout (``{base}/api/v3/repos/...``) that release mirrors commonly serve."""
    base = base.rstrip("/")
    if base in ("https://github.com", "http://github.com"):
        return "https://api.github.com/repos/gpustack/llama-box/releases?per_page=100"
    return f"{base}/api/v3/repos/gpustack/llama-box/releases?per_page=100"


def llama_box_plan(base_url: str, version: str, asset: str) -> DownloadPlan:
    return DownloadPlan(
        url=release_url(base_url, version, f"{asset}.zip"),
        sums_url=release_url(base_url, version, "sha256sum.txt"),
        filename=f"{asset}.zip",
        executable="llama-box",
    )


@dataclass(frozen=True)
class LlamaBoxFlavour(BaseFlavour):
    toolkit: str = "cpu"  # asset toolkit: cpu (avx2/neon) or cuda (12.4/12.8)
    default_package: str = "llama-box"
    model_format: str = "gguf"
    readiness_path: str = "/health"
    ready_line: str | None = r"listening on"
    ctx_size: int = 2048
    parallel: int = 4

    def asset(self, host: Host) -> str:
        return asset_name(host, self.toolkit)

    def download_plan(self, version: str, base_url: str, host: Host) -> DownloadPlan:
        return llama_box_plan(base_url, version, self.asset(host))

    def releases_url(self, base_url: str) -> str | None:
        return releases_url(base_url)

    def launch_argv(self, ctx: LaunchContext) -> list[str]:
        return [
            str(ctx.executable),
            "--host",
            ctx.host,
            "--port",
            str(ctx.port),
            "--model",
            str(ctx.model_path),
            "--alias",
            ctx.served_name,
            "--ctx-size",
            str(self.ctx_size),
            "--gpu-layers",
            "999" if ctx.gpus else "0",
            "--parallel",
            str(self.parallel),
            "--no-mmap",
            "--no-warmup",
            *ctx.extra_args,
        ]

    def launch_env(self, ctx: LaunchContext) -> dict[str, str]:
        env = super().launch_env(ctx)
        if ctx.gpus:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for g in ctx.gpus)
        return env


LLAMA_BOX = Backend(
    name="llama-box",
    installer="download",
    flavours={
        "cpu": LlamaBoxFlavour(platform="cpu", toolkit="cpu"),
        "cuda": LlamaBoxFlavour(platform="cuda", toolkit="cuda"),
    },
)
