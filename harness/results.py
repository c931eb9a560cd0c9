"""Outcomes as data: one CellResult per cell, appended to ``results.jsonl`` the moment the cell ends."""

from __future__ import annotations

import enum
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from filelock import FileLock

SCHEMA_VERSION = 1


# A load point's throughput by kind: (median over repeats, single run, 95% CI, unit).
_RATES = (("output_tok_s_median", "output_tok_s", "output_tok_s_ci95", "output tok/s"),
          ("audio_s_per_s_median", "audio_s_per_s", "audio_s_per_s_ci95", "audio s/s"))  # fmt: skip


def _rate_keys(point: dict[str, Any]) -> tuple[str, str, str, str]:
    return next((r for r in _RATES if r[0] in point or r[1] in point), _RATES[0])


def point_rate(point: dict[str, Any]) -> float | None:
    median, single, _, _ = _rate_keys(point)
    value = point.get(median, point.get(single))
    return None if value is None else float(value)


def point_ci95(point: dict[str, Any]) -> list[float] | None:
    return point.get(_rate_keys(point)[2])


def point_unit(point: dict[str, Any]) -> str:
    return _rate_keys(point)[3]


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


@dataclass(kw_only=True)
class CellResult:
    cell_id: str
    backend: str
    version: str
    model: str
    platform: str
    is_reference: bool
    status: Status = Status.PASSED
    failure_class: FailureClass | None = None
    reason: str = ""
    expected_failure: str | None = None
    phases: dict[str, float] = field(default_factory=dict)  # seconds: install, model, startup, probes
    startup_s: float | None = None  # the cold start, spawn -> first ready response
    startup: dict[str, Any] = field(default_factory=dict)  # "cold"/"warm": seconds, log_ready_s, phases
    gpu_memory_peak_mib: dict[str, float] = field(default_factory=dict)
    installed_now: bool = False
    executable: str = ""
    checks: list[dict[str, Any]] = field(default_factory=list)
    agreement: dict[str, Any] = field(default_factory=dict)
    accuracy: dict[str, Any] = field(default_factory=dict)
    throughput: list[dict[str, Any]] = field(default_factory=list)
    fingerprint: dict[str, Any] = field(default_factory=dict)
    log_path: str = ""
    log_excerpt: str = ""
    warnings: list[str] = field(default_factory=list)
    started_at: str = ""
    finished_at: str = ""

    @property
    def label(self) -> str:
        return f"{self.backend}_{self.version}"

    def usable_points(self) -> list[dict[str, Any]]:
        """Load points a recommendation may use: not client-bound."""
        return [p for p in self.throughput if not p.get("saturated")]

    @property
    def rate_unit(self) -> str:
        """What this cell's throughput counts: generated tokens, or seconds of audio handled."""
        return point_unit(self.throughput[0]) if self.throughput else "output tok/s"

    def peak_rate(self) -> float | None:
        """The best usable load point's throughput, in ``rate_unit``."""
        values = [v for v in (point_rate(p) for p in self.usable_points()) if v is not None]
        return max(values) if values else None

    def peak_ci95(self) -> list[float] | None:
        """The 95% CI of the peak point's throughput, when it was repeated."""
        peak = self.peak_rate()
        for p in self.usable_points():
            if point_rate(p) == peak:
                return point_ci95(p)
        return None

    def first_p50_ms(self) -> float | None:
        """At the first load point (what a single user sees): TTFT p50 for text, request latency p50 for audio."""
        if not self.throughput:
            return None
        p = self.throughput[0]
        return (p.get("ttft_ms") or p.get("latency_ms") or {}).get("p50")

    def to_dict(self) -> dict[str, Any]:
        data = _finite(asdict(self))
        data["status"] = self.status.value
        data["failure_class"] = self.failure_class.value if self.failure_class else None
        return {"schema_version": SCHEMA_VERSION, **data}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CellResult:
        data = dict(data)
        version = data.pop("schema_version", None)
        if version != SCHEMA_VERSION:
            raise ValueError(f"schema_version {version!r} is not supported (expected {SCHEMA_VERSION})")
        data["status"] = Status(data["status"])
        data["failure_class"] = FailureClass(data["failure_class"]) if data.get("failure_class") else None
        known = cls.__dataclass_fields__
        return cls(**{k: v for k, v in data.items() if k in known})


def _finite(value: Any) -> Any:
    """NaN/inf become None: JSON has no such numbers, and a missing figure must read as missing."""
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


class ResultStore:
    """Append-only JSONL, safe across pytest-xdist workers (file lock around each append)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = FileLock(str(path) + ".lock")

    def append(self, result: CellResult) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps(result.to_dict(), sort_keys=True, allow_nan=False)
        with self._lock, self.path.open("a", encoding="utf-8") as fh:
            fh.write(line + "\n")
            fh.flush()

    def load(self) -> list[CellResult]:
        """Every stored result; a later line for the same cell replaces an earlier one (re-runs)."""
        if not self.path.exists():
            return []
        by_cell: dict[str, CellResult] = {}
        for n, line in enumerate(self.path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                result = CellResult.from_dict(json.loads(line))
            except (ValueError, KeyError, TypeError) as exc:
                raise ValueError(f"{self.path}:{n}: {exc}") from exc
            by_cell[result.cell_id] = result
        return list(by_cell.values())
