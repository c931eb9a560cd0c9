"""Which cells run where and when: this shard's cells, what history expects each to take, a cell waiting for
its model's reference cell on another xdist worker, one cell per GPU slot, and ``-n auto``'s worker count."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Protocol

import pytest
from filelock import FileLock, Timeout

from ..cell import RunContext, this_machine
from ..errors import SpecError
from ..history import History
from ..results import ResultStore
from ..shards import plan, selected
from ..slots import GpuDiscoveryError, default_platform, discover_gpus, slot_count
from ..spec import Matrix, ModelSpec, PinSpec, VariantSpec, load_matrix


class Cell(Protocol):
    """What scheduling reads of a collected cell (``items.CellItem``)."""

    matrix: Matrix
    platform: str
    pin: PinSpec
    model: ModelSpec
    variant: VariantSpec
    cell_id: str
    skip_reason: str
    estimate_s: float | None


def shard_cells(cells: Sequence[Cell], index: int, count: int, history: Path | None, run_id: str) -> set[str]:
    """The cell ids of shard ``index`` of ``count`` (each shard holds the reference cells its cells need)."""
    groups: dict[tuple[str, str], list[Cell]] = {}
    for c in cells:
        groups.setdefault((c.matrix.backend, c.platform), []).append(c)
    keep: set[str] = set()
    for (backend, platform), group in groups.items():
        ids = {(c.pin.pin.text, c.model.name, c.variant.name): c.cell_id for c in group}
        costs = History(history).costs(backend, platform, exclude_run=run_id) if history is not None else {}
        keep |= selected(plan(group[0].matrix, platform, ids, shards=count, costs=costs), index)
    return keep


def minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 90 else f"{seconds:.0f} s"


def estimate(cells: Sequence[Cell], history: Path, run_id: str) -> str:
    """Each cell's ``estimate_s`` from history on this kind of machine (the median wall time of its last
    runs), and the line saying what the run should take ("" when history knows nothing)."""
    store = History(history)
    known: dict[tuple[str, str], dict[str, float]] = {}
    for cell in cells:
        key = (cell.matrix.backend, cell.platform)
        if key not in known:  # CPU cells compare by the CPU's ISA; GPU cells by the GPU model, known once they run
            numerics = "cpu-" + this_machine().numerics_key() if cell.platform == "cpu" else ""
            known[key] = store.costs(*key, exclude_run=run_id, numerics=numerics)
        cell.estimate_s = known[key].get(cell.cell_id)
    timed = [c.estimate_s for c in cells if c.estimate_s]
    if not timed:
        return ""
    line = (
        f"pinmatrix: history expects {minutes(sum(timed))} for "
        f"{len(timed)} of {len(cells)} cell(s) on this kind of machine"
    )
    return line + ("" if len(timed) == len(cells) else "; the others have no history here yet")


def wait_for_reference(
    ref_id: str, store: ResultStore, ctx: RunContext, *, limit_s: float, sleep: Callable[[float], None] = time.sleep
) -> None:
    """Under xdist, a model's reference cell may run on another worker: agreement needs its outputs, so wait
    for its result. No deadlock: every worker runs its cells in collection order, reference first."""
    limit = time.monotonic() + limit_s
    said = False
    while not any(r.cell_id == ref_id and r.final for r in store.load()):
        if time.monotonic() > limit:
            ctx.progress(f"gave up waiting for the reference cell {ref_id}: running without its outputs")
            return
        if not said:
            ctx.progress(f"waiting for the reference cell {ref_id} (another worker runs it)")
            said = True
        sleep(1.0)


@contextlib.contextmanager
def slot_lock(ctx: RunContext) -> Iterator[None]:
    """One cell per GPU at a time, across workers and runs on this machine: more workers than slots (-n 4 with
    two TP=2 slots) wait their turn instead of sharing a GPU."""
    if not ctx.slot.gpus:
        yield
        return
    locks = ctx.paths.data_dir / "locks"
    locks.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(locks / f"gpu-{'-'.join(map(str, ctx.slot.gpus))}.lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        ctx.progress(f"waiting for GPU slot {ctx.slot.label} (another cell holds it)")
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


def auto_workers(config: pytest.Config) -> int | None:
    """`-n auto` = one worker per GPU slot of the matrices named (the CPU is one slot: cells side by side on
    the CPU would measure each other)."""
    paths = [Path(a) for a in config.args if a.endswith(".toml") and Path(a).is_file()]
    if not paths:
        return None
    try:
        gpus = discover_gpus()
    except GpuDiscoveryError:
        return None  # collection says what is wrong
    platform = config.option.pm_platform or default_platform(gpus)
    counts = []
    for path in paths:
        try:
            plat = load_matrix(path).platforms.get(platform)
        except SpecError:
            return None  # collection says what is wrong with it
        local_gpus = plat is not None and platform != "cpu" and plat.gpustack is None
        counts.append(slot_count(gpus, plat.gpus_per_cell) if local_gpus and plat is not None else 1)
    return min(counts)
