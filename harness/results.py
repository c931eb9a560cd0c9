"""Outcomes as data: one typed ``CellResult`` per cell, appended to ``results.jsonl`` the moment the cell ends.

Every part is a frozen dataclass that other runs, other machines and later versions of the harness read
back: ``Check``, ``LoadPoint`` (its ``Run`` per repeat, the unit explicit, sample counts in every
``Distribution``), ``Agreement``, ``TextAccuracy`` / ``SpeechAccuracy``, ``Startup``, the install record
and the ``Fingerprint``. JSON goes through ``harness.serial`` and is described by the JSON Schema shipped
as ``harness/schema/results-v2.json``. Schema version 1 files (dicts, before the types) are converted
on load, with one line saying so.
"""

from __future__ import annotations

import enum
import json
import logging
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from filelock import FileLock

from .fingerprint import Fingerprint, Machine
from .install.record import InstallRecord
from .serial import LoadError, dump, load_record
from .stability import Stability
from .stats import Distribution, ci95_positive, percentile
from .words import AgreementKind

log = logging.getLogger(__name__)
SCHEMA_VERSION = 2
SCHEMA_FILE = Path(__file__).parent / "schema" / f"results-v{SCHEMA_VERSION}.json"
TEXT_UNIT, AUDIO_UNIT = "output tok/s", "audio s/s"


class Status(str, enum.Enum):
    PASSED = "passed"
    FAILED = "failed"  # the pin ran but a required check failed
    ERROR = "error"  # the pin could not be measured (install, model, startup)
    SKIPPED = "skipped"


class FailureClass(str, enum.Enum):
    INSTALL_FAILED = "install-failed"
    MODEL_FAILED = "model-failed"
    STARTUP_FAILED = "startup-failed"
    PROBE_FAILED = "probe-failed"  # the server stopped answering mid-probe
    CHECK_FAILED = "failed"  # answered, but wrongly (conformance or agreement)
    HARNESS_ERROR = "harness-error"  # a bug in the harness itself
    OUT_OF_MEMORY = "out-of-memory"  # the server's log says so, or it got SIGKILL (what the OOM killer sends)
    INFRASTRUCTURE = "infrastructure"  # the machine, not the pin: e.g. its GPUs were busy before the cell began
    INTERRUPTED = "interrupted"  # Ctrl-C / SIGTERM mid-cell: recorded, and run again when the run is resumed


_EVIDENCE_CHARS = 600  # per evidence field: enough to read, small enough for a report
_SHORTENED = re.compile(r"… \(\d+ chars\)$")


def _short(value: Any) -> Any:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    if len(text) <= _EVIDENCE_CHARS or (
        isinstance(value, str) and _SHORTENED.search(text) and len(text) < _EVIDENCE_CHARS + 30
    ):
        return value  # short, or already shortened (read back from a results file)
    return text[:_EVIDENCE_CHARS] + f"… ({len(text)} chars)"


@dataclass(frozen=True, kw_only=True)
class Check:
    """A verdict with the evidence a person needs to act on it. ``passed`` None: could not be evaluated
    (not a failure, but a required check that was not evaluated keeps a pin from being recommended)."""

    group: str  # conformance | agreement | accuracy
    name: str
    passed: bool | None
    detail: str = ""
    evidence: Mapping[str, Any] = field(default_factory=dict)
    waived: str = ""  # why the matrix accepts this failure (reported, not blocking)

    def __post_init__(self) -> None:
        object.__setattr__(self, "evidence", {k: _short(v) for k, v in self.evidence.items()})

    def blocking(self, required: Sequence[str]) -> bool:
        """A failed check in a required group that the matrix has not waived."""
        return self.group in required and self.passed is False and not self.waived


# --- load ---------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Run:
    """One repeat of one load point. ``rate`` is in the point's unit; ``distributions`` hold the
    latencies by name (text: ttft_ms, tpot_ms, itl_ms, e2el_ms, loop_lag_ms; speech: latency_ms, rtf)."""

    rate: float
    requests: int
    completed: int
    failed: int
    duration_s: float
    request_s: float
    distributions: Mapping[str, Distribution] = field(default_factory=dict)
    samples: Mapping[str, tuple[float, ...]] = field(default_factory=dict)  # per request, for verdicts (bootstrap)
    output_tokens: int = 0
    audio_s: float = 0.0
    goodput_req_s: float | None = None  # requests meeting every SLO target / duration
    token_count_mismatches: int = 0  # streamed chunks != usage.completion_tokens
    client_cpu_s: float = 0.0
    client_cpu_util: float = 0.0  # client CPU seconds / wall seconds (one core)
    saturated: bool = False  # the client, not the server, was the limit
    saturation_reason: str = ""
    errors: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class LoadPoint:
    """A load point over its repeats: the median rate, the 95% CI of the mean (2+ repeats), every run."""

    label: str  # c=4, rate=2/s, rate=max
    mode: str  # concurrency | rate
    target: float | None  # concurrency or requests/s; None: all at once
    unit: str  # output tok/s | audio s/s
    runs: tuple[Run, ...]
    median: float
    ci95: tuple[float, float] | None = None
    saturated: bool = False
    saturation_reason: str = ""

    @classmethod
    def of(cls, *, label: str, mode: str, target: float | None, unit: str, runs: Sequence[Run]) -> LoadPoint:
        """The one aggregation over repeats, for text and speech alike."""
        rates = [r.rate for r in runs]
        return cls(
            label=label,
            mode=mode,
            target=None if target is None or math.isinf(target) else target,
            unit=unit,
            runs=tuple(runs),
            median=percentile(rates, 50),
            ci95=ci95_positive(rates),
            saturated=any(r.saturated for r in runs),
            saturation_reason="; ".join(sorted({r.saturation_reason for r in runs if r.saturation_reason})),
        )

    @property
    def run(self) -> Run:
        """The median repeat, whose latencies the report shows."""
        return sorted(self.runs, key=lambda r: r.rate)[(len(self.runs) - 1) // 2]

    def dist(self, name: str) -> Distribution | None:
        return self.run.distributions.get(name)


# --- correctness --------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class TaskScore:
    correct: int
    n: int
    accuracy: float
    wilson_low: float
    wilson_high: float


@dataclass(frozen=True, kw_only=True)
class Miss:
    task: str
    prompt: str
    expected: str
    actual: str


@dataclass(frozen=True, kw_only=True)
class TextAccuracy:
    """Seeded task sets, exact match, Wilson 95% intervals."""

    kind: Literal["tasks"] = "tasks"
    digest: str  # of the items: only equal digests compare
    overall: TaskScore
    tasks: Mapping[str, TaskScore] = field(default_factory=dict)
    misses: tuple[Miss, ...] = ()  # the first few
    outcomes: str = ""  # "1"/"0" per item, in item order: what the paired test against the reference compares


@dataclass(frozen=True, kw_only=True)
class ClipScore:
    spoken: str
    heard: str
    edits: int


@dataclass(frozen=True, kw_only=True)
class SpeechAccuracy:
    """Word error rate against the spoken (or synthesized) text."""

    kind: Literal["wer"] = "wer"
    wer: float
    edits: int
    words: int
    clips: int
    per_clip: tuple[ClipScore, ...] = ()
    reference_wer: float | None = None


Accuracy = TextAccuracy | SpeechAccuracy


@dataclass(frozen=True, kw_only=True)
class ItemAgreement:
    """One prompt (or clip) against the reference pin's answer to it."""

    prompt: str
    identical: bool
    position: int | None = None  # first diverging token
    ours: str = ""  # token (or transcript) there
    reference: str = ""
    close: bool = True  # each side's token in the other's top-k there
    ours_text: str = ""
    reference_text: str = ""


@dataclass(frozen=True, kw_only=True)
class Agreement:
    """Agreement with the reference pin. ``kind``: reference (this is it), not-compared (no stored
    outputs), greedy (text, top-k rule), transcripts (speech), embeddings (cosine)."""

    kind: AgreementKind
    reference_version: str
    compared: int = 0  # prompts or clips
    identical: int = 0
    close: int = 0  # diverged inside the top-k rule
    differ: int = 0  # diverged outside it (or transcripts that differ)
    prompt_logprob_max_delta: float | None = None
    wer_vs_reference: float | None = None
    items: tuple[ItemAgreement, ...] = ()
    note: str = ""

    def __post_init__(self) -> None:  # a kind given as its word (a test, an older caller) becomes the member
        object.__setattr__(self, "kind", AgreementKind(self.kind))


@dataclass(frozen=True, kw_only=True)
class Startup:
    seconds: float  # spawn -> first ready response
    log_ready_s: float | None = None  # when the server's ready line appeared (cross-check)
    phases: Mapping[str, float] = field(default_factory=dict)  # the server's own, from its log


@dataclass(kw_only=True)
class CellResult:
    """One cell, built up by ``run_cell`` phase by phase and stored whole when it ends."""

    cell_id: str
    backend: str
    version: str
    model: str
    platform: str
    is_reference: bool
    status: Status = Status.PASSED
    failure_class: FailureClass | None = None
    reason: str = ""
    expected_failure: FailureClass | None = None  # the matrix's `expect`: this class is an xfail
    selected_by: str = ""  # the version set that brought this pin in
    variant: str = ""  # the launch variant ("": the platform declares none)
    baseline_variant: str = ""  # the variant whose reference pin this cell is compared with
    deployed_variant: str = ""  # the platform's first variant: the launch deployed today
    # What GPUStack would deploy it with: every server argument beyond model, name, host and port
    # (platform, model and variant serve_args), and the environment the matrix sets (secrets masked).
    backend_parameters: tuple[str, ...] = ()
    backend_env: dict[str, str] = field(default_factory=dict)
    phases: dict[str, float] = field(
        default_factory=dict
    )  # seconds: install, model, calibration, startup, probes, warm start
    probe_s: dict[str, float] = field(
        default_factory=dict
    )  # seconds per probe inside "probes": conformance, ..., load c=4
    conformance_s: dict[str, float] = field(
        default_factory=dict
    )  # seconds per group of conformance checks: chat, stream, ...
    wall_s: float = 0.0  # the whole cell; wall_s - sum(phases) is the harness's own overhead
    startup: dict[str, Startup] = field(default_factory=dict)  # cold, warm
    gpu_memory_peak_mib: dict[str, float] = field(default_factory=dict)
    stability: Stability | None = None  # the machine's speed before and after the server ran
    install: InstallRecord | None = None
    fingerprint: Fingerprint | None = None
    notes: dict[str, str] = field(default_factory=dict)  # how probes ran: fixed output length, speech source
    checks: list[Check] = field(default_factory=list)
    agreement: Agreement | None = None
    accuracy: TextAccuracy | SpeechAccuracy | None = None
    throughput: list[LoadPoint] = field(default_factory=list)
    log_path: str = ""
    log_excerpt: str = ""
    warnings: list[str] = field(default_factory=list)
    started_at: str = ""
    finished_at: str = ""

    def __post_init__(self) -> None:  # a class given as its word (a test, an older caller) becomes the member
        if self.expected_failure is not None:
            self.expected_failure = FailureClass(self.expected_failure)

    @property
    def label(self) -> str:
        return f"{self.backend}_{self.version}"

    @property
    def pin_label(self) -> str:
        """The pin as reports name it: its version, and its launch variant when the platform has several."""
        return f"{self.version} [{self.variant}]" if self.variant else self.version

    @property
    def deployed(self) -> bool:
        """The reference pin in the variant deployed today: what every other cell is weighed against."""
        return self.is_reference and self.variant == self.deployed_variant

    @property
    def is_baseline(self) -> bool:
        """The cell its variant's other cells are compared with: the reference pin, in a variant
        compared with itself."""
        return self.is_reference and self.baseline_variant == self.variant

    @property
    def hardware(self) -> str:
        """What numbers from this cell compare with: the GPU model, else the CPU's ISA (``Fingerprint.numerics``)."""
        return self.fingerprint.numerics if self.fingerprint is not None else "unknown"

    @property
    def final(self) -> bool:
        """An outcome the cell reached itself; an interrupted cell is not final and runs again on resume."""
        return self.status is not Status.SKIPPED

    @property
    def executable(self) -> str:
        return self.install.executable if self.install else ""

    @property
    def installed_now(self) -> bool:
        return bool(self.install and self.install.installed_now)

    @property
    def startup_s(self) -> float | None:
        """The cold start, spawn -> first ready response."""
        cold = self.startup.get("cold")
        return cold.seconds if cold else None

    def usable_points(self) -> list[LoadPoint]:
        """Load points a recommendation may use: not client-bound."""
        return [p for p in self.throughput if not p.saturated]

    @property
    def rate_unit(self) -> str:
        """What this cell's throughput counts: generated tokens, or seconds of audio handled."""
        return self.throughput[0].unit if self.throughput else TEXT_UNIT

    def peak_point(self) -> LoadPoint | None:
        usable = [p for p in self.usable_points() if not math.isnan(p.median)]
        return max(usable, key=lambda p: p.median) if usable else None

    def peak_rate(self) -> float | None:
        """The best usable load point's throughput, in ``rate_unit``."""
        peak = self.peak_point()
        return peak.median if peak else None

    def peak_ci95(self) -> tuple[float, float] | None:
        """The 95% CI of the peak point's throughput, when it was repeated."""
        peak = self.peak_point()
        return peak.ci95 if peak else None

    def first_p50_ms(self) -> float | None:
        """At the first load point (what a single user sees): TTFT p50 for text, request latency p50 for audio."""
        if not self.throughput:
            return None
        d = self.throughput[0].dist("ttft_ms") or self.throughput[0].dist("latency_ms")
        return None if d is None or math.isnan(d.p50) else d.p50

    def overhead_s(self) -> float | None:
        """What no phase accounts for: the harness's own time (process start/stop, bookkeeping)."""
        return self.wall_s - sum(self.phases.values()) if self.wall_s else None

    def to_dict(self) -> dict[str, Any]:
        return {"schema_version": SCHEMA_VERSION, **dump(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CellResult:
        version = data.get("schema_version")
        if version == 1:
            data = convert_v1(data)
        elif version != SCHEMA_VERSION:
            raise LoadError(f"schema_version {version!r} is not supported (expected {SCHEMA_VERSION}, or 1 to convert)")
        return load_record(cls, {k: v for k, v in data.items() if k != "schema_version"})


def results_schema() -> dict[str, Any]:
    """The JSON Schema of results.json (and of each results.jsonl line, ``#/$defs/CellLine``)."""
    from .serial import schema

    doc = schema(CellResult)
    defs = doc["$defs"]
    cell = dict(defs["CellResult"])
    cell["properties"] = {"schema_version": {"const": SCHEMA_VERSION}, **cell["properties"]}
    cell["required"] = ["schema_version", *cell["required"]]
    defs["CellResult"] = cell
    return {
        "$schema": doc["$schema"],
        "$id": f"https://pinmatrix.invalid/schema/results-v{SCHEMA_VERSION}.json",
        "title": "pinmatrix results.json",
        "type": "object",
        "properties": {
            "schema_version": {"const": SCHEMA_VERSION},
            "run_id": {"type": "string"},
            "backend": {"type": "string"},
            "matrix": {"type": "string"},
            "cells": {"type": "array", "items": {"$ref": "#/$defs/CellResult"}},
        },
        "required": ["schema_version", "run_id", "backend", "cells"],
        "additionalProperties": False,
        "$defs": defs,
    }


# --- schema version 1 -------------------------------------------------------------------------


def _v1_point(p: Mapping[str, Any]) -> dict[str, Any]:
    audio = "audio_s_per_s" in p or "audio_s_per_s_median" in p
    key = "audio_s_per_s" if audio else "output_tok_s"
    names = ("latency_ms", "rtf") if audio else ("ttft_ms", "tpot_ms", "itl_ms", "e2el_ms", "loop_lag_ms")

    def run(r: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "rate": r.get(key),
            "requests": r.get("requests", 0),
            "completed": r.get("completed", 0),
            "failed": r.get("failed", 0),
            "duration_s": r.get("duration_s"),
            "request_s": r.get("request_s"),
            "distributions": {n: r[n] for n in names if isinstance(r.get(n), dict)},
            "output_tokens": r.get("output_tokens", 0),
            "audio_s": r.get("audio_s", 0.0),
            "goodput_req_s": r.get("goodput_req_s"),
            "token_count_mismatches": r.get("token_count_mismatches", 0),
            "client_cpu_s": r.get("client_cpu_s", 0.0),
            "client_cpu_util": r.get("client_cpu_util", 0.0),
            "saturated": bool(r.get("saturated", False)),
            "saturation_reason": r.get("saturation_reason", ""),
            "errors": list(r.get("errors", [])),
        }

    runs = [run(r) for r in p.get("repeats") or [p]]
    ci = p.get(f"{key}_ci95")
    return {
        "label": p.get("label", ""),
        "mode": p.get("mode", "concurrency"),
        "target": p.get("target"),
        "unit": AUDIO_UNIT if audio else TEXT_UNIT,
        "runs": runs,
        "median": p.get(f"{key}_median", p.get(key)),
        "ci95": list(ci) if ci else None,
        "saturated": bool(p.get("saturated", False)),
        "saturation_reason": p.get("saturation_reason", ""),
    }


def _v1_agreement(a: Mapping[str, Any]) -> dict[str, Any] | None:
    if not a:
        return None
    if a.get("reference"):
        return {"kind": "reference", "reference_version": ""}
    if "clips" in a:
        return {
            "kind": "transcripts",
            "reference_version": a.get("reference_version", ""),
            "compared": a["clips"],
            "identical": a.get("identical", 0),
            "differ": a.get("differ", 0),
            "wer_vs_reference": a.get("wer_vs_reference"),
            "items": [
                {
                    "prompt": "",
                    "identical": False,
                    "ours_text": c.get("ours", ""),
                    "reference_text": c.get("reference", ""),
                }
                for c in a.get("per_clip", [])
            ],
        }
    if "prompts" in a:
        return {
            "kind": "greedy",
            "reference_version": a.get("reference_version", ""),
            "compared": a["prompts"],
            "identical": a.get("identical", 0),
            "close": a.get("close", 0),
            "differ": a.get("disagree", 0),
            "prompt_logprob_max_delta": a.get("prompt_logprob_max_delta"),
            "items": list(a.get("per_prompt", [])),
        }
    return {"kind": "not-compared", "reference_version": "", "note": a.get("note", "")}


def _v1_accuracy(a: Mapping[str, Any]) -> dict[str, Any] | None:
    if not a:
        return None
    if "wer" in a:
        return {
            "kind": "wer",
            "wer": a["wer"],
            "edits": a.get("edits", 0),
            "words": a.get("words", 0),
            "clips": a.get("clips", len(a.get("per_clip", []))),
            "per_clip": list(a.get("per_clip", [])),
            "reference_wer": a.get("reference_wer"),
        }
    return {
        "kind": "tasks",
        "digest": a.get("digest", ""),
        "overall": a["overall"],
        "tasks": a.get("tasks", {}),
        "misses": list(a.get("misses", [])),
    }


def convert_v1(data: Mapping[str, Any]) -> dict[str, Any]:
    """A schema-1 cell (plain dicts) in schema 2. Its machine is unknown beyond host name and
    architecture, so its numbers never compare with a fingerprinted run's."""
    fp = data.get("fingerprint") or {}
    command = fp.get("install_command") or []
    kind = fp.get("origin") or (
        "download" if command[:1] == ["download"] else "manual" if command[:1] == ["manual"] else "pipx"
    )
    install = None
    if data.get("executable") or fp.get("origin"):
        install = InstallRecord(
            kind=kind,
            executable=data.get("executable", ""),
            installed_now=bool(data.get("installed_now")),
            size_bytes=int(fp.get("venv_bytes") or fp.get("install_bytes") or 0),
            command=(tuple(command),) if kind == "pipx" and command else (),
            url=command[1] if kind == "download" and len(command) > 1 else "",
            build_constraints=tuple(fp.get("build_constraints") or ()),
            note="converted from results schema 1: what ran was not recorded",
        )
    machine = Machine(
        hostname=fp.get("host", ""),
        os="",
        arch=fp.get("machine", ""),
        python="",
        cpu_model="unknown",
        cores=0,
        memory_bytes=0,
        cpu_flags=(),
    )
    fingerprint = Fingerprint(
        machine=machine,
        slot=fp.get("slot", "cpu"),
        package=fp.get("package", ""),
        model_source=fp.get("model_source", ""),
        model_path=fp.get("model_path", ""),
        model_sha256=fp.get("model_sha256", ""),
        numerics="unknown (schema 1)",
    )
    notes = {k: str(fp[k]) for k in ("fixed_output_length",) if k in fp}
    if "speech" in fp:
        notes["speech"] = json.dumps(fp["speech"], sort_keys=True)
    checks = [
        {k: v for k, v in c.items() if k in ("group", "name", "passed", "detail", "evidence")}
        | {"waived": c.get("waived") or ""}
        for c in data.get("checks", [])
    ]
    startup = {
        k: {"seconds": s.get("seconds"), "log_ready_s": s.get("log_ready_s"), "phases": s.get("phases") or {}}
        for k, s in (data.get("startup") or {}).items()
    }
    if not startup and data.get("startup_s") is not None:
        startup = {"cold": {"seconds": data["startup_s"]}}
    keep = (
        "cell_id",
        "backend",
        "version",
        "model",
        "platform",
        "is_reference",
        "status",
        "failure_class",
        "reason",
        "expected_failure",
        "phases",
        "gpu_memory_peak_mib",
        "log_path",
        "log_excerpt",
        "warnings",
        "started_at",
        "finished_at",
    )
    out = {k: data[k] for k in keep if k in data}
    return out | {
        "selected_by": fp.get("selected_by", ""),
        "startup": startup,
        "install": dump(install) if install else None,
        "fingerprint": dump(fingerprint),
        "notes": notes,
        "checks": checks,
        "agreement": _v1_agreement(data.get("agreement") or {}),
        "accuracy": _v1_accuracy(data.get("accuracy") or {}),
        "throughput": [_v1_point(p) for p in data.get("throughput") or []],
    }


@dataclass(frozen=True, kw_only=True)
class RunInfo:
    """What a run's reports need besides its cells, kept as ``run.json`` beside ``results.jsonl``: a run
    directory rebuilds its reports, merges with other shards and feeds history without its matrix file."""

    backend: str
    matrix: str  # the matrix file, as given
    run_id: str
    references: Mapping[str, str]  # platform -> the reference (deployed) pin
    required_checks: tuple[str, ...]
    tie_break: str
    noise: float  # thresholds.throughput_noise
    drift: float  # thresholds.machine_drift
    seed: int
    workload: str  # digest of the settings that shape measured numbers: runs compare only when equal
    expected: tuple[str, ...] = ()  # the cell ids the run was asked to run
    sources: tuple[str, ...] = ()  # merged from these run ids

    @classmethod
    def read(cls, run_dir: Path) -> RunInfo:
        path = run_dir / "run.json"
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise LoadError(f"{path}: missing (an older run: give its matrix with --matrix)") from None
        except (OSError, ValueError) as exc:
            raise LoadError(f"{path}: cannot read: {exc}") from exc
        if not isinstance(data, dict):
            raise LoadError(f"{path}: expected an object")
        try:
            return load_record(cls, data)
        except LoadError as exc:
            raise LoadError(f"{path}: {exc}") from exc

    def write(self, run_dir: Path) -> None:
        run_dir.mkdir(parents=True, exist_ok=True)
        tmp = run_dir / f".run.json.{os.getpid()}"  # xdist workers may write it at once: each its own tmp
        tmp.write_text(json.dumps(dump(self), indent=1, sort_keys=True) + "\n", encoding="utf-8")
        os.replace(tmp, run_dir / "run.json")


def _is_json(line: str) -> bool:
    try:
        json.loads(line)
    except ValueError:
        return False
    return True


def append_line(path: Path, line: str) -> None:
    """One JSON line, on disk when this returns (the caller holds the file's lock)."""
    with path.open("a+b") as fh:
        fh.seek(0, 2)
        if fh.tell():  # a line torn by a killed run: the next one still starts on its own line
            fh.seek(-1, 2)
            torn = fh.read(1) != b"\n"
            fh.seek(0, 2)
            if torn:
                fh.write(b"\n")
        fh.write(line.encode("utf-8") + b"\n")
        fh.flush()
        os.fsync(fh.fileno())


class ResultStore:
    """Append-only JSONL, safe across pytest-xdist workers (file lock around each append)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = FileLock(str(path) + ".lock")
        self.notes: list[str] = []  # e.g. lines converted from an older schema

    def append(self, result: CellResult) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock:
            append_line(self.path, json.dumps(result.to_dict(), sort_keys=True, allow_nan=False))

    def load(self) -> list[CellResult]:
        """Every stored result; a later line for the same cell replaces an earlier one (re-runs)."""
        if not self.path.exists():
            return []
        by_cell: dict[str, CellResult] = {}
        converted = 0
        text = self.path.read_text(encoding="utf-8", errors="replace")
        lines = text.splitlines()
        for n, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            if not _is_json(line):  # torn: a run killed while writing it (later runs append after it)
                self.notes.append(
                    f"{self.path}:{n}: a torn line (the run was killed while writing it) was skipped; "
                    "that cell runs again on resume"
                )
                log.warning(self.notes[-1])
                continue
            try:
                data = json.loads(line)
                if not isinstance(data, dict):
                    raise LoadError(f"expected an object, got {type(data).__name__}")
                converted += data.get("schema_version") == 1
                result = CellResult.from_dict(data)
            except (ValueError, KeyError, TypeError) as exc:
                raise ValueError(f"{self.path}:{n}: {exc}") from exc
            by_cell[result.cell_id] = result
        if converted:
            self.notes.append(
                f"{self.path}: {converted} line(s) converted from results schema 1 (machine facts unknown)"
            )
            log.warning(self.notes[-1])
        return list(by_cell.values())
