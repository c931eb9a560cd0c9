"""When every pin of a model fails on the same model line, the report says first that it is the model (or its
preparation), not the pins."""

from __future__ import annotations

from pathlib import Path

from harness.report import write_reports
from harness.report.view import model_findings
from harness.results import CellResult, FailureClass, Status
from harness.spec import parse_matrix
from tests.support import cells

HERE = Path(__file__).resolve()
LINE = "ValueError: Invalid repository ID or local directory specified: '/data/models/pypi/abc'"


def _failed(version: str, cls: FailureClass, reason: str, **kw: object) -> CellResult:
    c = cells.cell(version, model="base", status=Status.ERROR, failure_class=cls, reason=reason, **kw)
    return c


def test_every_pin_failing_on_the_same_line_is_the_models_finding(tmp_path: Path) -> None:
    found = [
        _failed("0.31.0", FailureClass.STARTUP_FAILED, f"server exited with code 1 before it was ready: {LINE}"),
        _failed("0.32.0", FailureClass.STARTUP_FAILED, f"server exited with code 2 before it was ready: {LINE}"),
        _failed("0.26.0", FailureClass.INSTALL_FAILED, "pipx install: no torch"),  # never got to the model
    ]
    assert model_findings(found) == [
        f"No pin could load base on cpu (0.31.0, 0.32.0): {LINE} — the model or its preparation, not the pins"
    ]
    matrix = parse_matrix(
        {
            "backend": "vllm",
            "platforms": {
                "cpu": {
                    "versions": ["0.31.0", "0.32.0", "0.26.0"],
                    "reference": "0.31.0",
                    "models": [{"name": "base", "source": f"file://{HERE}"}],
                }
            },
        },
        "m.toml",
    )
    paths, _ = write_reports(matrix, tmp_path / "run", "run", found)
    md = paths.markdown.read_text()
    assert md.index("No pin could load base on cpu") < md.index("## Recommendation")
    html = paths.html.read_text()
    assert 'class="rec norec finding"' in html and html.index("No pin could load") < html.index("Recommendation</h2>")


def test_different_lines_or_one_pin_are_the_pins_own() -> None:
    one = [_failed("0.32.0", FailureClass.STARTUP_FAILED, f"server exited with code 1 before it was ready: {LINE}")]
    assert model_findings(one) == []
    two = [
        *one,
        _failed("0.31.0", FailureClass.STARTUP_FAILED, "server exited with code 1 before it was ready: CUDA error"),
    ]
    assert model_findings(two) == []
    passed = [*one, cells.cell("0.31.0", model="base", status=Status.PASSED)]
    assert model_findings(passed) == []


def test_a_model_no_pin_could_prepare_is_said_once() -> None:
    reason = "file:///m: not a model: the directory holds notes.txt"
    both = [_failed(v, FailureClass.MODEL_FAILED, reason) for v in ("0.31.0", "0.32.0")]
    assert model_findings(both) == [
        f"No pin could load base on cpu (0.31.0, 0.32.0): {reason} — the model or its preparation, not the pins"
    ]


def test_the_forest_plot_draws_a_margin_wider_than_the_ratios() -> None:
    """An A/A floor beyond 100% (two servers that disturbed each other) made the margin band start below zero:
    the report failed with a math domain error and no report was written."""
    from harness.report.html import forest_svg
    from harness.words import VerdictWord

    v = cells.verdict(VerdictWord.EQUIVALENT, 1.4, 0.9, 1.9, margin=1.2, rounds=26)
    svg = str(forest_svg([v]))
    assert svg.startswith("<svg") and "0.32.0 · output tok/s · c=1" in svg


def test_the_forest_plot_shades_each_row_at_its_own_margin() -> None:
    """Paired verdicts are decided at their own metric's A/A floor, sequential ones at the wider sequential margin:
    one band for all (the widest) showed a verdict decided at ±5% against a ±15% band."""
    import re

    from harness.report.html import forest_svg
    from harness.verdict import Verdict
    from harness.words import VerdictWord

    def verdict(metric: str, margin: float) -> Verdict:
        return cells.verdict(VerdictWord.SLOWER, 0.8, 0.75, 0.85, metric=metric, margin=margin)

    svg = str(forest_svg([verdict("output tok/s", 0.05), verdict("TPOT p50", 0.15)]))
    bands = [
        (float(x), float(w), float(y))
        for x, y, w in re.findall(r'<rect class="band" x="([\d.]+)" y="([\d.]+)" width="([\d.]+)"', svg)
    ]
    assert len(bands) == 2, svg
    (x5, w5, y5), (x15, w15, y15) = bands
    assert x15 < x5 and w15 > 2.5 * w5 and y15 > y5  # each row's own band, in its own row


def test_a_latency_rows_band_is_its_margin_on_the_ratio_as_shown() -> None:
    """The row of a latency is drawn inverted (right is better): ±10% on TTFT is [1/1.1, 1/0.9] there."""
    from harness.report.html import _band

    assert _band(0.1, True, 2.0) == (0.9, 1.1)
    low, high = _band(0.1, False, 2.0)
    assert low == 1 / 1.1 and high == 1 / 0.9
    assert _band(1.2, False, 2.0)[1] == 2.0  # a margin past 100% reaches the drawn edge
