"""Which release broke it: a binary search over the releases between a good and a bad pin.

    python -m harness bisect matrices/vllm.toml --good 0.30.0 --bad 0.32.0 [--on throughput]

The releases come from where version ranges come from (the package index, a download's release list) or
from the pins already in the bin dir (``--versions-from installed``). The good pin runs first as the
reference; each midpoint cell is judged against it on one criterion:

- ``throughput``: any verdict "slower" (output tok/s, TTFT p50, TPOT p50 at any load point, ``verdict.py``);
  "equivalent" or "faster" everywhere is good; anything else (inconclusive, too few samples, client-bound,
  machine unstable) cannot be judged, and the search stops and says so rather than guess;
- ``agreement`` / ``accuracy`` / ``conformance``: a failed check of that group against the good pin.

The bad pin is taken as bad (as the user said; ``--verify-bad`` runs it too), so n releases from good to
bad need at most ceil(log2(n)) + 1 cells. Every cell is recorded in a run dir like any run's, with
``bisect.json`` naming the first bad release and the evidence.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from packaging.specifiers import SpecifierSet

from . import index, releases
from .cell import Progress, RunContext, run_cell
from .errors import HarnessError, InstallError
from .install import InstallPaths
from .report import run_info, write_reports
from .results import CellResult, FailureClass, ResultStore, Status
from .safe import shorten
from .slots import Slot
from .spec import Matrix, ModelSpec, PinSpec, VersionSet
from .verdict import compare
from .versions import InvalidPin, parse_pin
from .words import StepWord, VerdictWord

CRITERIA = ("throughput", "agreement", "accuracy", "conformance")
SOURCES = ("index", "installed")


@dataclass(frozen=True, kw_only=True)
class Step:
    version: str
    word: StepWord
    why: str


@dataclass(frozen=True, kw_only=True)
class Outcome:
    good: str
    bad: str
    on: str
    releases: tuple[str, ...]  # good .. bad, in version order
    steps: tuple[Step, ...]  # in the order run (the good pin's reference cell not included)
    first_bad: str | None  # None: the search stopped on a cell it could not judge
    cells_run: int

    @classmethod
    def of(
        cls, releases: Sequence[str], on: str, steps: Sequence[Step], first_bad: str | None, cells_run: int
    ) -> Outcome:
        return cls(
            good=releases[0],
            bad=releases[-1],
            on=on,
            releases=tuple(releases),
            steps=tuple(steps),
            first_bad=first_bad,
            cells_run=cells_run,
        )

    @property
    def line(self) -> str:
        if self.first_bad is None:
            last = self.steps[-1]
            return f"stopped: {last.version} could not be judged on {self.on} ({last.why})"
        evidence = next((s for s in self.steps if s.version == self.first_bad), None)
        before = self.releases[self.releases.index(self.first_bad) - 1]
        why = evidence.why if evidence else f"not run: {self.bad} is the bad end you named"
        return f"first bad release on {self.on}: {self.first_bad} (last good: {before}) — {why}"

    def to_dict(self) -> dict[str, object]:
        return {
            "good": self.good,
            "bad": self.bad,
            "on": self.on,
            "releases": list(self.releases),
            "first_bad": self.first_bad,
            "cells_run": self.cells_run,
            "budget": budget(len(self.releases)),
            "steps": [dataclasses.asdict(s) for s in self.steps],
            "summary": self.line,
        }


def budget(releases: int) -> int:
    """The most cells a bisect over ``releases`` (good and bad included) runs: ceil(log2(n)) + 1."""
    return math.ceil(math.log2(max(releases, 2))) + 1


def search(
    releases: Sequence[str], measure: Callable[[str], Step], *, verify_bad: bool = False
) -> tuple[str | None, list[Step]]:
    """Binary search for the first bad release; ``releases`` runs from the good pin to the bad one."""
    steps: list[Step] = []
    after = list(releases[1:])  # the good pin is known good; the last one is bad
    if verify_bad:
        steps.append(measure(after[-1]))
        if steps[-1].word is not StepWord.BAD:
            return None, steps
    lo, hi = 0, len(after) - 1
    while lo < hi:
        mid = (lo + hi) // 2
        step = measure(after[mid])
        steps.append(step)
        if step.word is StepWord.BAD:
            hi = mid
        elif step.word is StepWord.GOOD:
            lo = mid + 1
        else:
            return None, steps
    return after[lo], steps


def judge(cell: CellResult, good: CellResult, on: str, *, noise: float, drift: float, seed: int) -> Step:
    """Good or bad against the good pin's cell, on one criterion; "cannot judge" when the cell says nothing."""
    if cell.status is not Status.PASSED and cell.failure_class is not FailureClass.CHECK_FAILED:
        what = cell.failure_class.value if cell.failure_class else cell.status.value
        return Step(version=cell.version, word=StepWord.CANNOT_JUDGE, why=f"{what}: {cell.reason}")
    if on == "throughput":
        found = compare(
            cell, good, noise=noise, seed=seed, drift=drift, labels=(cell.version, f"{good.version} (good)")
        )
        slower = [v for v in found if v.word is VerdictWord.SLOWER]
        if slower:
            return Step(version=cell.version, word=StepWord.BAD, why=slower[0].line)
        fine = (VerdictWord.EQUIVALENT, VerdictWord.FASTER)
        if found and all(v.word in fine for v in found):
            best = next((v for v in found if v.metric == "output tok/s"), found[0])
            return Step(version=cell.version, word=StepWord.GOOD, why=best.line)
        unclear = next((v for v in found if v.word not in fine), None)
        return Step(
            version=cell.version,
            word=StepWord.CANNOT_JUDGE,
            why=unclear.line if unclear else "no load point measured on both",
        )
    failed = [c for c in cell.checks if c.group == on and c.passed is False]
    if failed:
        return Step(
            version=cell.version,
            word=StepWord.BAD,
            why="; ".join(f"{c.name}: {shorten(c.detail, 160)}" for c in failed),
        )
    ran = [c for c in cell.checks if c.group == on and c.passed is True]
    if not ran:
        return Step(version=cell.version, word=StepWord.CANNOT_JUDGE, why=f"no {on} check was evaluated")
    return Step(version=cell.version, word=StepWord.GOOD, why=f"{len(ran)} {on} check(s) passed")


def releases_between(
    matrix: Matrix, platform: str, good: str, bad: str, *, source: str, paths: InstallPaths, download_base_url: str
) -> list[str]:
    """Every release from ``good`` to ``bad`` (both included), oldest first, from the index, the release
    list, or the bin dir's installed pins."""
    try:
        lo, hi = parse_pin(good), parse_pin(bad)
    except InvalidPin as exc:
        raise HarnessError(f"--good/--bad: {exc}") from exc
    if lo.version >= hi.version:
        raise HarnessError(f"--good {good} must be older than --bad {bad}")
    vs = VersionSet(spec=SpecifierSet(f">{lo.version},<{hi.version}"), newest=10**6, installed=source == "installed")
    try:
        found = releases.find(matrix, platform, vs, paths=paths, download_base_url=download_base_url)
    except InstallError as exc:
        if "matches" not in str(exc):
            raise HarnessError(str(exc)) from exc
        found = []  # nothing between: good and bad are neighbours
    except index.IndexError_ as exc:
        if "matches" not in str(exc):
            raise HarnessError(str(exc)) from exc
        found = []
    return [lo.text, *dict.fromkeys(found), hi.text]


def _runner(
    base: RunContext,
    pins: tuple[PinSpec, ...],
    model: ModelSpec,
    store: ResultStore,
    ran: list[CellResult],
    progress: Progress,
) -> Callable[[str], CellResult]:
    """Runs one release's cell, records it in the store and in ``ran``."""

    def run(version: str) -> CellResult:
        ctx = dataclasses.replace(base, progress=lambda message: progress(f"[{version}] {message}"))
        result = run_cell(ctx, next(p for p in pins if p.pin.text == version), model)
        store.append(result)
        ran.append(result)
        return result

    return run


def _search_matrix(matrix: Matrix, platform: str, releases: list[str]) -> tuple[Matrix, tuple[PinSpec, ...]]:
    """The matrix with the releases as its pins; the good pin is this search's reference: agreement and verdicts
    are against it."""
    pins = tuple(PinSpec(pin=parse_pin(v), why="bisect") for v in releases)
    plat = dataclasses.replace(matrix.platforms[platform], versions=pins, reference=pins[0].pin, version_sets=())
    return dataclasses.replace(matrix, platforms={**matrix.platforms, platform: plat}), pins


def _check_arguments(matrix: Matrix, platform: str, *, on: str, source: str, model: str | None) -> ModelSpec:
    """The model to bisect on, once the criterion, the release source and the platform are known ones."""
    if on not in CRITERIA:
        raise HarnessError(f"--on {on!r}: expected one of {', '.join(CRITERIA)}")
    if source not in SOURCES:
        raise HarnessError(f"--versions-from {source!r}: expected one of {', '.join(SOURCES)}")
    if platform not in matrix.platforms:
        raise HarnessError(f"{matrix.path}: no '{platform}' platform (has: {', '.join(matrix.platforms)})")
    plat = matrix.platforms[platform]
    models = {m.name: m for m in plat.models}
    chosen = models.get(model or plat.models[0].name)
    if chosen is None:
        raise HarnessError(f"--model {model!r}: not a model of platform {platform} (has: {', '.join(models)})")
    return chosen


def bisect(
    matrix: Matrix,
    platform: str,
    *,
    good: str,
    bad: str,
    on: str,
    paths: InstallPaths,
    reports_dir: Path,
    model: str | None = None,
    source: str = "index",
    verify_bad: bool = False,
    download_base_url: str = "https://github.com",
    allow_http_mirror: bool = False,
    progress: Progress = print,
    slot: Slot | None = None,
) -> tuple[Outcome, Path]:
    chosen = _check_arguments(matrix, platform, on=on, source=source, model=model)
    releases = releases_between(
        matrix, platform, good, bad, source=source, paths=paths, download_base_url=download_base_url
    )
    listed = f"{len(releases)} releases of {matrix.backend} on {on}: {', '.join(releases)}"
    progress(f"bisecting {listed} (at most {budget(len(releases))} cells)")
    matrix, pins = _search_matrix(matrix, platform, releases)
    run_id = "bisect-" + dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    run_dir = reports_dir.resolve() / matrix.backend / run_id
    store = ResultStore(run_dir / "results.jsonl")
    run_info(matrix, run_id).write(run_dir)
    ran: list[CellResult] = []
    base = RunContext(
        matrix=matrix,
        platform=platform,
        paths=paths,
        run_dir=run_dir,
        slot=slot or Slot(platform=platform),
        download_base_url=download_base_url,
        allow_http_mirror=allow_http_mirror,
    )

    run = _runner(base, pins, chosen, store, ran, progress)
    reference = run(releases[0])
    t = matrix.thresholds
    if reference.status is not Status.PASSED:
        why = f"the good pin {good} did not pass ({reference.reason}): there is nothing to compare against"
        raise HarnessError(why)

    def measure(version: str) -> Step:
        step = judge(
            run(version), reference, on, noise=t.throughput_noise, drift=t.machine_drift, seed=matrix.workload.seed
        )
        progress(f"[{version}] {step.word}: {step.why}")
        return step

    first_bad, steps = search(releases, measure, verify_bad=verify_bad)
    outcome = Outcome.of(releases, on, steps, first_bad, cells_run=len(ran))
    write_reports(matrix, run_dir, run_id, ran)
    (run_dir / "bisect.json").write_text(json.dumps(outcome.to_dict(), indent=1) + "\n", encoding="utf-8")
    return outcome, run_dir
