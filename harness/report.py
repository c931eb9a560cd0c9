"""Reports: results -> report.md, report.html, results.json, pins.json in ``reports/<backend>/<run-id>/``.

``reports/<backend>/latest`` is a symlink to the newest run. Markdown tables come from tabulate; HTML
from a jinja2 template with autoescaping on, so nothing a server or a matrix says is ever markup.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup, escape
from tabulate import tabulate

from .recommend import Recommendation, recommend
from .results import CellResult, Status, point_ci95, point_rate
from .spec import Matrix


@dataclass(frozen=True, kw_only=True)
class ReportPaths:
    run_dir: Path
    markdown: Path
    html: Path
    results_json: Path
    pins_json: Path


def _fmt(value: float | None, spec: str = ".1f") -> str:
    return "—" if value is None else format(value, spec)


def _status(cell: CellResult) -> str:
    if cell.status is Status.PASSED:
        return "PASSED"
    label = (cell.failure_class.value if cell.failure_class else cell.status.value).upper()
    return label + (" (expected)" if cell.expected_failure == (cell.failure_class.value if cell.failure_class else None) else "")


def _verdict(passed: bool | None, waived: str | None = None) -> str:
    if waived:
        return "FAIL (waived)"
    return "not evaluated" if passed is None else ("pass" if passed else "FAIL")


def _agreement(cell: CellResult) -> str:
    a = cell.agreement
    if not a:
        return "—"
    if a.get("reference"):
        return "reference"
    if "clips" in a:  # speech-to-text: transcripts vs the reference pin's
        return f"{a['identical']}/{a['clips']} transcripts identical (WER between {a['wer_vs_reference']:.1%})"
    if "prompts" not in a:
        return a.get("note", "—")
    return f"{a['identical']}/{a['prompts']} identical, {a['close']} close, {a['disagree']} differ"


PHASES = ("install", "model", "startup", "probes")


def ordered_phases(cell: CellResult) -> list[tuple[str, float]]:
    return [(p, cell.phases[p]) for p in PHASES if p in cell.phases]


def summary_rows(cells: Sequence[CellResult]) -> list[list[str]]:
    return [
        [
            c.version + (" (ref)" if c.is_reference else ""),
            c.model,
            c.platform,
            _status(c),
            _fmt(c.startup_s),
            "—" if c.peak_rate() is None else f"{c.peak_rate():{'.2f' if c.rate_unit == 'audio s/s' else '.1f'}} {c.rate_unit}",
            _first_p50(c),
            _agreement(c),
            _accuracy(c),
        ]
        for c in cells
    ]


SUMMARY_HEADERS = ["pin", "model", "platform", "status", "startup s", "peak throughput", "p50 at lowest load", "agreement",
                   "accuracy"]  # fmt: skip


def _first_p50(cell: CellResult) -> str:
    value = cell.first_p50_ms()
    if value is None:
        return "—"
    return f"{'latency' if cell.rate_unit == 'audio s/s' else 'TTFT'} {value:.0f} ms"
AGREEMENT_HEADERS = ["prompt", "result", "first divergence", "ours", "reference"]
ACCURACY_HEADERS = ["task", "correct", "accuracy", "Wilson 95% CI"]


def _accuracy(cell: CellResult) -> str:
    if "wer" in cell.accuracy:  # speech: word error rate against the spoken (or synthesized) text
        a = cell.accuracy
        return f"WER {a['wer']:.1%}" + (f" ({a['edits']}/{a['words']} words)" if "words" in a else "")
    o = cell.accuracy.get("overall")
    return "—" if not o else f"{o['accuracy']:.1%} [{o['wilson_low']:.1%}, {o['wilson_high']:.1%}]"


def agreement_rows(cell: CellResult) -> list[list[str]]:
    rows = []
    for r in cell.agreement.get("per_prompt", []):
        if r["identical"]:
            rows.append([r["prompt"], "identical", "—", "", ""])
        else:
            verdict = "close (in top-k)" if r["close"] else "DIFFERS"
            rows.append([r["prompt"], verdict, f"token {r['position']}: {r['ours']!r} vs {r['reference']!r}",
                         r["ours_text"], r["reference_text"]])  # fmt: skip
    return rows


def accuracy_rows(cell: CellResult) -> list[list[str]]:
    if "wer" in cell.accuracy or not cell.accuracy:
        return []
    scores = [("overall", cell.accuracy["overall"])] + sorted(cell.accuracy.get("tasks", {}).items()) if cell.accuracy else []
    return [[name, f"{s['correct']}/{s['n']}", f"{s['accuracy']:.1%}", f"[{s['wilson_low']:.1%}, {s['wilson_high']:.1%}]"]
            for name, s in scores]  # fmt: skip


def evidence_text(check: dict[str, object]) -> str:
    return json.dumps(check.get("evidence") or {}, ensure_ascii=False, indent=1, default=str)
LEVEL_HEADERS = ["point", "req", "ok", "out tok/s", "spread (95% CI / range)", "req/s", "goodput req/s", "TTFT p50/p90/p99 ms",
                 "TPOT p50 ms", "ITL p50 ms", "E2EL p50 ms", "tokens/req", "client CPU", "loop lag p99 ms", "flag"]  # fmt: skip


def _spread(p: dict[str, Any]) -> str:
    ci, values = p.get("output_tok_s_ci95"), p.get("output_tok_s_all") or []
    if ci:
        return f"{ci[0]:.1f}–{ci[1]:.1f} (n={len(values)})"
    return f"{min(values):.1f}–{max(values):.1f}" if len(values) > 1 else "1 run"


AUDIO_LEVEL_HEADERS = ["point", "req", "ok", "audio s/s", "spread (95% CI / range)", "req/s", "latency p50/p90/p99 ms",
                       "RTF p50/p90", "audio s"]  # fmt: skip


def level_table(cell: CellResult) -> tuple[list[str], list[list[str]]]:
    """The load-point table for this cell's kind: text generation, or audio (latency, real-time factor)."""
    if cell.rate_unit != "audio s/s":
        return LEVEL_HEADERS, level_rows(cell)
    rows = []
    for p in cell.throughput:
        lat, rtf, ci, values = p["latency_ms"], p["rtf"], p.get("audio_s_per_s_ci95"), p.get("audio_s_per_s_all") or []
        spread = (f"{ci[0]:.2f}–{ci[1]:.2f} (n={len(values)})" if ci
                  else f"{min(values):.2f}–{max(values):.2f}" if len(values) > 1 else "1 run")  # fmt: skip
        rows.append([p.get("label", ""), str(p["requests"]), str(p["completed"]), _fmt(p.get("audio_s_per_s_median"), ".2f"), spread,
                     _fmt(p["request_s"], ".2f"), f"{_fmt(lat['p50'], '.0f')}/{_fmt(lat['p90'], '.0f')}/{_fmt(lat['p99'], '.0f')}",
                     f"{_fmt(rtf['p50'], '.2f')}/{_fmt(rtf['p90'], '.2f')}", _fmt(p.get("audio_s"), ".1f")])  # fmt: skip
    return AUDIO_LEVEL_HEADERS, rows


WER_HEADERS = ["spoken", "heard", "word edits"]


def wer_rows(cell: CellResult) -> list[list[str]]:
    return [[r["spoken"], r["heard"], str(r["edits"])] for r in cell.accuracy.get("per_clip", [])]


def level_rows(cell: CellResult) -> list[list[str]]:
    rows = []
    for p in cell.throughput:
        t = p["ttft_ms"]
        lag = (p.get("loop_lag_ms") or {}).get("p99")
        rows.append([
            p.get("label", ""), str(p["requests"]), str(p["completed"]), _fmt(p.get("output_tok_s_median", p["output_tok_s"])),
            _spread(p), _fmt(p["request_s"], ".2f"), _fmt(p.get("goodput_req_s"), ".2f"),
            f"{_fmt(t['p50'], '.0f')}/{_fmt(t['p90'], '.0f')}/{_fmt(t['p99'], '.0f')}", _fmt(p["tpot_ms"]["p50"]),
            _fmt(p["itl_ms"]["p50"]), _fmt(p["e2el_ms"]["p50"], ".0f"),
            _fmt(p["output_tokens"] / p["completed"] if p["completed"] else None), f"{p.get('client_cpu_util', 0.0):.0%}",
            _fmt(lag, ".1f"), ("CLIENT-BOUND: " + p.get("saturation_reason", "")) if p.get("saturated") else "",
        ])  # fmt: skip
    return rows


STARTUP_HEADERS = ["start", "ready s", "log ready line s", "phases (from the server log)"]


def startup_rows(cell: CellResult) -> list[list[str]]:
    return [[kind, _fmt(s["seconds"]), _fmt(s.get("log_ready_s")),
             ", ".join(f"{k} {v:g}" for k, v in (s.get("phases") or {}).items()) or "—"]
            for kind, s in cell.startup.items()]  # fmt: skip


def curve_svg(cells: Sequence[CellResult], width: int = 640, height: int = 260) -> Markup:
    """Throughput per load point, one line per pin, CI whiskers where repeated (inline, self-contained)."""
    series = [(c.version, c.throughput) for c in cells if c.throughput]
    if not series:
        return Markup("")
    unit = next(c.rate_unit for c in cells if c.throughput)
    labels = [p.get("label", "") for p in max((t for _, t in series), key=len)]
    top = max((point_ci95(p) or [0, point_rate(p) or 0])[1] for _, t in series for p in t) or 1.0
    left, bottom, right, topm = 50, 40, 110, 15
    w, h = width - left - right, height - bottom - topm

    def xy(i: int, v: float) -> tuple[float, float]:
        x = left + (w * i / max(len(labels) - 1, 1))
        return x, topm + h - h * v / top

    colours = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img">',
             f'<line x1="{left}" y1="{topm + h}" x2="{left + w}" y2="{topm + h}" stroke="#999"/>',
             f'<line x1="{left}" y1="{topm}" x2="{left}" y2="{topm + h}" stroke="#999"/>',
             f'<text x="5" y="{topm + 10}" font-size="11">{top:.0f}</text>',
             f'<text x="5" y="{topm + h}" font-size="11">0</text>',
             f'<text x="{left}" y="{height - 5}" font-size="11">{escape(unit)} per load point</text>']  # fmt: skip
    for i, label in enumerate(labels):
        x, _ = xy(i, 0)
        parts.append(f'<text x="{x:.0f}" y="{topm + h + 14}" font-size="10" text-anchor="middle">{escape(label)}</text>')
    for n, (version, points) in enumerate(series):
        colour = colours[n % len(colours)]
        coords = [xy(i, point_rate(p) or 0.0) for i, p in enumerate(points)]
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="'
                     + " ".join(f"{x:.1f},{y:.1f}" for x, y in coords) + '"/>')  # fmt: skip
        for i, p in enumerate(points):
            if ci := point_ci95(p):
                (x, y1), (_, y2) = xy(i, max(ci[0], 0.0)), xy(i, ci[1])
                parts.append(f'<line x1="{x:.1f}" y1="{y1:.1f}" x2="{x:.1f}" y2="{y2:.1f}" stroke="{colour}"/>')
        parts.append(f'<text x="{left + w + 8}" y="{topm + 14 + 14 * n}" font-size="11" fill="{colour}">{escape(version)}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))


def sort_cells(cells: Sequence[CellResult]) -> list[CellResult]:
    from packaging.version import Version

    return sorted(cells, key=lambda c: (c.model, c.platform, not c.is_reference, Version(c.version)))


def recommendations(matrix: Matrix, cells: Sequence[CellResult]) -> list[Recommendation]:
    groups: dict[tuple[str, str], list[CellResult]] = {}
    for c in sort_cells(cells):
        groups.setdefault((c.model, c.platform), []).append(c)
    out = []
    for (_, platform), group in groups.items():
        ref = matrix.platforms[platform].reference.text if platform in matrix.platforms else group[0].version
        out.append(recommend(group, required_checks=matrix.policy.required_checks, noise=matrix.thresholds.throughput_noise,
                             tie_break=matrix.policy.tie_break, reference=ref))  # fmt: skip
    return out


def render_markdown(matrix: Matrix, run_id: str, cells: Sequence[CellResult], recs: Sequence[Recommendation]) -> str:
    cells = sort_cells(cells)
    out = [f"# {matrix.backend} pin matrix — run {run_id}", "", f"Matrix: `{matrix.path}`", "", "## Recommendation", ""]
    for r in recs:
        head = f"**{r.version}**" if r.version else "**none**"
        out.append(f"- {r.model} on {r.platform}: {head} — " + "; ".join(r.reasons))
        for version, why in r.rejected.items():
            out.append(f"  - {version}: {why}")
    out += ["", "## Summary", "", tabulate(summary_rows(cells), headers=SUMMARY_HEADERS, tablefmt="github"), ""]
    out += ["## Details", ""]
    for c in cells:
        out += [f"### {c.label} · {c.model} · {c.platform}", ""]
        phases = ", ".join(f"{k} {v:.1f} s" for k, v in ordered_phases(c))
        out.append(f"- status: {_status(c)}" + (f" — {c.reason}" if c.reason else ""))
        out.append(f"- phases: {phases or '—'}" + (" (installed in this run)" if c.installed_now else ""))
        if c.executable:
            out.append(f"- executable: `{c.executable}`")
        if c.fingerprint.get("selected_by"):
            out.append(f"- selected by: {c.fingerprint['selected_by']}")
        for w in c.warnings:
            out.append(f"- warning: {w}")
        if c.checks:
            rows = [[ch["group"], ch["name"], _verdict(ch["passed"], ch.get("waived")),
                     ch["detail"] + (f" — waived: {ch['waived']}" if ch.get("waived") else "")] for ch in c.checks]  # fmt: skip
            out += ["", tabulate(rows,
                                 headers=["group", "check", "result", "detail"], tablefmt="github")]  # fmt: skip
        failed = [ch for ch in c.checks if ch["passed"] is False]
        for ch in failed:
            out += ["", f"Evidence for failed check `{ch['name']}`:", "", "```json", evidence_text(ch), "```"]
        if agreement_rows(c):
            ref = c.agreement.get("reference_version", "")
            out += ["", f"Agreement with the reference {ref}, per prompt:", "",
                    tabulate(agreement_rows(c), headers=AGREEMENT_HEADERS, tablefmt="github")]  # fmt: skip
        if accuracy_rows(c):
            out += ["", "Task accuracy:", "", tabulate(accuracy_rows(c), headers=ACCURACY_HEADERS, tablefmt="github")]
        if wer_rows(c):
            out += ["", f"Transcripts ({_accuracy(c)}):", "", tabulate(wer_rows(c), headers=WER_HEADERS, tablefmt="github")]
        if c.startup:
            out += ["", "Startup:", "", tabulate(startup_rows(c), headers=STARTUP_HEADERS, tablefmt="github")]
        if c.gpu_memory_peak_mib:
            out.append("\n- GPU memory peak: " + ", ".join(f"GPU {g}: {v:.0f} MiB" for g, v in c.gpu_memory_peak_mib.items()))
        if c.throughput:
            headers, rows = level_table(c)
            out += ["", "Load points (median of repeats; client-bound points are not used to recommend):", "",
                    tabulate(rows, headers=headers, tablefmt="github")]  # fmt: skip
        out.append("")
    failures = [c for c in cells if c.status is not Status.PASSED]
    if failures:
        out += ["## Failures", ""]
        for c in failures:
            out += [f"### {c.label} · {c.model}: {_status(c)}", "", c.reason, ""]
            if c.log_path:
                out.append(f"Log: `{c.log_path}`")
            if c.log_excerpt:
                out += ["", "```", c.log_excerpt, "```"]
            out.append("")
    return "\n".join(out) + "\n"


_ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("harness", "templates"),
    autoescape=True,  # everything is escaped: versions, server text, log excerpts, matrix strings
    undefined=jinja2.StrictUndefined,
)


def render_html(matrix: Matrix, run_id: str, cells: Sequence[CellResult], recs: Sequence[Recommendation]) -> str:
    cells = sort_cells(cells)
    return _ENV.get_template("report.html.j2").render(
        matrix=matrix, run_id=run_id, recs=recs, cells=cells, summary_headers=SUMMARY_HEADERS,
        summary=list(zip(cells, summary_rows(cells), strict=True)), level_table=level_table, wer_rows=wer_rows, wer_headers=WER_HEADERS,
        status=_status, verdict=_verdict, ordered_phases=ordered_phases, agreement_rows=agreement_rows,
        agreement_headers=AGREEMENT_HEADERS, accuracy_rows=accuracy_rows, accuracy_headers=ACCURACY_HEADERS,
        evidence_text=evidence_text, startup_rows=startup_rows, startup_headers=STARTUP_HEADERS,
        curves=[(m, curve_svg([c for c in cells if c.model == m])) for m in dict.fromkeys(c.model for c in cells)],
    )  # fmt: skip


def pins_document(recs: Sequence[Recommendation], cells: Sequence[CellResult]) -> dict[str, object]:
    """What GPUStack needs per model: backend, backend_version, and how that pin gets installed."""
    by_version = {(c.model, c.platform, c.version): c for c in cells}
    models = []
    for r in recs:
        entry = r.to_dict()
        cell = by_version.get((r.model, r.platform, r.version or ""))
        if cell is not None:
            entry["executable"] = Path(cell.executable).name if cell.executable else None
            entry["install"] = cell.fingerprint.get("install_command")
            if cell.fingerprint.get("build_constraints"):  # e.g. PIP_BUILD_CONSTRAINT=<file with these lines>
                entry["build_constraints"] = cell.fingerprint["build_constraints"]
        models.append(entry)
    return {"schema_version": 1, "models": models}


def write_reports(matrix: Matrix, run_dir: Path, run_id: str, cells: Sequence[CellResult]) -> tuple[ReportPaths, list[Recommendation]]:
    recs = recommendations(matrix, cells)
    paths = ReportPaths(
        run_dir=run_dir,
        markdown=run_dir / "report.md",
        html=run_dir / "report.html",
        results_json=run_dir / "results.json",
        pins_json=run_dir / "pins.json",
    )
    run_dir.mkdir(parents=True, exist_ok=True)
    _atomic_write(paths.markdown, render_markdown(matrix, run_id, cells, recs))
    _atomic_write(paths.html, render_html(matrix, run_id, cells, recs))
    results = {"schema_version": 1, "run_id": run_id, "backend": matrix.backend, "matrix": str(matrix.path),
               "cells": [c.to_dict() for c in sort_cells(cells)]}  # fmt: skip
    _atomic_write(paths.results_json, json.dumps(results, indent=2, sort_keys=True) + "\n")
    _atomic_write(paths.pins_json, json.dumps(pins_document(recs, cells), indent=2) + "\n")
    _point_latest(run_dir)
    return paths, recs


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _point_latest(run_dir: Path) -> None:
    latest = run_dir.parent / "latest"
    tmp = run_dir.parent / ".latest.tmp"
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    tmp.symlink_to(run_dir.name, target_is_directory=True)
    os.replace(tmp, latest)
