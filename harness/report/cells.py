"""One cell's section of a report: its facts, checks, evidence for failed checks, and tables (agreement,
accuracy, startup, load points). Plain text; each renderer escapes it for its own format."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass

from ..results import AUDIO_UNIT, CellResult, LoadPoint, SpeechAccuracy, Status, TextAccuracy
from ..serial import dump
from ..stats import Distribution, enough_for
from ..words import AgreementKind

PHASES = ("install", "model", "calibration", "startup", "probes", "warm start")


@dataclass(frozen=True, kw_only=True)
class Table:
    title: str
    headers: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


@dataclass(frozen=True, kw_only=True)
class Evidence:
    check: str
    text: str  # JSON


@dataclass(frozen=True, kw_only=True)
class CellView:
    anchor: str
    title: str
    status: str
    ok: bool
    reason: str
    facts: tuple[tuple[str, str], ...]  # (label, value): phases, executable, install, machine, torch, launch...
    warnings: tuple[str, ...]
    checks: Table | None
    evidence: tuple[Evidence, ...]  # for failed checks
    tables: tuple[Table, ...]  # agreement, accuracy, transcripts, startup, load points
    log_path: str = ""
    log_excerpt: str = ""  # failures only


def fmt(value: float | None, spec: str = ".1f") -> str:
    return "—" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def status_label(cell: CellResult) -> str:
    if cell.status is Status.PASSED:
        return "PASSED"
    cls = cell.failure_class
    expected = cls is not None and cell.expected_failure is cls
    return (cls.value if cls else cell.status.value).upper() + (" (expected)" if expected else "")


def verdict(passed: bool | None, waived: str = "") -> str:
    if waived:
        return "FAIL (waived)"
    return "not evaluated" if passed is None else ("pass" if passed else "FAIL")


def rate_spec(unit: str) -> str:
    return ".2f" if unit == AUDIO_UNIT else ".1f"  # ~2 audio s/s on CPU: one decimal hides the differences


def agreement_text(cell: CellResult) -> str:
    a = cell.agreement
    if a is None:
        return "—"
    if a.kind is AgreementKind.REFERENCE:
        return "reference"
    if a.kind is AgreementKind.TRANSCRIPTS:
        return f"{a.identical}/{a.compared} transcripts identical (WER between {a.wer_vs_reference or 0.0:.1%})"
    if a.kind is AgreementKind.GREEDY:
        return f"{a.identical}/{a.compared} identical, {a.close} close, {a.differ} differ"
    if a.kind is AgreementKind.EMBEDDINGS:
        passed = [c.passed for c in cell.checks if c.name == "agreement.embeddings"]
        return f"{a.compared} embeddings " + ("agree" if passed and passed[0] else "differ")
    return a.note or "—"


def accuracy_text(cell: CellResult) -> str:
    a = cell.accuracy
    if isinstance(a, SpeechAccuracy):  # word error rate against the spoken (or synthesized) text
        return f"WER {a.wer:.1%} ({a.edits}/{a.words} words)"
    if isinstance(a, TextAccuracy):
        o = a.overall
        return f"{o.accuracy:.1%} [{o.wilson_low:.1%}, {o.wilson_high:.1%}]"
    return "—"


def _pct(d: Distribution, q: int, spec: str) -> str:
    """A percentile, or "n too small" below MLPerf's early-stopping minimum sample count for it."""
    return fmt(getattr(d, f"p{q}"), spec) if enough_for(q, d.n) or d.n == 0 else "n too small"


def _dist3(d: Distribution | None, spec: str = ".0f") -> str:
    return "—" if d is None else f"{_pct(d, 50, spec)}/{_pct(d, 90, spec)}/{_pct(d, 99, spec)}"


def cv_band(cv: float) -> str:
    """AIPerf's bands for the coefficient of variation over repeated runs."""
    return "excellent" if cv < 0.05 else "good" if cv < 0.10 else "fair" if cv < 0.20 else "unstable"


def _spread(p: LoadPoint) -> str:
    spec = rate_spec(p.unit)
    if p.ci95:
        rates = [r.rate for r in p.runs]
        m = sum(rates) / len(rates)
        cv = (sum((x - m) ** 2 for x in rates) / (len(rates) - 1)) ** 0.5 / m if m > 0 else math.nan
        band = f", CV {cv:.1%} {cv_band(cv)}" if cv == cv else ""
        return f"{p.ci95[0]:{spec}}–{p.ci95[1]:{spec}} (n={len(p.runs)}{band})"
    rates = [r.rate for r in p.runs]
    return f"{min(rates):{spec}}–{max(rates):{spec}}" if len(rates) > 1 else "1 run"


_AUDIO_HEADERS = (
    "point",
    "req",
    "ok",
    "audio s/s",
    "spread (95% CI / range)",
    "req/s",
    "latency p50/p90/p99 ms",
    "RTF p50/p90",
    "audio s",
    "latency samples",
)
_TEXT_HEADERS = (
    "point",
    "req",
    "ok",
    "out tok/s",
    "spread (95% CI / range)",
    "req/s",
    "goodput req/s",
    "TTFT p50/p90/p99 ms",
    "TPOT p50 ms",
    "ITL p50 ms",
    "E2EL p50 ms",
    "tokens/req",
    "TTFT samples",
    "client CPU",
    "loop lag p99 ms",
    "flag",
)


def load_table(cell: CellResult) -> Table:
    """The load points of this cell's kind: text generation, or audio (latency, real-time factor)."""
    title = "Load points (median of repeats; client-bound points are not used to recommend)"
    if cell.rate_unit == AUDIO_UNIT:
        return Table(title=title, headers=_AUDIO_HEADERS, rows=tuple(_audio_row(p) for p in cell.throughput))
    return Table(title=title, headers=_TEXT_HEADERS, rows=tuple(_text_row(p) for p in cell.throughput))


def _audio_row(p: LoadPoint) -> tuple[str, ...]:
    return (
        p.label,
        str(p.run.requests),
        str(p.run.completed),
        fmt(p.median, ".2f"),
        _spread(p),
        fmt(p.run.request_s, ".2f"),
        _dist3(p.dist("latency_ms")),
        "/".join(_dist3(p.dist("rtf"), ".2f").split("/")[:2]),
        fmt(p.run.audio_s, ".1f"),
        str(getattr(p.dist("latency_ms"), "n", 0)),
    )


def _text_row(p: LoadPoint) -> tuple[str, ...]:
    r = p.run
    return (
        p.label,
        str(r.requests),
        str(r.completed),
        fmt(p.median),
        _spread(p),
        fmt(r.request_s, ".2f"),
        fmt(r.goodput_req_s, ".2f"),
        _dist3(p.dist("ttft_ms")),
        fmt(getattr(p.dist("tpot_ms"), "p50", None)),
        fmt(getattr(p.dist("itl_ms"), "p50", None)),
        fmt(getattr(p.dist("e2el_ms"), "p50", None), ".0f"),
        fmt(r.output_tokens / r.completed if r.completed else None),
        str(getattr(p.dist("ttft_ms"), "n", 0)),
        f"{r.client_cpu_util:.0%}",
        fmt(getattr(p.dist("loop_lag_ms"), "p99", None)),
        ("CLIENT-BOUND: " + p.saturation_reason) if p.saturated else "",
    )


def _facts(c: CellResult) -> list[tuple[str, str]]:
    facts = [
        (
            "phases",
            (", ".join(f"{p} {c.phases[p]:.1f} s" for p in PHASES if p in c.phases) or "—")
            + (" (installed in this run)" if c.installed_now else ""),
        )
    ]
    if c.probe_s:
        inside = sum(c.probe_s.values())
        facts.append(
            (
                "probes",
                ", ".join(f"{k} {v:.1f} s" for k, v in c.probe_s.items())
                + (f"; between them {c.phases['probes'] - inside:.1f} s" if "probes" in c.phases else ""),
            )
        )
    if c.conformance_s:
        facts.append(("conformance checks", ", ".join(f"{k} {v:.1f} s" for k, v in c.conformance_s.items())))
    if (over := c.overhead_s()) is not None:
        facts.append(
            (
                "harness overhead",
                f"{over:.1f} s of {c.wall_s:.1f} s ({over / c.wall_s:.1%}): wall time no phase accounts for",
            )
        )
    if c.install is not None:
        facts.append(("executable", c.install.executable))
        how = c.install.kind + (f" from {c.install.url} (sha256 {c.install.sha256})" if c.install.url else "")
        facts.append(("installed by", how))
    if c.selected_by:
        facts.append(("selected by", c.selected_by))
    fp = c.fingerprint
    if fp is not None:
        m = fp.machine
        facts.append(
            (
                "machine",
                f"{m.cpu_model}, {m.cores} cores, {m.memory_bytes / 2**30:.0f} GiB, {m.arch} "
                f"[{' '.join(m.cpu_flags) or 'flags unknown'}], {m.os}, Python {m.python}",
            )
        )
        for g in fp.gpus:
            facts.append(
                (f"GPU {g.index}", f"{g.name} ({g.uuid}), {g.memory_mib:.0f} MiB, driver {g.driver}, CUDA {g.cuda}")
            )
        if fp.torch:
            facts.append(("torch", fp.torch))
        if fp.distributions:
            facts.append(("distributions", f"{len(fp.distributions)} in the pin's venv (results.json lists them)"))
        if fp.launch_argv:
            facts.append(("launch", " ".join(fp.launch_argv)))
    for key, value in sorted(c.notes.items()):
        facts.append((key.replace("_", " "), value))
    if c.gpu_memory_peak_mib:
        facts.append(("GPU memory peak", ", ".join(f"GPU {g}: {v:.0f} MiB" for g, v in c.gpu_memory_peak_mib.items())))
    return facts


def _phases(phases: Mapping[str, float]) -> str:
    return ", ".join(f"{k} {v:g}" for k, v in phases.items()) or "—"


def _tables(c: CellResult) -> list[Table]:
    tables = _agreement_tables(c) + _accuracy_tables(c)
    if c.startup:
        tables.append(
            Table(
                title="Startup",
                headers=("start", "ready s", "log ready line s", "phases (from the server log)"),
                rows=tuple(
                    (kind, fmt(s.seconds), fmt(s.log_ready_s), _phases(s.phases)) for kind, s in c.startup.items()
                ),
            )
        )
    if c.throughput:
        tables.append(load_table(c))
    return tables


def _agreement_tables(c: CellResult) -> list[Table]:
    a = c.agreement
    if a is None or not a.items:
        return []
    if a.kind is AgreementKind.TRANSCRIPTS:
        return [
            Table(
                title=f"Transcripts that differ from the reference {a.reference_version}'s",
                headers=("clip", "ours", "reference"),
                rows=tuple((r.prompt, r.ours_text, r.reference_text) for r in a.items),
            )
        ]
    if a.kind is not AgreementKind.GREEDY:
        return []
    rows = tuple(
        (r.prompt, "identical", "—", "", "")
        if r.identical
        else (
            r.prompt,
            "close (in top-k)" if r.close else "DIFFERS",
            f"token {r.position}: {r.ours!r} vs {r.reference!r}",
            r.ours_text,
            r.reference_text,
        )
        for r in a.items
    )
    headers = ("prompt", "result", "first divergence", "ours", "reference")
    return [Table(title=f"Agreement with the reference {a.reference_version}, per prompt", headers=headers, rows=rows)]


def _accuracy_tables(c: CellResult) -> list[Table]:
    acc = c.accuracy
    if isinstance(acc, TextAccuracy):
        scores = [("overall", acc.overall), *sorted(acc.tasks.items())]
        rows = tuple(
            (name, f"{s.correct}/{s.n}", f"{s.accuracy:.1%}", f"[{s.wilson_low:.1%}, {s.wilson_high:.1%}]")
            for name, s in scores
        )
        return [Table(title="Task accuracy", headers=("task", "correct", "accuracy", "Wilson 95% CI"), rows=rows)]
    if isinstance(acc, SpeechAccuracy) and acc.per_clip:
        return [
            Table(
                title=f"Transcripts ({accuracy_text(c)})",
                headers=("spoken", "heard", "word edits"),
                rows=tuple((r.spoken, r.heard, str(r.edits)) for r in acc.per_clip),
            )
        ]
    return []


def cell_view(c: CellResult) -> CellView:
    checks = None
    if c.checks:
        checks = Table(
            title="Checks",
            headers=("group", "check", "result", "detail"),
            rows=tuple(
                (
                    ch.group,
                    ch.name,
                    verdict(ch.passed, ch.waived),
                    ch.detail + (f" — waived: {ch.waived}" if ch.waived else ""),
                )
                for ch in c.checks
            ),
        )
    evidence = tuple(
        Evidence(check=ch.name, text=json.dumps(dump(ch.evidence), ensure_ascii=False, indent=1, default=str))
        for ch in c.checks
        if ch.passed is False
    )
    failed = c.status is not Status.PASSED
    return CellView(
        anchor=c.cell_id,
        title=f"{c.label} · {c.model} · {c.platform}",
        status=status_label(c),
        ok=not failed,
        reason=c.reason,
        facts=tuple(_facts(c)),
        warnings=tuple(c.warnings),
        checks=checks,
        evidence=evidence,
        tables=tuple(_tables(c)),
        log_path=c.log_path if failed else "",
        log_excerpt=c.log_excerpt if failed else "",
    )
