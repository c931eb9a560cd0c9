"""report.html from the view model: a jinja2 template with autoescaping on, so nothing a server or a
matrix says is ever markup; throughput curves as inline SVG."""

from __future__ import annotations

import math
from collections.abc import Sequence

import jinja2
from markupsafe import Markup, escape

from ..history import Trend
from ..results import CellResult
from ..safe import visible_controls
from ..verdict import Verdict
from ..words import VerdictWord
from .view import ReportView


def _finalize(value: object) -> object:
    """Terminal escape sequences in server text are shown, not written (autoescaping does the rest)."""
    return visible_controls(value) if isinstance(value, str) and not isinstance(value, Markup) else value


_ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("harness.report", "templates"),
    autoescape=True,  # everything is escaped: versions, server text, log excerpts, matrix strings
    undefined=jinja2.StrictUndefined,
    finalize=_finalize,
)


def curve_svg(cells: Sequence[CellResult], width: int = 640, height: int = 260) -> Markup:
    """Throughput per load point, one line per pin, CI whiskers where repeated (inline, self-contained)."""
    series = [(c.pin_label, c.throughput) for c in cells if c.throughput]
    if not series:
        return Markup("")
    unit = series[0][1][0].unit
    labels = [p.label for p in max((t for _, t in series), key=len)]
    top = max((p.ci95 or (0.0, p.median if p.median == p.median else 0.0))[1] for _, t in series for p in t) or 1.0
    left, bottom, right, topm = 50, 40, 110, 15
    w, h = width - left - right, height - bottom - topm

    def xy(i: int, v: float) -> tuple[float, float]:
        x = left + (w * i / max(len(labels) - 1, 1))
        return x, topm + h - h * v / top

    colours = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img">',
        f'<line x1="{left}" y1="{topm + h}" x2="{left + w}" y2="{topm + h}" stroke="#999"/>',
        f'<line x1="{left}" y1="{topm}" x2="{left}" y2="{topm + h}" stroke="#999"/>',
        f'<text x="5" y="{topm + 10}" font-size="11">{top:.0f}</text>',
        f'<text x="5" y="{topm + h}" font-size="11">0</text>',
        f'<text x="{left}" y="{height - 5}" font-size="11">{escape(unit)} per load point</text>',
    ]
    for i, label in enumerate(labels):
        x, _ = xy(i, 0)
        parts.append(
            f'<text x="{x:.0f}" y="{topm + h + 14}" font-size="10" text-anchor="middle">{escape(label)}</text>'
        )
    for n, (version, points) in enumerate(series):
        colour = colours[n % len(colours)]
        coords = [xy(i, p.median if p.median == p.median else 0.0) for i, p in enumerate(points)]
        parts.append(
            f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="'
            + " ".join(f"{x:.1f},{y:.1f}" for x, y in coords)
            + '"/>'
        )
        for i, p in enumerate(points):
            if p.ci95:
                (x, y1), (_, y2) = xy(i, max(p.ci95[0], 0.0)), xy(i, p.ci95[1])
                parts.append(f'<line x1="{x:.1f}" y1="{y1:.1f}" x2="{x:.1f}" y2="{y2:.1f}" stroke="{colour}"/>')
        parts.append(
            f'<text x="{left + w + 8}" y="{topm + 14 + 14 * n}" font-size="11" fill="{colour}">{escape(version)}</text>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))


def trend_svg(trend: Trend, width: int = 160, height: int = 32) -> Markup:
    """A pin's peak throughput over its recent runs (this run last, marked), inline and tiny."""
    points = [(i, p) for i, (_, p) in enumerate(trend.series) if p is not None and p == p]
    if len(trend.series) < 2 or not points:
        return Markup("")
    lo, hi = min(p for _, p in points), max(p for _, p in points)
    span = (hi - lo) or 1.0

    def xy(i: int, v: float) -> tuple[float, float]:
        return 4 + (width - 8) * i / (len(trend.series) - 1), height - 4 - (height - 8) * (v - lo) / span

    coords = [xy(i, p) for i, p in points]
    x, y = coords[-1]
    title = escape("; ".join(f"{r}: {p:.1f}" if p is not None else f"{r}: —" for r, p in trend.series))
    return Markup(
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img"><title>{title}</title>'
        f'<polyline fill="none" stroke="#1f77b4" stroke-width="1.5" points="'
        + " ".join(f"{a:.1f},{b:.1f}" for a, b in coords)
        + f'"/><circle cx="{x:.1f}" cy="{y:.1f}" r="2.5" fill="#d62728"/></svg>'
    )


_WORD_COLOURS = {
    VerdictWord.SLOWER: "#b00020",
    VerdictWord.FASTER: "#13722b",
    VerdictWord.EQUIVALENT: "#1f77b4",
    VerdictWord.INCONCLUSIVE: "#d98200",
}


def _band(margin: float, higher_is_better: bool, top: float) -> tuple[float, float]:
    """±margin on the ratio as shown, drawn where the row is drawn: a latency's row is inverted (right is better),
    so its band is [1/(1+m), 1/(1-m)]."""
    if higher_is_better:
        return 1 - margin, 1 + margin
    return 1 / (1 + margin), (1 / (1 - margin) if margin < 1 else top)


def forest_svg(verdicts: Sequence[Verdict], width: int = 900, row: int = 22) -> Markup:
    """Every verdict with an interval as a row: the ratio (oriented so right is better for the pin) with its 95%
    interval on a log scale, coloured by its word, over its own ±margin shaded (paired verdicts are decided at their
    metric's A/A floor, sequential ones at the wider sequential margin)."""
    rows = [(v, g) for v in verdicts if (g := v.goodness) is not None]
    if not rows:
        return Markup("")
    label_w, pad = 330, 12
    lo = min(0.5, *(g[1] for _, g in rows))
    hi = max(1.5, *(g[2] for _, g in rows))
    span = math.log(hi) - math.log(lo)

    def x(value: float) -> float:  # clamped to the drawn range: a margin may reach beyond it (or below zero)
        value = min(max(value, lo), hi)
        return label_w + (width - label_w - pad) * (math.log(value) - math.log(lo)) / span

    height = row * len(rows) + 40
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" class="forest">',
        f"<title>{escape('Verdicts: pin / deployed, right is better; shaded: the margin each was decided at')}</title>",
    ]
    for i, (v, _) in enumerate(rows):  # rows with one margin join into one band
        left, right = _band(v.margin, v.higher_is_better, hi)
        parts.append(
            f'<rect class="band" x="{x(left):.1f}" y="{row * i}" '
            f'width="{x(right) - x(left):.1f}" height="{row}" fill="#e8eef6"/>'
        )
    parts.append(
        f'<line x1="{x(1):.1f}" y1="0" x2="{x(1):.1f}" y2="{height - 30}" stroke="#666" stroke-dasharray="3,3"/>'
    )
    for i, (v, (ratio, low, high)) in enumerate(rows):
        y = row * i + row / 2 + 2
        colour = _WORD_COLOURS.get(v.word, "#777")
        label = escape(f"{v.version} · {v.metric} · {v.point}")
        parts += [
            f'<text x="4" y="{y + 4:.1f}" font-size="12">{label}</text>',
            f'<line x1="{x(low):.1f}" y1="{y:.1f}" x2="{x(high):.1f}" y2="{y:.1f}" '
            f'stroke="{colour}" stroke-width="2"/>',
            f'<circle cx="{x(ratio):.1f}" cy="{y:.1f}" r="4" fill="{colour}"><title>{escape(v.line)}</title></circle>',
        ]
    for tick in (0.5, 0.8, 1.0, 1.25, 2.0):
        if lo <= tick <= hi:
            parts.append(
                f'<text x="{x(tick):.1f}" y="{height - 12}" font-size="11" text-anchor="middle">×{tick:g}</text>'
            )
    parts.append(f'<text x="{label_w}" y="{height - 2}" font-size="11">← worse for the pin · better →</text></svg>')
    return Markup("".join(parts))


def render(view: ReportView) -> str:
    return _ENV.get_template("report.html.j2").render(
        view=view,
        curves=[(m, curve_svg(cells)) for m, cells in view.curves],
        trends=[(t, trend_svg(t)) for t in view.trends],
        forest=forest_svg(view.verdicts),
    )
