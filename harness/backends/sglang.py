"""SGLang: PyPI ``sglang``, a GPU engine (no CPU build to run on our CI machines).

Launch line as GPUStack builds it: ``sglang_<version> serve --model-path <dir> --host --port
--served-model-name [--tp-size N]``. Releases before the ``sglang`` console script (0.4.x and older)
have only ``python -m sglang.launch_server``: which line a pin gets is decided from what the pin
provides, not from a guessed version boundary. When ``<bin_dir>/sglang_<version>`` is a Python
interpreter (a launcher of the venv's python, made because the release has no console script, or a
manual pin), the module form is used; otherwise the ``serve`` subcommand. pipx refuses a package with
no console script of its own; such releases install with ``installer = "uv"``. Readiness is ``/health``.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

from .contract import Backend, BaseFlavour, InstalledVenv, LaunchContext, ServedMetrics

_PYTHON = re.compile(r"^python(\d+(\.\d+)?)?$")


def is_python(executable: Path) -> bool:
    """Whether the pin's executable is an interpreter (the old launch form) rather than the console script."""
    return bool(_PYTHON.match(executable.resolve().name)) or bool(_PYTHON.match(executable.name))


@dataclass(frozen=True)
class SglangFlavour(BaseFlavour):
    platform: str = "cuda"
    default_package: str = "sglang"
    readiness_path: str = "/health"
    ready_line: str | None = r"The server is fired up and ready to roll"
    pipx_app: str = "sglang"
    # GET /get_server_info {"version": ...}; metrics only with --enable-metrics (added to the launch line).
    served: ServedMetrics = ServedMetrics(
        version_path="/get_server_info",
        metrics_path="/metrics",
        prompt_counter="sglang:prompt_tokens_total",
        generation_counter="sglang:generation_tokens_total",
        ttft_histogram="sglang:time_to_first_token_seconds",
        metrics_args=("--enable-metrics",),
    )

    def post_install(self, venv: InstalledVenv, version: str) -> None:
        if (launcher := self.bin_target(venv)) is not None:
            # Not a link to the venv's python: Python finds its venv next to the path it was started by,
            # and a link in the bin dir is outside it (measured: "No module named 'sglang'").
            launcher.parent.mkdir(exist_ok=True)
            launcher.write_text(f'#!/bin/sh\nexec {shlex.quote(str(venv.python))} "$@"\n', encoding="utf-8")
            launcher.chmod(0o755)

    def bin_target(self, venv: InstalledVenv) -> Path | None:
        # With the console script, pipx's app link is the GPUStack executable; without it, a launcher of
        # the venv's python (named python, so the launch line takes the module form).
        return (
            None if (venv.python.parent / "sglang").exists() else venv.python.parent.parent / "pinmatrix-bin" / "python"
        )

    def launch_argv(self, ctx: LaunchContext) -> list[str]:
        head = (
            [str(ctx.executable), "-m", "sglang.launch_server"]
            if is_python(ctx.executable)
            else [str(ctx.executable), "serve"]
        )
        argv = head + [
            "--model-path",
            str(ctx.model_path),
            "--host",
            ctx.host,
            "--port",
            str(ctx.port),
            "--served-model-name",
            ctx.served_name,
        ]
        if len(ctx.gpus) > 1:
            argv += ["--tp-size", str(len(ctx.gpus))]
        return argv + list(self.served.metrics_args) + list(ctx.extra_args)

    def launch_env(self, ctx: LaunchContext) -> dict[str, str]:
        env = super().launch_env(ctx)
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for g in ctx.gpus)
        env["HF_HUB_OFFLINE"] = "1"
        return env


SGLANG = Backend(name="sglang", installer="pipx", flavours={"cuda": SglangFlavour()})
