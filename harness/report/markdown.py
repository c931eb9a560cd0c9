"""report.md from the view model (tables by tabulate).

Every string that came from a server, a model or a matrix goes through ``harness.safe``: inline text is
HTML-escaped and markup-escaped (a common renderer shows it, never runs it), code blocks get a fence no
log line can close, and terminal escape sequences are shown, not written.
"""

from __future__ import annotations

from tabulate import tabulate

from ..safe import fence, markdown_text, visible_controls
from ..verdict import Verdict, percent
from .cells import CellView, Table
from .view import ReportView, sparkline


def _rows(t: Table) -> list[list[str]]:
    return [[markdown_text(v) for v in row] for row in t.rows]


def _table(t: Table) -> list[str]:
    return ["", f"{markdown_text(t.title)}:", "", tabulate(_rows(t), headers=list(t.headers), tablefmt="github")]


def _block(text: str, info: str = "") -> list[str]:
    body = visible_controls(text)
    mark = fence(body)
    return [mark + info, body, mark]


def _cell(v: CellView) -> list[str]:
    out = [
        f"### {markdown_text(v.title)}",
        "",
        f"- status: {v.status}" + (f" — {markdown_text(v.reason)}" if v.reason else ""),
    ]
    out += [f"- {label}: {markdown_text(value)}" for label, value in v.facts]
    out += [f"- warning: {markdown_text(w)}" for w in v.warnings]
    if v.checks is not None:
        out += ["", tabulate(_rows(v.checks), headers=list(v.checks.headers), tablefmt="github")]
    for e in v.evidence:
        out += [
            "",
            f"Evidence for failed check `{markdown_text(e.check).replace('`', '')}`:",
            "",
            *_block(e.text, "json"),
        ]
    for t in v.tables:
        out += _table(t)
    out.append("")
    return out


def _verdict_row(v: Verdict) -> list[str]:
    interval = f"[{v.low:.2f}, {v.high:.2f}]" if v.low is not None and v.high is not None else "—"
    ratio = f"×{v.ratio:.2f}" if v.ratio is not None else "—"
    basis = f"{v.rounds} paired rounds" if v.rounds else f"cells alone, n={v.n} vs {v.n_reference}"
    margin = f"±{percent(v.margin)}" if v.margin else "—"
    row = [v.version, v.metric, v.point, ratio, interval, margin, str(v.word), basis, v.note]
    return [markdown_text(x) for x in row]


def _verdicts(view: ReportView) -> list[str]:
    if not view.verdicts:
        return []
    return [
        "",
        "## Verdicts against the deployed pin",
        "",
        "Ratio pin / deployed with a 95% interval (paired rounds: the median of per-round ratios; cells measured "
        "alone: bootstrap), against the ±margin: slower / faster when the whole interval lies beyond it, "
        "equivalent when it lies inside, inconclusive otherwise.",
        "",
        *(f"- {markdown_text(m)}" for m in view.margins),
        "",
        tabulate(
            [_verdict_row(v) for v in view.verdicts],
            headers=["pin", "metric", "point", "ratio", "95% interval", "margin", "word", "basis", "note"],
            tablefmt="github",
        ),
    ]


def render(view: ReportView) -> str:
    out = [f"# {markdown_text(view.title)}", ""]
    if view.partial is not None:  # first, before any recommendation it qualifies
        out += [f"**{markdown_text(view.partial.line)}**", ""]
    out += [f"**{markdown_text(finding)}**\n" for finding in view.findings]  # the model, not the pins
    out += [f"Matrix: {markdown_text(view.matrix_path)}", "", "## Recommendation", ""]
    for r in view.recommendations:
        head = f"**{markdown_text(r.headline)}**"
        out.append(f"- {markdown_text(r.where)}: {head} — " + "; ".join(markdown_text(x) for x in r.reasons))
        out += [f"  - {markdown_text(version)}: {markdown_text(why)}" for version, why in r.rejected.items()]
    out += _verdicts(view)
    if view.trends:
        out += [
            "",
            "## History on this kind of machine",
            "",
            "Each pin against its own last runs (same machine kind, same "
            "workload); two flagged runs in a row are a regression.",
            "",
        ]
        for t in view.trends:
            spark = sparkline([p for _, p in t.series])
            chart = f" — peak {t.unit} over {len(t.series)} runs: `{spark}`" if len(t.series) > 1 else ""
            out.append(f"- {markdown_text(t.line)}{chart}")
    out += [
        "",
        "## Summary",
        "",
        tabulate(_rows(view.summary), headers=list(view.summary.headers), tablefmt="github"),
        "",
    ]
    if view.timing:
        out += [f"Where the time went: {markdown_text(view.timing)}", ""]
    out += ["## Details", ""]
    for v in view.cells:
        out += _cell(v)
    if view.failures:
        out += ["## Failures", ""]
        for v in view.failures:
            out += [f"### {markdown_text(v.title)}: {v.status}", "", markdown_text(v.reason), ""]
            if v.log_path:
                out.append(f"Log: {markdown_text(v.log_path)}")
            if v.log_excerpt:
                out += ["", *_block(v.log_excerpt)]
            out.append("")
    return "\n".join(out) + "\n"
