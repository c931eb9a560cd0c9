"""report.md from the view model (tables by tabulate)."""

from __future__ import annotations

from tabulate import tabulate

from .view import CellView, ReportView, Table


def _table(t: Table) -> list[str]:
    return ["", f"{t.title}:", "", tabulate([list(r) for r in t.rows], headers=list(t.headers), tablefmt="github")]


def _cell(v: CellView) -> list[str]:
    out = [f"### {v.title}", "", f"- status: {v.status}" + (f" — {v.reason}" if v.reason else "")]
    out += [f"- {label}: {value}" for label, value in v.facts]
    out += [f"- warning: {w}" for w in v.warnings]
    if v.checks is not None:
        out += ["", tabulate([list(r) for r in v.checks.rows], headers=list(v.checks.headers), tablefmt="github")]
    for e in v.evidence:
        out += ["", f"Evidence for failed check `{e.check}`:", "", "```json", e.text, "```"]
    for t in v.tables:
        out += _table(t)
    out.append("")
    return out


def render(view: ReportView) -> str:
    out = [f"# {view.title}", ""]
    if view.partial is not None:  # first, before any recommendation it qualifies
        out += [f"**{view.partial.line}**", ""]
    out += [f"Matrix: `{view.matrix_path}`", "", "## Recommendation", ""]
    for r in view.recommendations:
        head = f"**{r.version}**" if r.version else "**none**"
        out.append(f"- {r.model} on {r.platform}: {head} — " + "; ".join(r.reasons))
        out += [f"  - {version}: {why}" for version, why in r.rejected.items()]
    out += ["", "## Summary", "", tabulate([list(r) for r in view.summary.rows], headers=list(view.summary.headers), tablefmt="github"), ""]
    out += ["## Details", ""]
    for v in view.cells:
        out += _cell(v)
    if view.failures:
        out += ["## Failures", ""]
        for v in view.failures:
            out += [f"### {v.title}: {v.status}", "", v.reason, ""]
            if v.log_path:
                out.append(f"Log: `{v.log_path}`")
            if v.log_excerpt:
                out += ["", "```", v.log_excerpt, "```"]
            out.append("")
    return "\n".join(out) + "\n"
