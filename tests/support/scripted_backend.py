"""A backend for tests: launches tests/support/scripted_server.py through a bin-dir executable.

Loaded as a pytest plugin (``-p tests.support.scripted_backend``) or imported by tests; it only
registers itself in the real registry, so everything else runs the product's own code paths.
"""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from harness.backends import Backend, BaseFlavour, LaunchContext, ServedMetrics, register
from harness.cell import RunContext, run_cell
from harness.results import CellResult
from harness.words import ModelKind

SERVER = Path(__file__).with_name("scripted_server.py")


@dataclass(frozen=True)
class ScriptedFlavour(BaseFlavour):
    default_package: str = "scripted-server"
    model_format: str = "gguf"
    ready_line: str | None = r"scripted: serving"
    startup_phases: Mapping[str, str] = field(default_factory=lambda: {"boot_s": r"scripted: booted in ([\d.]+) s"})
    pipx_app: str = "scripted"
    served: ServedMetrics = ServedMetrics(
        version_path="/version",
        metrics_path="/metrics",
        prompt_counter="scripted:prompt_tokens_total",
        generation_counter="scripted:generation_tokens_total",
        ttft_histogram="scripted:time_to_first_token_seconds",
    )

    def launch_argv(self, ctx: LaunchContext) -> list[str]:
        return [
            str(ctx.executable),
            "--host",
            ctx.host,
            "--port",
            str(ctx.port),
            "--served-model-name",
            ctx.served_name,
            "--model",
            str(ctx.model_path),
            *ctx.extra_args,
        ]

    def launch_env(self, ctx: LaunchContext) -> dict[str, str]:
        return {"CUDA_VISIBLE_DEVICES": ",".join(map(str, ctx.gpus))} if self.platform == "cuda" else {}


# "cuda": the same server told which GPUs are its slot's, for scheduling tests with PINMATRIX_GPUS set
SCRIPTED = register(
    Backend(
        name="scripted", installer="pipx", flavours={"cpu": ScriptedFlavour(), "cuda": ScriptedFlavour(platform="cuda")}
    )
)


@dataclass(frozen=True)
class ScriptedSpeechFlavour(ScriptedFlavour):
    """The same server as a speech backend (its pins are ``scripted-speech_<version>``)."""

    api_kinds: tuple[ModelKind, ...] = (ModelKind.STT, ModelKind.TTS)
    model_format: str = "dir"


SCRIPTED_SPEECH = register(Backend(name="scripted-speech", installer="pipx", flavours={"cpu": ScriptedSpeechFlavour()}))


def install_manual_pin(bin_dir: Path, version: str, *args: str, backend: str = "scripted") -> Path:
    """Put ``<backend>_<version>`` in the bin dir, as a person installing a pin by hand would. The server says it
    runs ``version`` (GET /version) unless ``args`` say otherwise (``--report-version``)."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    exe = bin_dir / f"{backend}_{version}"
    if "--report-version" not in args:
        args = (*args, "--report-version", version)
    quoted = " ".join(f"'{a}'" for a in (sys.executable, str(SERVER), *args))
    exe.write_text(f'#!/bin/sh\nexec {quoted} "$@"\n', encoding="utf-8")
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return exe


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is dead for our purposes
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def run_second_pin(ctx: RunContext, *args: str, backend: str = "scripted") -> tuple[CellResult, set[str]]:
    """Run the matrix's second pin (``2.0.0``) as a scripted server started with ``args``; the result and
    the names of its failed checks. The pin is removed afterwards, so the next case installs its own."""
    exe = install_manual_pin(ctx.paths.bin_dir, "2.0.0", *args, backend=backend)
    try:
        plat = ctx.matrix.platforms[ctx.platform]
        result = run_cell(ctx, plat.versions[1], plat.models[0])
    finally:
        exe.unlink()
    return result, {c.name for c in result.checks if c.passed is False}
