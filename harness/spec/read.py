"""The matrix file read whole: one reader per top-level table, every error collected with its path and
reported together (``SpecError``); defaults come from the dataclasses in ``types.py``."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..backends import Backend, get_backend, known_backends  # the registry decides which backends/platforms exist
from ..backends.custom import parse_custom
from ..errors import SpecError
from ..probes.accuracy import BUILTIN_TASKS
from ..versions import valid_backend_name
from ..words import LoadProfile, ModelKind
from .platform import platform
from .table import Errors, Table, join
from .types import (
    CHECK_GROUPS,
    STARTUPS,
    TIE_BREAKS,
    Accuracy,
    Matrix,
    PlatformSpec,
    Policy,
    SloSpec,
    Thresholds,
    Workload,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

_TOP = ("backend", "custom", "platforms", "workload", "slo", "thresholds", "accuracy", "policy")


def parse_matrix(data: Mapping[str, Any], source: str, path: Path | None = None) -> Matrix:
    """Validate a matrix already read from TOML; raise SpecError listing every problem."""
    errors = Errors()
    top = Table(data, "", errors, _TOP)
    backend_name = top.get_str("backend", required=True)
    custom, flavours = _backend(top, backend_name, errors)
    platforms = _platforms(top, backend_name, custom, flavours, errors)
    workload = _workload(Table(top.get_table("workload"), "workload", errors, Workload))
    sl = Table(top.get_table("slo"), "slo", errors, SloSpec)
    slo = SloSpec(**{k: sl.get_float(k, 0.0) for k in ("ttft_ms", "tpot_ms", "e2el_ms") if k in sl.data})
    thresholds = _thresholds(Table(top.get_table("thresholds"), "thresholds", errors, Thresholds))
    accuracy = _accuracy(Table(top.get_table("accuracy"), "accuracy", errors, Accuracy), (path or Path(source)).parent)
    policy = _policy(Table(top.get_table("policy"), "policy", errors, Policy))
    if errors.items:
        raise SpecError(source, errors.items)
    assert backend_name is not None
    return Matrix(
        path=path or Path(source),
        backend=backend_name,
        platforms=platforms,
        workload=workload,
        thresholds=thresholds,
        policy=policy,
        accuracy=accuracy,
        slo=slo,
        custom=custom,
    )


def _backend(top: Table, name: str | None, errors: Errors) -> tuple[Backend | None, dict[str, str]]:
    """A registered backend, or a [custom] one; and its platforms with their default packages."""
    if name is None:
        return None, {}
    if "custom" not in top.data:
        if name in known_backends():
            return None, {p: f.default_package for p, f in get_backend(name).flavours.items()}
        known = ", ".join(known_backends())
        errors.add("backend", f"unknown backend {name!r} (known: {known}; or declare a [custom] one)")
        return None, {}
    if not valid_backend_name(name):
        errors.add("backend", f"invalid name {name!r} for a custom backend (lower-case words joined by '-' or '.')")
    elif name in known_backends():
        errors.add("backend", f"{name!r} is a built-in backend; a custom backend needs a name of its own")
    else:
        custom, problems = parse_custom(name, top.get_table("custom"))
        for where, message in problems:
            errors.add(where, message)
        if custom is not None:
            return custom, {p: f.default_package for p, f in custom.flavours.items()}
    return None, {}


def _platforms(
    top: Table, backend_name: str | None, custom: Backend | None, flavours: dict[str, str], errors: Errors
) -> dict[str, PlatformSpec]:
    platforms: dict[str, PlatformSpec] = {}
    raw = top.get_table("platforms", required=True)
    if isinstance(top.data.get("platforms"), dict) and not raw:
        errors.add("platforms", "must define at least one platform")
    if not flavours or backend_name is None:
        return platforms
    for name, value in raw.items():
        spec = platform(name, value, join("platforms", name), errors, flavours)
        if spec is None:
            continue
        platforms[name] = spec
        backend = custom or get_backend(backend_name)
        flavour = name if spec.gpustack is None else ("cuda" if "cuda" in backend.flavours else next(iter(flavours)))
        kinds = backend.flavour(flavour).api_kinds
        for i, m in enumerate(spec.models):
            # a chat server serves base models too
            served = ModelKind.CHAT if m.kind is ModelKind.COMPLETION else m.kind
            if served not in kinds:
                errors.add(
                    join(join(join("platforms", name), "models"), i) + ".kind",
                    f"{backend_name} does not serve {m.kind.value!r} models (it serves: {', '.join(kinds)})",
                )
    return platforms


def _workload(w: Table) -> Workload:
    errors = w.errors
    conc = w.data.get("concurrency", list(w.default("concurrency")))
    if not isinstance(conc, list) or not conc or not all(_positive(c, True) for c in conc):
        errors.add("workload.concurrency", f"expected a non-empty list of positive ints, got {conc!r}")
        conc = [1]
    profile = w.get_choice("profile", LoadProfile.values())
    rates = w.data.get("rates", [])
    if not isinstance(rates, list) or not all(_positive(r, False) for r in rates):
        errors.add("workload.rates", f"expected a list of positive numbers (requests/s), got {rates!r}")
        rates = []
    if profile == LoadProfile.RATE.value and not rates:
        errors.add("workload.rates", "required when profile = 'rate'")
    startup = w.get_str_list("startup") if "startup" in w.data else w.default("startup")
    for i, kind in enumerate(startup):
        if kind not in STARTUPS:
            errors.add(f"workload.startup[{i}]", f"unknown value {kind!r} (expected one of: {', '.join(STARTUPS)})")
    minimums = {"agreement_prompts": 1, "probe_concurrency": 1, "agreement_max_tokens": 1, "input_tokens": 1}
    minimums |= {"output_tokens": 2, "sweep_points": 1, "requests_per_level": 1, "repeats": 1, "speech_clips": 1}
    fields = w.read(minimums, skip=("profile", "paired"))
    paired = w.data.get("paired", w.default("paired"))
    if paired not in (True, False, "auto"):
        errors.add("workload.paired", f'expected true, false or "auto", got {paired!r}')
        paired = "auto"
    if fields.get("burstiness", 1.0) <= 0:
        errors.add("workload.burstiness", f"must be > 0, got {fields['burstiness']}")
    return Workload(
        **fields,
        profile=LoadProfile(profile) if profile in LoadProfile.values() else LoadProfile.CONCURRENCY,
        concurrency=tuple(conc),
        rates=tuple(float(r) for r in rates),
        startup=tuple(startup),
        paired={True: "always", False: "never"}.get(paired, "auto"),
    )


def _positive(value: Any, ints_only: bool) -> bool:
    number = isinstance(value, int) or (isinstance(value, float) and not ints_only)
    return number and not isinstance(value, bool) and value > 0


def _thresholds(th: Table) -> Thresholds:
    minimums = {"startup_deadline_s": 1.0, "top_logprobs": 1, "max_diverging_prompts": -1, "request_timeout_s": 0.1}
    return Thresholds(**th.read(minimums))


def _accuracy(ac: Table, base: Path) -> Accuracy:
    tasks = ac.get_str_list("tasks") if "tasks" in ac.data else ac.default("tasks")
    for i, task in enumerate(tasks):
        if task not in BUILTIN_TASKS:
            ac.errors.add(
                f"accuracy.tasks[{i}]", f"unknown task {task!r} (expected one of: {', '.join(BUILTIN_TASKS)})"
            )
    files = tuple(base / f for f in ac.get_str_list("files"))
    for i, f in enumerate(files):
        if not f.is_file():
            ac.errors.add(f"accuracy.files[{i}]", f"no such file: {f}")
    return Accuracy(**ac.read({"items_per_task": 1, "max_tokens": 1, "concurrency": 1}), tasks=tasks, files=files)


def _policy(po: Table) -> Policy:
    tie_break = po.get_choice("tie_break", TIE_BREAKS)
    required = po.get_str_list("required_checks") if "required_checks" in po.data else po.default("required_checks")
    waived = po.get_table("waived_checks")
    for name, why in waived.items():
        if not isinstance(why, str) or not why.strip():
            po.errors.add(f"policy.waived_checks.{name}", f"expected the reason as a non-empty str, got {why!r}")
    for i, check in enumerate(required):
        if check not in CHECK_GROUPS:
            po.errors.add(
                f"policy.required_checks[{i}]", f"unknown check {check!r} (expected one of: {', '.join(CHECK_GROUPS)})"
            )
    return Policy(tie_break=tie_break, required_checks=required, waived_checks=waived)


def load_matrix(path: Path | str) -> Matrix:
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise SpecError(str(path), [f"cannot read: {exc.strerror or exc}"]) from exc
    except UnicodeDecodeError as exc:
        where = f"byte 0x{exc.object[exc.start]:02x} at offset {exc.start}"
        raise SpecError(str(path), [f"cannot read: not UTF-8 text ({where})"]) from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(str(path), [f"invalid TOML: {exc}"]) from exc
    return parse_matrix(data, str(path), path)
