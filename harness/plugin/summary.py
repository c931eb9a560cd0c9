"""The end of a run: each matrix's reports written from its results file, and what they recommend said on the
terminal (and on a CI job's summary page)."""

from __future__ import annotations

import os
from typing import Any

import pytest

from ..report import first_screen, write_reports
from ..results import ResultStore
from ..safe import terminal
from ..words import VerdictWord
from .options import EXPECTED, MATRICES, history_dir, run_dir


def write_summary(terminalreporter: Any, config: pytest.Config) -> None:
    """Each matrix's reports written, and the recommendation, verdicts and trends on the terminal."""
    for backend, matrix in config.stash.get(MATRICES, {}).items():
        directory = run_dir(config, backend)
        store = ResultStore(directory / "results.jsonl")
        cells = store.load()
        if not cells:
            continue
        tr = terminalreporter
        for note in store.notes:  # e.g. lines of an older results schema, converted
            tr.write_line(f"pinmatrix: {note}", yellow=True)
        expected = config.stash.get(EXPECTED, {}).get(backend, [])
        try:
            paths, recs = write_reports(
                matrix, directory, config.option.pm_run_id, cells, expected=expected, history=history_dir(config)
            )

            if step_summary := os.environ.get("GITHUB_STEP_SUMMARY"):  # a CI job's summary page shows the first screen
                with open(step_summary, "a", encoding="utf-8") as fh:
                    fh.write(first_screen(paths.markdown.read_text(encoding="utf-8")) + "\n")
        except Exception as exc:  # the results are safe in results.jsonl; say so instead of a traceback
            tr.write_line(
                f"pinmatrix: could not write the {backend} report ({type(exc).__name__}: {exc}); "
                f"results are kept in {directory / 'results.jsonl'}",
                red=True,
            )
            continue
        tr.section(f"pinmatrix: {backend}", sep="=", bold=True)
        for rec in recs:
            tr.write_line(terminal(f"recommended pin for {rec.where}: {backend} {rec.headline}"), bold=True)
            for reason in rec.reasons:
                tr.write_line(terminal(f"  - {reason}"))
            for version, why in rec.rejected.items():
                tr.write_line(terminal(f"  x {version}: {why}"))
        shown = [v for v in paths.verdicts if v.word is not VerdictWord.EQUIVALENT]  # one line each that is not
        for verdict in shown:
            tr.write_line(terminal(f"verdict: {verdict.line}"), red=verdict.flagged)
        if len(shown) < len(paths.verdicts):
            tr.write_line(f"verdicts: {len(paths.verdicts) - len(shown)} equivalent within their margin (report.md)")
        for trend in paths.trends:
            if trend.compared:
                tr.write_line(terminal(f"history: {trend.line}"), red=trend.word.flagged)
        for label, path in (
            ("markdown", paths.markdown),
            ("html", paths.html),
            ("results", paths.results_json),
            ("pins", paths.pins_json),
        ):
            tr.write_line(f"{label:>9}: {os.path.relpath(path)}")
