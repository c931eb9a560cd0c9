"""vox-box: GPUStack's speech server (speech-to-text with faster-whisper, text-to-speech), PyPI ``vox-box``.

Launch line: ``vox-box_<version> start --model <dir> --data-dir <dir> --device cpu|cuda:N --host --port``.
Readiness is ``GET /health`` only: vox-box exits 0 after "Model isn't supported", so an exit code says
nothing. Installing it builds ``openai-whisper`` from an sdist whose setup.py imports ``pkg_resources``,
which setuptools 81 removed: the build is constrained to ``setuptools<81`` (data below, applied by the
installer through PIP_BUILD_CONSTRAINT, because pipx hands ``--pip-args`` to its own bundled pip too).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..words import ModelKind
from .contract import Backend, BaseFlavour, LaunchContext


@dataclass(frozen=True)
class VoxBoxFlavour(BaseFlavour):
    default_package: str = "vox-box"
    model_format: str = "dir"  # a model directory used as it is (faster-whisper: model.bin + tokenizer.json)
    readiness_path: str = "/health"
    ready_line: str | None = r"vox_box\.server\.server - INFO - Serving on "  # cross-checks the /health poll
    pipx_app: str = "vox-box"
    build_constraints: tuple[str, ...] = ("setuptools<81",)
    api_kinds: tuple[ModelKind, ...] = (ModelKind.STT, ModelKind.TTS)
    supports_ignore_eos: bool = False

    def launch_argv(self, ctx: LaunchContext) -> list[str]:
        device = "cuda:0" if ctx.gpus else "cpu"  # CUDA_VISIBLE_DEVICES renumbers the slot's GPUs from 0
        return [
            str(ctx.executable),
            "start",
            "--model",
            str(ctx.model_path),
            "--data-dir",
            str(ctx.cache_dir / "vox-box"),
            "--device",
            device,
            "--host",
            ctx.host,
            "--port",
            str(ctx.port),
            *ctx.extra_args,
        ]

    def launch_env(self, ctx: LaunchContext) -> dict[str, str]:
        env = super().launch_env(ctx)
        env["HF_HUB_OFFLINE"] = "1"  # the model is local; never reach for a hub mid-run
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for g in ctx.gpus)
        return env


VOX_BOX = Backend(
    name="vox-box", installer="pipx", flavours={"cpu": VoxBoxFlavour(), "cuda": VoxBoxFlavour(platform="cuda")}
)
