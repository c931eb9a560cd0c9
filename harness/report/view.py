"""One view model of a run, rendered to Markdown and HTML alike: the two reports show the same facts.

Every string here is plain text; each renderer escapes it for its own format.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from packaging.version import Version

from ..history import Trend
from ..recommend import Recommendation
from ..results import AUDIO_UNIT, CellResult, FailureClass, Status
from ..verdict import Verdict
from .cells import PHASES, CellView, Table, accuracy_text, agreement_text, cell_view, fmt, rate_spec, status_label


@dataclass(frozen=True, kw_only=True)
class Partial:
    """A run whose report was written before every cell it was asked to run reached a final result."""

    ran: int
    of: int
    not_run: tuple[str, ...]
    why: tuple[str, ...]  # per not-run cell: "interrupted", or "" (never started)

    @property
    def line(self) -> str:
        names = ", ".join(f"{c} ({w})" if w else c for c, w in zip(self.not_run, self.why, strict=True))
        return f"Partial run: {self.ran} of {self.of} cells ran; not run: {names}."

    def to_dict(self) -> dict[str, object]:
        return {"ran": self.ran, "of": self.of, "not_run": list(self.not_run)}


def partial_run(cells: Sequence[CellResult], expected: Sequence[str]) -> Partial | None:
    final = {c.cell_id for c in cells if c.final}
    missing = [cid for cid in dict.fromkeys(expected) if cid not in final]
    if not missing:
        return None
    interrupted = {c.cell_id for c in cells if not c.final}
    return Partial(
        ran=len(set(expected) & final),
        of=len(set(expected)),
        not_run=tuple(missing),
        why=tuple("interrupted" if cid in interrupted else "" for cid in missing),
    )


@dataclass(frozen=True, kw_only=True)
class ReportView:
    title: str
    matrix_path: str
    recommendations: tuple[Recommendation, ...]
    summary: Table
    cells: tuple[CellView, ...]
    failures: tuple[CellView, ...]
    curves: tuple[tuple[str, tuple[CellResult, ...]], ...] = field(
        default_factory=tuple
    )  # per model, for the HTML chart
    partial: Partial | None = None
    verdicts: tuple[Verdict, ...] = ()  # each pin against the deployed (reference) pin, like with like
    trends: tuple[Trend, ...] = ()  # each cell against its own earlier runs (history)
    timing: str = ""  # the run's wall time per phase and the harness's own share
    findings: tuple[str, ...] = ()  # what no pin is to blame for (every pin failed on the same model line)
    margins: tuple[str, ...] = ()  # what the verdicts were decided against, and what was up together


SPARKS = "▁▂▃▄▅▆▇█"


def sparkline(values: Sequence[float | None]) -> str:
    """A text trend chart: one block per run, its height the run's peak (a gap: nothing measured)."""
    known = [v for v in values if v is not None and not math.isnan(v)]
    if not known:
        return ""
    lo, hi = min(known), max(known)
    span = (hi - lo) or 1.0
    return "".join(
        " " if v is None or math.isnan(v) else SPARKS[min(int((v - lo) / span * (len(SPARKS) - 1) + 0.5), 7)]
        for v in values
    )


def first_p50(cell: CellResult) -> str:
    value = cell.first_p50_ms()
    if value is None:
        return "—"
    return f"{'latency' if cell.rate_unit == AUDIO_UNIT else 'TTFT'} {value:.0f} ms"


SUMMARY_HEADERS = (
    "pin",
    "model",
    "platform",
    "status",
    "startup s",
    "peak throughput",
    "p50 at lowest load",
    "agreement",
    "accuracy",
    "machine",
    "server says",
)


def summary_row(c: CellResult) -> tuple[str, ...]:
    measured = c.status is not Status.ERROR  # a cell that could not be measured has no numbers to show, partial or not
    peak = c.peak_rate() if measured else None
    return (
        c.pin_label + (" (ref)" if c.is_reference else ""),
        c.model,
        c.platform,
        status_label(c),
        fmt(c.startup_s),
        "—" if peak is None else f"{peak:{rate_spec(c.rate_unit)}} {c.rate_unit}",
        first_p50(c) if measured else "—",
        agreement_text(c),
        accuracy_text(c),
        c.fingerprint.numerics if c.fingerprint else "—",
        c.served.line if c.served is not None else "—",
    )


_EXITED = re.compile(r"^server (?:exited with code -?\d+|was killed by \S+|.*?) before it was ready: ")


def model_findings(cells: Sequence[CellResult]) -> list[str]:
    """Per model and platform: every pin (two or more) failed to start, or to prepare the model, with the same
    decisive line: the model or its preparation is the finding, not the pins."""
    out = []
    groups: dict[tuple[str, str], list[CellResult]] = {}
    for c in cells:
        groups.setdefault((c.model, c.platform), []).append(c)
    for (model, platform), group in groups.items():
        tried = [c for c in group if c.failure_class is not FailureClass.INSTALL_FAILED and c.final]
        if len({c.version for c in tried}) < 2:
            continue
        failed = {FailureClass.STARTUP_FAILED, FailureClass.MODEL_FAILED}
        if not all(c.failure_class in failed for c in tried):
            continue
        lines = {_EXITED.sub("", c.reason) for c in tried}
        if len(lines) == 1:
            (line,) = lines
            pins = ", ".join(sorted({c.version for c in tried}))
            out.append(
                f"No pin could load {model} on {platform} ({pins}): {line} — the model or its preparation, not the pins"
            )
    return out


def sort_cells(cells: Sequence[CellResult]) -> list[CellResult]:
    return sorted(
        cells,
        key=lambda c: (
            c.model,
            c.platform,
            c.variant != c.deployed_variant,
            c.variant,
            not c.is_reference,
            Version(c.version),
        ),
    )


def build(
    backend: str,
    matrix_path: str,
    run_id: str,
    cells: Sequence[CellResult],
    recs: Sequence[Recommendation],
    *,
    partial: Partial | None = None,
    verdicts: Sequence[Verdict] = (),
    trends: Sequence[Trend] = (),
) -> ReportView:
    ordered = sort_cells(cells)
    views = tuple(cell_view(c) for c in ordered)
    models = dict.fromkeys(c.model for c in ordered)
    walls = [c for c in ordered if c.wall_s]
    timing = ""
    if walls:
        total = sum(c.wall_s for c in walls)
        per = {p: sum(c.phases.get(p, 0.0) for c in walls) for p in PHASES}
        over = sum(c.overhead_s() or 0.0 for c in walls)
        timing = (
            f"{len(walls)} cells, {total:.0f} s: "
            + ", ".join(f"{p} {v:.0f} s" for p, v in per.items() if v)
            + f"; harness overhead {over:.1f} s ({over / total:.1%})"
        )
    return ReportView(
        title=f"{backend} pin matrix — run {run_id}",
        timing=timing,
        matrix_path=matrix_path,
        recommendations=tuple(recs),
        summary=Table(title="Summary", headers=SUMMARY_HEADERS, rows=tuple(summary_row(c) for c in ordered)),
        cells=views,
        failures=tuple(v for v in views if not v.ok),
        curves=tuple((m, tuple(c for c in ordered if c.model == m)) for m in models),
        partial=partial,
        verdicts=tuple(verdicts),
        trends=tuple(trends),
        findings=tuple(model_findings(ordered)),
    )
