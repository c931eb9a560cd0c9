"""Each cell against its own recent past: did this pin get slower since last week, on this kind of machine?

``History`` keeps every measured cell in ``<dir>/<backend>/<platform>/<model>/<version>.jsonl``, one line
per run (run id, the numerics key of the machine, the workload digest, whether it was flagged, the cell).
A cell is compared with the pooled load points of the last ``LAST`` earlier runs of the same pin, model
and platform on the same kind of machine with the same workload, by the verdict rule of ``verdict.py``
(the ratio, its bootstrap interval, the noise margin). A run where some metric is "slower" is *flagged*;
PyTorch's vLLM dashboard's rule names it: one flagged run is "suspicious", two in a row a "regression".
Different machines or workloads are never compared: their history is separate.

Recording is idempotent: a run id already in the history is not added again, and its trend is computed
against the runs before it, so rebuilding a report gives the same answer.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock

from .results import CellResult, LoadPoint, RunInfo, append_line
from .serial import LoadError, dump
from .stats import percentile
from .verdict import Verdict, compare
from .versions import path_safe
from .words import TrendWord, VerdictWord

LAST = 10  # SGLang's nightly compares with the last 10 runs; PyTorch's dashboard with a rolling median


@dataclass(frozen=True, kw_only=True)
class Entry:
    run_id: str
    numerics: str
    workload: str
    flagged: bool
    peak: float | None
    cell: CellResult


@dataclass(frozen=True, kw_only=True)
class Trend:
    """One cell against its history: a word, the verdicts behind it, and the series for a chart."""

    version: str
    model: str
    platform: str
    word: TrendWord
    compared: int  # earlier runs pooled
    verdicts: tuple[Verdict, ...]
    series: tuple[tuple[str, float | None], ...]  # (run id, peak rate), oldest first, this run last
    unit: str

    @property
    def line(self) -> str:
        if not self.compared:
            return f"{self.version} on {self.model}: first run on this kind of machine with this workload"
        flagged = [v for v in self.verdicts if v.word is VerdictWord.SLOWER]
        why = (
            "; ".join(v.line for v in flagged[:3])
            if flagged
            else f"no slower metric against the last {self.compared} run(s)"
        )
        return f"{self.version} on {self.model}: {self.word} — {why}"

    def to_dict(self) -> dict[str, object]:
        return {
            "version": self.version,
            "model": self.model,
            "platform": self.platform,
            "trend": self.word.value,
            "compared_runs": self.compared,
            "verdicts": [v.to_dict() for v in self.verdicts],
            "series": [{"run_id": r, "peak": p} for r, p in self.series],
            "unit": self.unit,
        }


def _numerics(cell: CellResult) -> str:
    return cell.fingerprint.numerics if cell.fingerprint is not None else "unknown"


def pooled(cells: Sequence[CellResult]) -> CellResult:
    """One cell whose load points hold every run of ``cells``' points of the same label: the baseline."""
    first = cells[-1]
    by_label: dict[str, list[LoadPoint]] = {}
    for c in cells:
        for p in c.throughput:
            by_label.setdefault(p.label, []).append(p)
    points = [
        LoadPoint.of(
            label=label, mode=ps[0].mode, target=ps[0].target, unit=ps[0].unit, runs=[r for p in ps for r in p.runs]
        )
        for label, ps in by_label.items()
    ]
    return dataclasses.replace(first, throughput=points, stability=None)


def _variant(cell: CellResult) -> str:
    return f"-{path_safe(cell.variant)}" if cell.variant else ""  # a launch variant has a history of its own


class History:
    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, cell: CellResult) -> Path:
        folder = self.root / path_safe(cell.backend) / path_safe(cell.platform) / path_safe(cell.model)
        return folder / f"{path_safe(cell.version)}{_variant(cell)}.jsonl"

    def entries(self, cell: CellResult) -> list[Entry]:
        """Every stored run of this cell's pin, model and platform, oldest first (unreadable lines skipped)."""
        path = self._path(cell)
        if not path.exists():
            return []
        out = []
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                data = json.loads(line)
                cell = CellResult.from_dict(data["cell"])
                out.append(
                    Entry(
                        run_id=str(data["run_id"]),
                        numerics=str(data["numerics"]),
                        workload=str(data["workload"]),
                        flagged=bool(data["flagged"]),
                        peak=data.get("peak"),
                        cell=cell,
                    )
                )
            except (ValueError, KeyError, TypeError, LoadError):
                continue  # a torn line of a killed run, or a schema this version cannot read: not history
        return out

    def costs(self, backend: str, platform: str, *, exclude_run: str = "", numerics: str = "") -> dict[str, float]:
        """cell id -> the median wall seconds of its last 3 recorded runs: what balances shards and what a run
        expects. Runs of ``exclude_run`` are left out, so shards of one run id plan alike even when one
        finished first; ``numerics``: only runs on this kind of machine (an estimate for this one)."""
        folder = self.root / path_safe(backend) / path_safe(platform)
        out: dict[str, float] = {}
        for path in sorted(folder.glob("*/*.jsonl")) if folder.is_dir() else []:
            walls: list[tuple[str, float]] = []
            for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
                try:
                    entry = json.loads(line)
                    if (
                        entry.get("run_id") == exclude_run
                        and exclude_run
                        or numerics
                        and entry.get("numerics") != numerics
                    ):
                        continue
                    cell = entry["cell"]
                    walls.append((str(cell["cell_id"]), float(cell.get("wall_s") or 0.0)))
                except (ValueError, KeyError, TypeError):
                    continue
            recent = [w for _, w in walls[-3:] if w > 0]
            if recent:
                out[walls[-1][0]] = percentile(recent, 50)
        return out

    def trend(self, cell: CellResult, info: RunInfo) -> Trend:
        """This cell against the runs before this one (same machine kind, same workload)."""
        entries = self.entries(cell)
        mine = next((i for i, e in enumerate(entries) if e.run_id == info.run_id), len(entries))
        earlier = [
            e
            for e in entries[:mine]
            if e.numerics == _numerics(cell)
            and e.workload == info.workload
            and e.cell.throughput
            and "unknown" not in e.numerics
        ][-LAST:]
        if "unknown" in _numerics(cell):
            earlier = []
        series = tuple((e.run_id, e.peak) for e in earlier) + ((info.run_id, cell.peak_rate()),)

        def trend(word: TrendWord, found: Sequence[Verdict] = ()) -> Trend:
            return Trend(
                version=cell.pin_label,
                model=cell.model,
                platform=cell.platform,
                word=word,
                compared=len(earlier),
                verdicts=tuple(found),
                series=series,
                unit=cell.rate_unit,
            )

        if not earlier:
            return trend(TrendWord.FIRST_RUN)
        labels = (
            f"{cell.pin_label} ({info.run_id})",
            f"{cell.pin_label} (last {len(earlier)} run{'s' * (len(earlier) > 1)})",
        )
        found = compare(
            cell, pooled([e.cell for e in earlier]), noise=info.noise, seed=info.seed, labels=labels, drift=info.drift
        )
        words = {v.word for v in found}
        if VerdictWord.SLOWER in words:
            word = TrendWord.REGRESSION if earlier[-1].flagged else TrendWord.SUSPICIOUS
        elif VerdictWord.FASTER in words:
            word = TrendWord.IMPROVED
        else:
            word = TrendWord.STEADY
        return trend(word, found)

    def record(self, cells: Sequence[CellResult], info: RunInfo) -> list[Trend]:
        """Each measured cell's trend, and the cell added to its history (once per run id)."""
        trends = []
        for cell in cells:
            if not cell.final or not cell.throughput:
                continue
            t = self.trend(cell, info)
            trends.append(t)
            path = self._path(cell)
            path.parent.mkdir(parents=True, exist_ok=True)
            lock = FileLock(str(path) + ".lock")
            with lock:
                if any(e.run_id == info.run_id for e in self.entries(cell)):
                    continue
                line: dict[str, Any] = {
                    "run_id": info.run_id,
                    "numerics": _numerics(cell),
                    "workload": info.workload,
                    "flagged": t.word.flagged,
                    "peak": cell.peak_rate(),
                    "finished_at": cell.finished_at,
                    "cell": cell.to_dict(),
                }
                append_line(path, json.dumps(dump(line), sort_keys=True, allow_nan=False))
        return trends
