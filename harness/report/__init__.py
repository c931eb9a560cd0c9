"""Reports: results -> report.md, report.html, results.json, pins.json in ``reports/<backend>/<run-id>/``.

Both reports render one view model (``view.py``): ``markdown.py`` with tabulate, ``html.py`` with a
jinja2 template, autoescaped. ``reports/<backend>/latest`` is a symlink to the newest run.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..recommend import Recommendation, recommend
from ..results import SCHEMA_VERSION, CellResult
from ..spec import Matrix
from ..verdict import Verdict, compare
from . import html, markdown
from .view import build, partial_run, sort_cells


@dataclass(frozen=True, kw_only=True)
class ReportPaths:
    run_dir: Path
    markdown: Path
    html: Path
    results_json: Path
    pins_json: Path


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


def verdicts(matrix: Matrix, cells: Sequence[CellResult]) -> list[Verdict]:
    """Each pin against the reference pin of its model and platform, in this run, point by point."""
    out = []
    for c in sort_cells(cells):
        ref = next((r for r in cells if r.is_reference and r.model == c.model and r.platform == c.platform and r.throughput), None)
        if ref is not None and c is not ref and c.throughput:
            out += compare(c, ref, noise=matrix.thresholds.throughput_noise, seed=matrix.workload.seed)
    return out


def first_screen(markdown: str) -> str:
    """What a reader sees first: the title, the recommendation, the verdicts and the summary (no details)."""
    head, _, _ = markdown.partition("\n## Details")
    return head.rstrip() + "\n"


def pins_document(recs: Sequence[Recommendation], cells: Sequence[CellResult]) -> dict[str, object]:
    """What GPUStack needs per model: backend, backend_version, and how that pin gets installed."""
    by_version = {(c.model, c.platform, c.version): c for c in cells}
    models = []
    for r in recs:
        entry = r.to_dict()
        cell = by_version.get((r.model, r.platform, r.version or ""))
        if cell is not None and cell.install is not None:
            entry["executable"] = Path(cell.install.executable).name
            entry["install"] = cell.install.export()  # what was run: pipx/uv argv + env, a download's URL + sha256, or manual + path
            if cell.install.build_constraints:  # e.g. PIP_BUILD_CONSTRAINT=<file with these lines>
                entry["build_constraints"] = list(cell.install.build_constraints)
        if cell is not None and cell.fingerprint is not None:
            entry["measured_on"] = cell.fingerprint.numerics  # the kind of machine this recommendation holds for
        models.append(entry)
    return {"schema_version": 2, "models": models}


def write_reports(matrix: Matrix, run_dir: Path, run_id: str, cells: Sequence[CellResult], *,
                  expected: Sequence[str] = ()) -> tuple[ReportPaths, list[Recommendation]]:  # fmt: skip
    """``expected``: the cell ids the run was asked to run; a report written before all of them reached a
    final result says it is partial, and which did not run."""
    partial = partial_run(cells, expected)
    recs = recommendations(matrix, cells)
    paths = ReportPaths(
        run_dir=run_dir,
        markdown=run_dir / "report.md",
        html=run_dir / "report.html",
        results_json=run_dir / "results.json",
        pins_json=run_dir / "pins.json",
    )
    run_dir.mkdir(parents=True, exist_ok=True)
    found = verdicts(matrix, cells)
    view = build(matrix.backend, str(matrix.path), run_id, cells, recs, partial=partial, verdicts=found)
    _atomic_write(paths.markdown, markdown.render(view))
    _atomic_write(paths.html, html.render(view))
    results = {"schema_version": SCHEMA_VERSION, "run_id": run_id, "backend": matrix.backend, "matrix": str(matrix.path),
               "cells": [c.to_dict() for c in sort_cells(cells)]}  # fmt: skip
    _atomic_write(paths.results_json, json.dumps(results, indent=2, sort_keys=True) + "\n")
    pins = pins_document(recs, cells)
    pins["verdicts"] = [v.to_dict() for v in found]
    if partial is not None:
        pins["partial"] = partial.to_dict()
    _atomic_write(paths.pins_json, json.dumps(pins, indent=2) + "\n")
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
