"""Reports: results -> report.md, report.html, results.json, pins.json in ``reports/<backend>/<run-id>/``.

Both reports render one view model (``view.py``): ``markdown.py`` with tabulate, ``html.py`` with a
jinja2 template, autoescaped. ``reports/<backend>/latest`` is a symlink to the newest run. A run dir
holds ``run.json`` (``RunInfo``: what the reports need besides the cells), so ``rebuild`` makes the
reports again from stored results alone, one run or several merged (shards, a re-run of some cells).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import HarnessError
from ..history import History, Trend
from ..recommend import Recommendation, recommend
from ..results import SCHEMA_VERSION, CellResult, ResultStore, RunInfo
from ..serial import LoadError, dump
from ..spec import Matrix
from ..verdict import Verdict, aa_floors, compare
from . import html, markdown
from .view import build, partial_run, sort_cells


@dataclass(frozen=True, kw_only=True)
class ReportPaths:
    run_dir: Path
    markdown: Path
    html: Path
    results_json: Path
    pins_json: Path
    # what the report found, for a caller that also prints it (computed once: the bootstrap is not free)
    verdicts: tuple[Verdict, ...] = ()
    trends: tuple[Trend, ...] = ()


def workload_digest(matrix: Matrix) -> str:
    """The settings that shape measured numbers (workload, SLOs): two runs' points compare only when equal.
    Only values away from their defaults count, so a new setting (at its default) keeps history whole."""

    def changed(record: Any) -> dict[str, Any]:
        default = dump(type(record)())
        return {k: v for k, v in dump(record).items() if v != default[k]}

    text = json.dumps([changed(matrix.workload), changed(matrix.slo)], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def run_info(matrix: Matrix, run_id: str, expected: Sequence[str] = ()) -> RunInfo:
    return RunInfo(
        backend=matrix.backend,
        matrix=str(matrix.path),
        run_id=run_id,
        references={name: p.reference.text for name, p in matrix.platforms.items()},
        required_checks=matrix.policy.required_checks,
        tie_break=matrix.policy.tie_break,
        noise=matrix.thresholds.throughput_noise,
        drift=matrix.thresholds.machine_drift,
        sequential_noise=matrix.thresholds.sequential_noise,
        seed=matrix.workload.seed,
        workload=workload_digest(matrix),
        expected=tuple(expected),
    )


def _info(settings: Matrix | RunInfo, run_id: str = "", expected: Sequence[str] = ()) -> RunInfo:
    return settings if isinstance(settings, RunInfo) else run_info(settings, run_id, expected)


Group = tuple[str, str, str]  # (model, platform, hardware): what one recommendation is about


def groups(cells: Sequence[CellResult]) -> dict[Group, list[CellResult]]:
    """Cells per model, platform and kind of machine: numbers from two kinds of GPU (or CPU) never meet in
    one ranking or verdict. A cell without a fingerprint joins its model's only kind, when there is one."""
    kinds: dict[tuple[str, str], set[str]] = {}
    for c in cells:
        if c.fingerprint is not None:
            kinds.setdefault((c.model, c.platform), set()).add(c.hardware)
    out: dict[Group, list[CellResult]] = {}
    for c in sort_cells(cells):
        known = kinds.get((c.model, c.platform), set())
        hardware = c.hardware if c.fingerprint is not None or len(known) != 1 else next(iter(known))
        out.setdefault((c.model, c.platform, hardware), []).append(c)
    return out


def recommendations(
    settings: Matrix | RunInfo, cells: Sequence[CellResult], found: Sequence[Verdict] | None = None
) -> list[Recommendation]:
    """One per model, platform and kind of machine (GPU model, or CPU ISA). ``found``: the run's verdicts,
    when already computed."""
    info = _info(settings)
    found = verdicts(info, cells) if found is None else found
    by_group = groups(cells)
    several = len({hw for _, _, hw in by_group}) > 1
    out = []
    for (model, platform, hardware), group in by_group.items():
        ref = info.references.get(platform, group[0].version)
        mine = [v for v in found if v.model == model and (not v.measured_on or v.measured_on == hardware)]
        out.append(
            recommend(
                group,
                required_checks=info.required_checks,
                noise=info.noise,
                tie_break=info.tie_break,
                reference=ref,
                verdicts=mine,
                measured_on=hardware if several else "",
            )
        )
    return out


def baseline(cell: CellResult, group: Sequence[CellResult]) -> CellResult | None:
    """What ``cell`` is weighed against: the reference pin in its baseline variant; for that reference pin
    itself in a variant other than the deployed one, the deployed launch (same pin, other parameters)."""
    refs = [r for r in group if r.is_reference and r.throughput]
    if cell.is_baseline:
        return next((r for r in refs if r.deployed and r is not cell), None)
    return next((r for r in refs if r.variant == cell.baseline_variant), None)


def verdicts(settings: Matrix | RunInfo, cells: Sequence[CellResult]) -> list[Verdict]:
    """Each cell against its baseline (``baseline``) on the same kind of machine, in this run, point by point."""
    info = _info(settings)
    out = []
    for group in groups(cells).values():
        floors = aa_floors(group)  # this run's own noise on this machine: a paired margin is never below it
        for c in group:
            ref = baseline(c, group)
            if ref is not None and c.throughput:
                out += compare(
                    c,
                    ref,
                    noise=info.noise,
                    floors=floors,
                    seed=info.seed,
                    drift=info.drift,
                    deployed=ref.deployed,
                    sequential_noise=info.sequential_noise,
                )
    return out


def margins(settings: Matrix | RunInfo, cells: Sequence[CellResult]) -> list[str]:
    """What the verdicts were decided against, per group: the matrix's margin, this run's A/A floor, and the
    wider margin of points measured alone; and what was up together."""
    info = _info(settings)
    out = []
    for (model, platform, _), group in groups(cells).items():
        floors = aa_floors(group)
        per_metric = {m: f for (_, m), f in floors.items()}
        aa = "; ".join(f"{m} ±{f:.1%}" for m, f in per_metric.items()) or "none: no A/A control in this run"
        out.append(
            f"{model} on {platform}: paired rounds decided at the wider of throughput_noise ±{info.noise:.0%} and "
            f"this run's A/A floor for the same metric, its widest over the load points ({aa}); points measured "
            "alone at "
            f"±{max(info.noise, info.sequential_noise):.0%}"
        )
        out += [f"{c.pin_label}: {c.pairing}" for c in group if c.pairing]
    return out


def first_screen(markdown: str) -> str:
    """What a reader sees first: the title, the recommendation, the verdicts and the summary (no details)."""
    head, _, _ = markdown.partition("\n## Details")
    return head.rstrip() + "\n"


def pins_document(recs: Sequence[Recommendation], cells: Sequence[CellResult]) -> dict[str, object]:
    """What GPUStack needs per model: backend, backend_version, and how that pin gets installed."""
    by_pin = {(c.model, c.platform, c.hardware, c.pin_label): c for c in cells}
    models = []
    for r in recs:
        entry = r.to_dict()
        cell = next(
            (
                c
                for (m, p, hw, label), c in by_pin.items()
                if (m, p, label) == (r.model, r.platform, r.label) and (not r.measured_on or hw == r.measured_on)
            ),
            None,
        )
        if cell is not None and cell.install is not None:
            entry["executable"] = Path(cell.install.executable).name
            entry["install"] = (
                cell.install.export()
            )  # what was run: pipx/uv argv + env, a download's URL + sha256, or manual + path
            if cell.install.build_constraints:  # e.g. PIP_BUILD_CONSTRAINT=<file with these lines>
                entry["build_constraints"] = list(cell.install.build_constraints)
        if cell is not None and cell.deployment is not None:  # GPUStack 2.x: the deployment body to apply
            d = cell.deployment
            entry["deployment"] = {
                "backend": d.backend,
                "backend_version": d.backend_version,
                "backend_parameters": list(d.backend_parameters),
                "env": dict(d.env),
                "server": d.server,
                **({"cluster_id": d.cluster_id} if d.cluster_id is not None else {}),
                "worker": d.worker,
                "gpu": d.gpu,
            }
        if cell is not None and cell.fingerprint is not None:
            entry["measured_on"] = cell.fingerprint.numerics  # the kind of machine this recommendation holds for
        if cell is not None and cell.served is not None:  # the version that answered, and the families it changed
            s = cell.served
            served: dict[str, object] = {
                "detected_version": s.version or None,
                "compared_with": s.compared_with or None,
            }
            entry["served"] = served | {"families_added": list(s.added), "families_removed": list(s.removed)}
        models.append(entry)
    return {"schema_version": 2, "models": models}


def write_reports(
    settings: Matrix | RunInfo,
    run_dir: Path,
    run_id: str,
    cells: Sequence[CellResult],
    *,
    expected: Sequence[str] = (),
    history: Path | None = None,
    trends: Sequence[Trend] | None = None,
) -> tuple[ReportPaths, list[Recommendation]]:
    """``expected``: the cell ids the run was asked to run; a report written before all of them reached a
    final result says it is partial, and which did not run. ``history``: a history dir; each measured
    cell is compared with its earlier runs there, then added to it (once per run id)."""
    info = _info(settings, run_id, expected)
    expected = expected or info.expected
    partial = partial_run(cells, expected)
    found = verdicts(info, cells)
    recs = recommendations(info, cells, found)
    run_dir.mkdir(parents=True, exist_ok=True)
    if trends is None:
        trends = (
            History(history).record(sort_cells(cells), dataclasses.replace(info, run_id=run_id))
            if history is not None
            else []
        )
    paths = ReportPaths(
        run_dir=run_dir,
        markdown=run_dir / "report.md",
        html=run_dir / "report.html",
        results_json=run_dir / "results.json",
        pins_json=run_dir / "pins.json",
        verdicts=tuple(found),
        trends=tuple(trends),
    )
    view = build(info.backend, info.matrix, run_id, cells, recs, partial=partial, verdicts=found, trends=trends)
    view = dataclasses.replace(view, margins=tuple(margins(info, cells)) if found else ())
    _atomic_write(paths.markdown, markdown.render(view))
    _atomic_write(paths.html, html.render(view))
    results = {
        "schema_version": SCHEMA_VERSION,
        "run_id": run_id,
        "backend": info.backend,
        "matrix": info.matrix,
        "cells": [c.to_dict() for c in sort_cells(cells)],
    }
    _atomic_write(paths.results_json, json.dumps(results, indent=2, sort_keys=True) + "\n")
    pins = pins_document(recs, cells)
    pins["verdicts"] = [v.to_dict() for v in found]
    if trends:
        pins["history"] = [t.to_dict() for t in trends]
    if partial is not None:
        pins["partial"] = partial.to_dict()
    _atomic_write(paths.pins_json, json.dumps(pins, indent=2) + "\n")
    if not (run_dir / "run.json").exists():
        dataclasses.replace(info, run_id=run_id, expected=tuple(expected)).write(run_dir)
    _point_latest(run_dir)
    return paths, recs


@dataclass(frozen=True, kw_only=True)
class Merged:
    info: RunInfo
    cells: list[CellResult]
    notes: list[str]  # what replaced what, lines converted from an older schema
    runs: dict[tuple[str, str], RunInfo]  # (cell id, kind of machine) -> the run it came from

    def run_of(self, cell: CellResult) -> RunInfo:
        return self.runs[(cell.cell_id, cell.hardware)]


def merge(run_dirs: Sequence[Path], *, matrix: Matrix | None = None) -> Merged:
    """The cells of several run dirs of one matrix as one run: shards side by side, a re-run of some cells
    replacing their earlier result (a final result always wins over an interrupted one, the later over the
    earlier). A cell is one per kind of machine: the same cell measured on two GPU models is two results."""
    if not run_dirs:
        raise HarnessError("name at least one run directory")
    infos: list[RunInfo] = []
    Key = tuple[str, str]  # (cell id, kind of machine)
    cells: dict[Key, CellResult] = {}
    origin: dict[Key, RunInfo] = {}
    where: dict[Key, Path] = {}  # the run dir each kept result came from
    notes: list[str] = []
    replaced: list[tuple[Key, Path, Path]] = []  # (cell, the dir whose result is kept, the other)
    for run_dir in run_dirs:
        store = run_dir / "results.jsonl"
        if not store.is_file():
            raise HarnessError(f"{run_dir}: no results.jsonl (not a run directory)")
        try:
            info = run_info(matrix, run_dir.name) if matrix is not None else RunInfo.read(run_dir)
            loaded = ResultStore(store)
            found = loaded.load()
        except (LoadError, ValueError) as exc:
            raise HarnessError(str(exc)) from exc
        notes += loaded.notes
        if infos and info.backend != infos[0].backend:
            raise HarnessError(
                f"{run_dir}: a {info.backend} run; {run_dirs[0]} is {infos[0].backend}: merge runs of one matrix"
            )
        if infos and (info.workload, info.references) != (infos[0].workload, infos[0].references):
            raise HarnessError(
                f"{run_dir}: its workload or reference pins differ from {run_dirs[0]}'s: its numbers do not merge"
            )
        infos.append(info)
        for cell in found:
            key = (cell.cell_id, cell.hardware)
            old = cells.get(key)
            if old is not None and (
                old.final and not cell.final or (old.final == cell.final and old.finished_at > cell.finished_at)
            ):
                replaced.append((key, where[key], run_dir))
                continue
            if old is not None:
                replaced.append((key, run_dir, where[key]))
            cells[key], origin[key], where[key] = cell, info, run_dir
    ids = [i.run_id for i in infos]
    names = {
        d: (f"run {i.run_id}" if ids.count(i.run_id) == 1 else str(d)) for d, i in zip(run_dirs, infos, strict=True)
    }
    notes += [f"{cid}: {names[kept]}'s result is kept over {names[other]}'s" for (cid, _), kept, other in replaced]
    first = infos[0]
    expected = tuple(dict.fromkeys(cid for i in infos for cid in (i.expected or ())))
    if len(infos) > 1:
        first = dataclasses.replace(first, run_id="+".join(dict.fromkeys(ids)), sources=tuple(ids))
    merged = dataclasses.replace(first, expected=expected)
    return Merged(info=merged, cells=list(cells.values()), notes=notes, runs=origin)


def rebuild(
    run_dirs: Sequence[Path], out: Path | None = None, *, matrix: Matrix | None = None, history: Path | None = None
) -> tuple[ReportPaths, list[Recommendation], list[str]]:
    """Reports from stored results: one run dir again, in place; several merged into ``out`` (which gets
    their cells as its own results.jsonl and run.json, so it is a run dir too). Idempotent."""
    merged = merge(run_dirs, matrix=matrix)
    info, cells = merged.info, merged.cells
    target = out or run_dirs[0]
    if target.resolve() not in {d.resolve() for d in run_dirs}:
        target.mkdir(parents=True, exist_ok=True)
        lines = "".join(json.dumps(c.to_dict(), sort_keys=True, allow_nan=False) + "\n" for c in sort_cells(cells))
        _atomic_write(target / "results.jsonl", lines)
        info.write(target)
    elif len(run_dirs) > 1:
        raise HarnessError(
            f"{target}: the merged report needs its own directory (--out), not one of the runs it merges"
        )
    trends = None
    if history is not None:  # each cell enters history under the run that measured it, not the merge
        store = History(history)
        for run in {r.run_id: r for r in merged.runs.values()}.values():
            store.record([c for c in sort_cells(cells) if merged.run_of(c) is run], run)
        trends = [store.trend(c, merged.run_of(c)) for c in sort_cells(cells) if c.final and c.throughput]
    paths, recs = write_reports(info, target, info.run_id, cells, expected=info.expected, trends=trends)
    return paths, recs, merged.notes


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
