"""Custom backends, as GPUStack v2 defines them: a run command with placeholders, a health-check path and
an install source, declared in the matrix's ``[custom]`` table instead of a module.

    [custom]
    run_command = "llama-server --host {{host}} --port {{port}} --model {{model_path}} --alias {{model_name}}"
    health_check_path = "/health"
    model_format = "gguf"          # or "hf" (safetensors dir), "dir" (any model directory as it is)
    installer = "manual"           # the pin is <bin_dir>/<backend>_<version>; or "pipx" (package, pipx_app);
                                   # or "download": download_url = "https://host/{{version}}/srv.zip", verified
                                   # against sha256sum.txt beside it (sha256sum_url) or a pin's sha256,
                                   # archive_executable = the executable inside (default: the command's first word)
    api_kinds = ["chat"]           # the model kinds it serves (default: chat, embedding)
    version_path = "/version"      # optional: where it says which version runs ({"version": "1.2.0"}), and
    version_field = "version"      #   the JSON field (dotted when nested); checked against the pin (server.version)
    metrics_path = "/metrics"      # optional: Prometheus metrics, with the token counters' sample names:
    prompt_tokens_metric = "x:prompt_tokens_total"   # checked against the usage the client received
    generation_tokens_metric = "x:generation_tokens_total"

The command is split into argv with shlex once, then placeholders are substituted inside each argument:
nothing ever goes through a shell. Its first word names the program; the pin's executable replaces it.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..words import ModelKind
from .contract import Backend, BaseFlavour, DownloadPlan, Host, LaunchContext, ServedMetrics

PLACEHOLDERS = ("model_path", "port", "model_name", "gpu_ids", "gpu_count", "host")
_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_]+)\s*\}\}")
INSTALLERS = ("manual", "pipx", "download")
API_KINDS = tuple(k.value for k in ModelKind if k is not ModelKind.COMPLETION)  # completion: a chat server serves it


def substitute(token: str, values: Mapping[str, str]) -> str:
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], token)


@dataclass(frozen=True)
class CustomFlavour(BaseFlavour):
    run_command: tuple[str, ...] = ()
    download_url: str = ""  # with {{version}}
    sha256sum_url: str = ""  # default: sha256sum.txt beside the archive
    archive_executable: str = ""

    def download_plan(self, version: str, base_url: str, host: Host) -> DownloadPlan:
        url = substitute(self.download_url, {"version": version})
        sums = (
            substitute(self.sha256sum_url, {"version": version})
            if self.sha256sum_url
            else url.rsplit("/", 1)[0] + "/sha256sum.txt"
        )
        return DownloadPlan(url=url, sums_url=sums, filename=url.rsplit("/", 1)[-1], executable=self.archive_executable)

    def launch_argv(self, ctx: LaunchContext) -> list[str]:
        values = {
            "model_path": str(ctx.model_path),
            "port": str(ctx.port),
            "model_name": ctx.served_name,
            "gpu_ids": ",".join(str(g) for g in ctx.gpus),
            "gpu_count": str(len(ctx.gpus)),
            "host": ctx.host,
        }
        return [str(ctx.executable), *(substitute(t, values) for t in self.run_command[1:]), *ctx.extra_args]

    def launch_env(self, ctx: LaunchContext) -> dict[str, str]:
        env = super().launch_env(ctx)
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for g in ctx.gpus)
        return env


def _run_command(command: Any, errors: list[tuple[str, str]]) -> list[str]:
    """The run command split into arguments once (no shell), its placeholders checked."""
    if not isinstance(command, str) or not command.strip():
        errors.append(("custom.run_command", f"expected a non-empty str, got {command!r}"))
        return []
    argv: list[str] = []
    try:
        # `{{ name }}` and `{{name}}` alike: tighten before splitting so a placeholder stays one word
        argv = shlex.split(_PLACEHOLDER.sub(lambda m: "{{" + m.group(1) + "}}", command))
    except ValueError as exc:
        errors.append(("custom.run_command", f"cannot split into arguments: {exc}"))
    for placeholder in sorted({m.group(1) for t in argv for m in _PLACEHOLDER.finditer(t)} - set(PLACEHOLDERS)):
        known = ", ".join(PLACEHOLDERS)
        errors.append(("custom.run_command", f"unknown placeholder {{{{{placeholder}}}}} (known: {known})"))
    return argv


def _download_urls(table: Mapping[str, Any], installer: Any, errors: list[tuple[str, str]]) -> dict[str, Any]:
    """``download_url`` (with ``{{version}}``, for installer = "download" only) and ``sha256sum_url``."""
    urls = {key: table.get(key, "") for key in ("download_url", "sha256sum_url")}
    for key, url in urls.items():
        if not isinstance(url, str) or (url and not url.startswith(("https://", "http://"))):
            errors.append((f"custom.{key}", f"expected an http(s) URL, got {url!r}"))
        elif url and (bad := {m.group(1) for m in _PLACEHOLDER.finditer(url)} - {"version"}):
            errors.append((f"custom.{key}", f"unknown placeholder {{{{{sorted(bad)[0]}}}}} (known: version)"))
    download = urls["download_url"]
    if installer == "download" and "{{version}}" not in str(download).replace(" ", ""):
        errors.append(
            ("custom.download_url", f"installer 'download' needs a URL with {{{{version}}}}, got {download!r}")
        )
    elif installer != "download" and download:
        errors.append(("custom.download_url", f"only for installer = 'download' (installer is {installer!r})"))
    return urls


_SERVED_KEYS = ("version_path", "version_field", "metrics_path", "prompt_tokens_metric", "generation_tokens_metric")


def _served(table: Mapping[str, Any], errors: list[tuple[str, str]]) -> ServedMetrics:
    """Where a custom backend says which version runs and counts its tokens (each optional)."""
    values = {key: table.get(key, "") for key in _SERVED_KEYS}
    for key, value in values.items():
        if not isinstance(value, str):
            errors.append((f"custom.{key}", f"expected a str, got {value!r}"))
        elif key.endswith("_path") and value and not value.startswith("/"):
            errors.append((f"custom.{key}", f"expected a path starting with '/', got {value!r}"))
    if bool(values["prompt_tokens_metric"]) != bool(values["generation_tokens_metric"]):
        errors.append(("custom.prompt_tokens_metric", "give both token metrics, or neither"))
    if values["prompt_tokens_metric"] and not values["metrics_path"]:
        errors.append(("custom.metrics_path", "the token metrics need the path they are served at"))
    return ServedMetrics(
        version_path=str(values["version_path"]),
        version_field=str(values["version_field"] or "version"),
        metrics_path=str(values["metrics_path"]),
        prompt_counter=str(values["prompt_tokens_metric"]),
        generation_counter=str(values["generation_tokens_metric"]),
    )


def parse_custom(name: str, table: Mapping[str, Any]) -> tuple[Backend | None, list[tuple[str, str]]]:
    """A Backend from a matrix's ``[custom]`` table, or the (path, message) errors that prevent it."""
    errors: list[tuple[str, str]] = []
    known = (
        "run_command",
        "health_check_path",
        "model_format",
        "installer",
        "pipx_app",
        "api_kinds",
        "download_url",
        "sha256sum_url",
        "archive_executable",
        *_SERVED_KEYS,
    )
    for key in table:
        if key not in known:
            errors.append((f"custom.{key}", f"unknown key (expected one of: {', '.join(known)})"))
    argv = _run_command(table.get("run_command"), errors)
    health = table.get("health_check_path", "/v1/models")
    if not isinstance(health, str) or not health.startswith("/"):
        errors.append(("custom.health_check_path", f"expected a path starting with '/', got {health!r}"))
    fmt = table.get("model_format", "gguf")
    if fmt not in ("gguf", "hf", "dir"):
        errors.append(("custom.model_format", f"unknown value {fmt!r} (expected one of: gguf, hf, dir)"))
    installer = table.get("installer", "manual")
    if installer not in INSTALLERS:
        errors.append(("custom.installer", f"unknown value {installer!r} (expected one of: {', '.join(INSTALLERS)})"))
    pipx_app = table.get("pipx_app", argv[0] if argv else "")
    urls = _download_urls(table, installer, errors)
    archive_executable = table.get("archive_executable", argv[0].rsplit("/", 1)[-1] if argv else "")
    kinds = table.get("api_kinds", ["chat", "embedding"])
    if not isinstance(kinds, list) or not kinds or not all(k in API_KINDS for k in kinds):
        errors.append(("custom.api_kinds", f"expected a non-empty list of {', '.join(API_KINDS)}, got {kinds!r}"))
    served = _served(table, errors)
    if errors:
        return None, errors
    # A manual pin has no package; a pipx one names it in the matrix's platforms.<p>.package.
    package = name if installer in ("manual", "download") else ""
    flavours = {
        p: CustomFlavour(
            platform=p,
            default_package=package,
            readiness_path=health,
            model_format=fmt,
            pipx_app=pipx_app,
            run_command=tuple(argv),
            api_kinds=tuple(ModelKind(k) for k in kinds),
            download_url=urls["download_url"],
            sha256sum_url=urls["sha256sum_url"],
            archive_executable=archive_executable,
            served=served,
        )
        for p in ("cpu", "cuda")
    }
    return Backend(name=name, installer=installer, flavours=flavours), []
