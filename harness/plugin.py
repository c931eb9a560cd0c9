"""The pytest plugin: a matrix file given on the command line becomes one test item per cell.

    pytest matrices/vllm.toml -k 0.32.0 --junitxml=out.xml

Cells of a model run reference pin first (agreement compares against its samples). Each cell's result
is appended to ``<run_dir>/results.jsonl`` as soon as it ends; at the end of the session the reports are
written and the recommendation printed. Files are only collected when named explicitly, so the plugin
is inert in an ordinary test run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import os
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from _pytest._code.code import TerminalRepr
from filelock import FileLock, Timeout

from . import releases
from .cell import CellInterrupted, RunContext, cell_id, install_request, run_cell, this_machine
from .errors import HarnessError, SpecError
from .history import History
from .install import (
    InstallPaths,
    default_data_dir,
    install_pin,
    installer_kind,
    pipx_command,
    pipx_shared_ready,
    remove_pin,
)
from .launch import reap_leftovers
from .models import prepare as prepare_model
from .report import first_screen, run_info, write_reports
from .results import CellResult, ResultStore, Status
from .safe import terminal
from .shards import parse_shard, plan, selected
from .slots import GpuDiscoveryError, default_platform, discover_gpus, slot_count, slot_for_worker
from .spec import Matrix, ModelSpec, PinSpec, VariantSpec, load_matrix
from .versions import executable_name

_RUN_DIR = pytest.StashKey[Path]()
_MATRICES = pytest.StashKey[dict[str, Matrix]]()
_EXPECTED = pytest.StashKey[dict[str, list[str]]]()
_REAPED = pytest.StashKey[bool]()
_ALL_CELLS = pytest.StashKey[dict[str, list[str]]]()  # backend -> every cell id collected, before --shard
_PREPARED = pytest.StashKey[dict[str, str]]()  # executable -> how it was installed ahead of the cells
PARALLEL_INSTALLS = 2  # pins installed side by side ahead of the cells (downloads and unpacking overlap)


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    """--shard i/n: keep this shard's cells (every cell stays in run.json's expected list, so a merge of the
    shards says which shard did not report)."""
    cells = [i for i in items if isinstance(i, CellItem)]
    config.stash[_ALL_CELLS] = {}
    for c in cells:
        config.stash[_ALL_CELLS].setdefault(c.matrix.backend, []).append(c.cell_id)
    if not config.option.pm_shard or not cells:
        return
    try:
        index, count = parse_shard(config.option.pm_shard)
    except HarnessError as exc:
        raise pytest.UsageError(str(exc)) from exc
    history = _history_dir(config)
    keep: set[str] = set()
    for (backend, platform), group in _groups(cells).items():
        ids = {(c.pin.pin.text, c.model.name, c.variant.name): c.cell_id for c in group}
        costs = (
            History(history).costs(backend, platform, exclude_run=str(config.option.pm_run_id))
            if history is not None
            else {}
        )
        keep |= selected(plan(group[0].matrix, platform, ids, shards=count, costs=costs), index)
    dropped = [i for i in items if isinstance(i, CellItem) and i.cell_id not in keep]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = [i for i in items if not (isinstance(i, CellItem) and i.cell_id not in keep)]


def _groups(cells: list[CellItem]) -> dict[tuple[str, str], list[CellItem]]:
    out: dict[tuple[str, str], list[CellItem]] = {}
    for c in cells:
        out.setdefault((c.matrix.backend, c.platform), []).append(c)
    return out


def pytest_collection_finish(session: pytest.Session) -> None:
    """Which cells this run is to run (after -k and --shard): a report written before all of them ran says so."""
    expected: dict[str, list[str]] = {}
    for item in session.items:
        if isinstance(item, CellItem) and not item.skip_reason:  # a cell this machine cannot run is not missing from it
            expected.setdefault(item.matrix.backend, []).append(item.cell_id)
    session.config.stash[_EXPECTED] = expected
    _estimates(session)
    every = session.config.stash.get(_ALL_CELLS, {})
    for backend, cell_ids in expected.items():  # the run dir describes itself: reports rebuild without the matrix
        matrix = session.config.stash[_MATRICES][backend]
        listed = every.get(backend, cell_ids) if session.config.option.pm_shard else cell_ids
        run_info(matrix, str(session.config.option.pm_run_id), listed).write(run_dir(session.config, backend))


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 90 else f"{seconds:.0f} s"


def _estimates(session: pytest.Session) -> None:
    """What each cell should take, from history on this kind of machine (the median wall time of its last
    runs), and the run's total where history knows enough: said before the first cell starts."""
    history = _history_dir(session.config)
    if history is None:
        return
    items = [i for i in session.items if isinstance(i, CellItem) and not i.skip_reason]
    store = History(history)
    known: dict[tuple[str, str], dict[str, float]] = {}
    for item in items:
        key = (item.matrix.backend, item.platform)
        if key not in known:  # CPU cells compare by the CPU's ISA; GPU cells by the GPU model, known once they run
            numerics = "cpu-" + this_machine().numerics_key() if item.platform == "cpu" else ""
            known[key] = store.costs(*key, exclude_run=str(session.config.option.pm_run_id), numerics=numerics)
        item.estimate_s = known[key].get(item.cell_id)
    timed = [i.estimate_s for i in items if i.estimate_s]
    tr = session.config.pluginmanager.get_plugin("terminalreporter")
    if timed and tr is not None and getattr(session.config, "workerinput", None) is None:
        line = (
            f"pinmatrix: history expects {_minutes(sum(timed))} for "
            f"{len(timed)} of {len(items)} cell(s) on this kind of machine"
        )
        tr.write_line(line + ("" if len(timed) == len(items) else "; the others have no history here yet"))


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("pinmatrix", "pinned backend version matrix")
    g.addoption(
        "--data-dir",
        dest="pm_data_dir",
        default=None,
        help="pipx home, models, logs (default: $PINMATRIX_DATA_DIR or ~/.cache/pinmatrix)",
    )
    g.addoption(
        "--bin-dir",
        dest="pm_bin_dir",
        default=None,
        help="GPUStack bin dir for <backend>_<version> (default: <data-dir>/bin)",
    )
    g.addoption(
        "--pipx-path", dest="pm_pipx_path", default=None, help="pipx executable (default: pipx on PATH, else bundled)"
    )
    g.addoption(
        "--platform",
        dest="pm_platform",
        default=None,
        choices=("cpu", "cuda"),
        help="platform to run (default: cuda when an NVIDIA GPU is found, else cpu)",
    )
    g.addoption("--reports-dir", dest="pm_reports_dir", default="reports", help="where reports/<backend>/<run-id>/ go")
    g.addoption("--run-id", dest="pm_run_id", default=None, help="run id (default: UTC timestamp)")
    g.addoption(
        "--tools-download-base-url",
        dest="pm_download_base",
        default="https://github.com",
        help="mirror for prebuilt backends (GPUStack's option; default https://github.com)",
    )
    g.addoption(
        "--allow-http-mirror", dest="pm_allow_http", action="store_true", help="allow a plain-http download mirror"
    )
    g.addoption(
        "--history",
        dest="pm_history",
        default=None,
        help=(
            "history dir: each cell is compared with its own earlier "
            "runs there, then added (default: <data-dir>/history)"
        ),
    )
    g.addoption(
        "--no-history", dest="pm_no_history", action="store_true", help="neither compare with nor add to history"
    )
    g.addoption(
        "--shard",
        dest="pm_shard",
        default=None,
        help="run shard i of n (i/n): deterministic, balanced by history's cell times; merge with `harness report`",
    )
    g.addoption(
        "--remove-venvs",
        dest="pm_remove_venvs",
        action="store_true",
        help="delete each pin's pipx/uv venv after its last cell (vox-box venvs are 7 GiB; cells run pin by pin)",
    )


def _new_run_id() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "pinmatrix: a matrix cell (pin x model x platform)")
    config.stash[_MATRICES] = {}
    worker = getattr(config, "workerinput", None)
    run_id = worker["pm_run_id"] if worker else (config.option.pm_run_id or _new_run_id())
    config.option.pm_run_id = run_id
    _stop_on_sigterm()
    if config.pluginmanager.hasplugin("xdist"):
        config.pluginmanager.register(_XdistHooks(), "pinmatrix-xdist")


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _stop_on_sigterm() -> None:
    """SIGTERM (a CI timeout, `kill`) takes the Ctrl-C path, so running servers are stopped, not orphaned."""
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _raise_interrupt)


class _XdistHooks:
    @pytest.hookimpl
    def pytest_configure_node(self, node: Any) -> None:
        node.workerinput["pm_run_id"] = node.config.option.pm_run_id


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    if file_path.suffix == ".toml" and parent.session.isinitpath(file_path):
        return MatrixFile.from_parent(parent, path=file_path)
    return None


class MatrixFile(pytest.File):
    def collect(self) -> Iterator[pytest.Item]:
        matrix = load_matrix(self.path)
        self.config.stash[_MATRICES][matrix.backend] = matrix
        opt = self.config.option
        try:
            gpus = discover_gpus()
        except GpuDiscoveryError as exc:
            raise SpecError(str(self.path), [f"GPUs: {exc} (PINMATRIX_GPUS=0,1 chooses them by hand)"]) from exc
        platform = opt.pm_platform or default_platform(gpus)
        if platform not in matrix.platforms:
            raise SpecError(
                str(self.path),
                [f"platforms: no '{platform}' platform in this matrix (has: {', '.join(matrix.platforms)})"],
            )
        if not self.config.stash.get(_REAPED, False):  # servers a killed run left behind hold ports, memory, GPUs
            self.config.stash[_REAPED] = True
            data_dir = Path(opt.pm_data_dir).expanduser() if opt.pm_data_dir else default_data_dir()
            for pgid in reap_leftovers(data_dir / "servers"):
                self.config.get_terminal_writer().line(
                    f"pinmatrix: stopped server group {pgid}, left running by a killed run"
                )
        # What a run would only find out after installing every pin: checked now, one line each.
        problems = [
            f"{where}: plain http needs --allow-http-mirror, got {url!r}"
            for where, url in matrix.plain_http_urls()
            if not opt.pm_allow_http
        ]
        reports = Path(opt.pm_reports_dir).resolve()
        if (why := _unwritable(run_dir(self.config, matrix.backend))) is not None:
            problems.append(f"--reports-dir {reports}: cannot write reports there ({why})")
        if problems:
            raise SpecError(str(self.path), problems)
        matrix = resolve_version_sets(matrix, platform, self.config)
        self.config.stash[_MATRICES][matrix.backend] = matrix
        plat = matrix.platforms[platform]
        pins = sorted(plat.versions, key=lambda p: p.pin.text != plat.reference.text)  # reference first
        # Model by model; pin by pin when venvs are removed after their cells, so each is installed once.
        # Launch variants: baselines (a variant's reference pin) before the cells compared with them.
        variants = sorted(plat.variants, key=lambda v: v.baseline != v.name)
        if opt.pm_remove_venvs:
            order = [(m, p, v) for p in pins for m in plat.models for v in variants]
        else:
            order = [(m, p, v) for m in plat.models for v in variants for p in pins]
            # a variant compared with another variant's reference pin: after that pin's cell
            order.sort(
                key=lambda c: (
                    plat.models.index(c[0]),
                    c[1].pin.text != plat.reference.text or c[2].baseline != c[2].name,
                )
            )
        too_few = platform != "cpu" and plat.gpus_per_cell > len(gpus)
        for model, pin, variant in order:
            # "cell[...]": pytest treats the bracket as a parameter id and leaves its dots alone.
            name = f"cell[{cell_id(matrix.backend, pin.pin.text, model.name, platform, variant.name)}]"
            item = CellItem.from_parent(
                self, name=name, matrix=matrix, platform=platform, pin=pin, model=model, gpus=gpus, variant=variant
            )
            if too_few:
                item.skip_reason = f"needs {plat.gpus_per_cell} GPU(s) per cell; this machine has {len(gpus)}"
            elif why := variant.unsuited(this_machine().cpu_flags):
                item.skip_reason = why
            yield item

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str | TerminalRepr:
        if isinstance(excinfo.value, SpecError):
            return str(excinfo.value)
        return super().repr_failure(excinfo)


def _unwritable(directory: Path) -> str | None:
    """Why reports cannot be written under ``directory`` (None: they can), without creating anything."""
    existing = directory
    while not existing.exists() and existing != existing.parent:
        if existing.is_symlink():
            return f"{existing} is a broken link"
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} is not a directory"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{existing} is not writable"
    return None


def resolve_version_sets(matrix: Matrix, platform: str, config: pytest.Config) -> Matrix:
    """Turn ranges and "installed" entries into concrete pins (see ``releases.resolve``)."""
    opt = config.option
    data_dir = Path(opt.pm_data_dir).expanduser() if opt.pm_data_dir else default_data_dir()
    bin_dir = Path(opt.pm_bin_dir).expanduser() if opt.pm_bin_dir else data_dir / "bin"
    paths = InstallPaths(data_dir=data_dir, bin_dir=bin_dir, pipx=("pipx",))
    return releases.resolve(matrix, platform, paths=paths, download_base_url=opt.pm_download_base)


def _summary(result: CellResult) -> str:
    return result.status.value.upper() + (
        f" [{result.failure_class.value}] {result.reason}" if result.failure_class else ""
    )


class CellFailed(Exception):
    """A cell's outcome was not 'passed' (carried to pytest's report)."""


class CellItem(pytest.Item):
    def __init__(
        self,
        *,
        matrix: Matrix,
        platform: str,
        pin: PinSpec,
        model: ModelSpec,
        gpus: list[int],
        variant: VariantSpec | None = None,
        **kw: Any,
    ) -> None:
        super().__init__(**kw)
        self.matrix, self.platform, self.pin, self.model, self.gpus = matrix, platform, pin, model, gpus
        self.variant = variant or matrix.platforms[platform].variants[0]
        self.reference = matrix.platforms[platform].reference
        self.skip_reason = ""  # why this machine cannot run the cell at all (too few GPUs)
        self.estimate_s: float | None = None  # from history on this kind of machine
        self.add_marker(pytest.mark.pinmatrix)
        self.result: CellResult | None = None
        self.cell_id = cell_id(matrix.get_backend().name, pin.pin.text, model.name, platform, self.variant.name)

    def _ctx(self) -> RunContext:
        opt = self.config.option
        data_dir = Path(opt.pm_data_dir).expanduser() if opt.pm_data_dir else default_data_dir()
        bin_dir = Path(opt.pm_bin_dir).expanduser() if opt.pm_bin_dir else data_dir / "bin"
        worker = getattr(self.config, "workerinput", None)
        index = int(worker["workerid"].removeprefix("gw")) if worker else 0
        per_cell = self.matrix.platforms[self.platform].gpus_per_cell
        tw = self.config.get_terminal_writer()
        prefix = f"[{self.name.removeprefix('cell[')}"

        capman = self.config.pluginmanager.getplugin("capturemanager")

        def progress(message: str) -> None:
            # Progress must reach the user live, even while pytest captures the cell's output.
            line = f"{prefix} {terminal(message)}"  # server text in a message: escapes shown, never obeyed
            if capman is None:
                tw.line(line)
                return
            with capman.global_and_fixture_disabled():
                tw.line(line)
                tw.flush()

        return RunContext(
            matrix=self.matrix,
            platform=self.platform,
            paths=InstallPaths(
                data_dir=data_dir.resolve(), bin_dir=bin_dir.resolve(), pipx=pipx_command(opt.pm_pipx_path)
            ),
            run_dir=run_dir(self.config, self.matrix.backend),
            slot=slot_for_worker(self.platform, self.gpus, per_cell, index),
            progress=progress,
            download_base_url=opt.pm_download_base,
            allow_http_mirror=opt.pm_allow_http,
        )

    def runtest(self) -> None:
        if self.skip_reason:
            pytest.skip(self.skip_reason)
        ctx = self._ctx()
        ctx.progress("")  # start on a fresh line after pytest's item name
        store = ResultStore(ctx.run_dir / "results.jsonl")
        if _PREPARED not in self.config.stash:
            self.config.stash[_PREPARED] = _prepare_ahead(self, store)
        prepared: dict[str, str] = self.config.stash[_PREPARED]
        ctx = dataclasses.replace(ctx, prepared=prepared)
        earlier = next((r for r in store.load() if r.cell_id == self.cell_id and r.final), None)
        if earlier is not None:  # the same run id again: resume, never run (or record) a finished cell twice
            ctx.progress(f"already recorded in this run: {earlier.status.value.upper()}")
            self.result = earlier
            self._outcome(earlier)
            return
        if self.estimate_s:
            ctx.progress(f"expected to take ~{_minutes(self.estimate_s)} (its last runs on this kind of machine)")
        self._wait_for_reference(store, ctx)
        try:
            with _slot_lock(ctx):
                self.result = result = run_cell(ctx, self.pin, self.model, self.variant)
        except CellInterrupted as exc:  # recorded as interrupted, so the report can say what did not run
            store.append(exc.result)
            raise
        store.append(result)
        if self.config.option.pm_remove_venvs and result.executable and self._last_cell_of_pin(store):
            freed = remove_pin(Path(result.executable), ctx.paths)
            if freed:
                ctx.progress(
                    f"removed {Path(result.executable).name}'s venv ({freed / 2**30:.2f} GiB freed; --remove-venvs)"
                )
        ctx.progress("done: " + _summary(result))
        self._outcome(result)

    def _outcome(self, result: CellResult) -> None:
        """The pytest outcome of a cell's result (an expected failure is an xfail)."""
        summary = _summary(result)
        expect = self.pin.expect
        if expect is not None:
            if result.failure_class is not None and result.failure_class.value == expect:
                pytest.xfail(f"expected {expect}: {result.reason}")
            raise CellFailed(f"expected {expect} ({self.pin.why or 'see matrix'}), got {summary}")
        if result.status is not Status.PASSED:
            raise CellFailed(summary + (f"\nlog: {result.log_path}" if result.log_path else ""))

    def _last_cell_of_pin(self, store: ResultStore) -> bool:
        """Every cell of this pin in the run has a final result: no worker will use its venv again. Decided
        on the shared results file, not this worker's queue (xdist workers each see only their own)."""
        mine = {
            i.cell_id
            for i in self.session.items
            if isinstance(i, CellItem) and i.matrix.backend == self.matrix.backend and i.pin.pin == self.pin.pin
        }
        done = {r.cell_id for r in store.load() if r.final}
        return mine <= done

    def _wait_for_reference(self, store: ResultStore, ctx: RunContext) -> None:
        """Under xdist, a model's reference cell may run on another worker: agreement needs its outputs, so
        wait for its result. No deadlock: every worker runs its cells in collection order, reference first."""
        if getattr(self.config, "workerinput", None) is None:
            return  # one process: collection order already puts the reference first
        ref = next(
            (
                i
                for i in self.session.items
                if isinstance(i, CellItem)
                and i.matrix.backend == self.matrix.backend
                and i.model.name == self.model.name
                and i.platform == self.platform
                and i.pin.pin == i.reference
                and i.variant.name == self.variant.baseline
            ),
            None,
        )
        if ref is None or ref is self:
            return
        limit = time.monotonic() + 2 * self.matrix.thresholds.startup_deadline_s + 3600
        said = False
        while not any(r.cell_id == ref.cell_id and r.final for r in store.load()):
            if time.monotonic() > limit:
                ctx.progress(f"gave up waiting for the reference cell {ref.cell_id}: running without its outputs")
                return
            if not said:
                ctx.progress(f"waiting for the reference cell {ref.cell_id} (another worker runs it)")
                said = True
            time.sleep(1.0)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str | TerminalRepr:
        if isinstance(excinfo.value, CellFailed):
            return "\n".join(terminal(line) for line in str(excinfo.value).splitlines())
        return super().repr_failure(excinfo)

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return self.path, None, self.name


def _prepare_ahead(first: CellItem, store: ResultStore) -> dict[str, str]:
    """A fresh run's pins installed ``PARALLEL_INSTALLS`` side by side (pipx's shared libraries set up
    first) while its models are fetched and converted alongside, all before the first cell is measured
    (nothing measured runs beside them): downloads, unpacking and conversion overlap instead of adding
    up. A failure here is left for its cell to meet and record."""
    if first.config.option.pm_remove_venvs:
        return {}  # pin by pin on purpose: disk is short
    done = {r.cell_id for r in store.load() if r.final}
    items = [i for i in first.session.items if isinstance(i, CellItem) and not i.skip_reason and i.cell_id not in done]
    pins: dict[tuple[str, str, str], CellItem] = {}
    models: dict[tuple[str, str, str], CellItem] = {}
    for i in items:
        ctx = first._ctx()
        if (
            i.pin.expect != "install-failed"
            and not (ctx.paths.bin_dir / executable_name(i.matrix.backend, i.pin.pin)).exists()
        ):
            pins.setdefault((i.matrix.backend, i.platform, i.pin.pin.text), i)
        models.setdefault((i.matrix.backend, i.platform, i.model.source), i)
    if not pins:
        return {}
    say = first._ctx().progress
    say(
        f"preparing ahead of the cells: installing {', '.join(v for _, _, v in pins)} while {len(models)} model(s) are "
        "fetched and converted alongside"
    )

    def prepare_models() -> None:
        for item in models.values():
            ctx = item._ctx()
            fmt = item.matrix.get_backend().flavour(item.platform).model_format
            with contextlib.suppress(HarnessError):  # its cells say what is wrong
                prepare_model(item.model.source, fmt, ctx.paths.data_dir, sha256=item.model.sha256)

    worker = threading.Thread(target=prepare_models, name="pinmatrix-models", daemon=True)
    worker.start()
    out: dict[str, str] = {}
    lock = threading.Lock()  # progress lines from several threads: one at a time

    def install(item: CellItem) -> None:
        ctx = item._ctx()

        def progress(message: str, version: str = item.pin.pin.text) -> None:
            with lock:
                say(f"[{version}] {message}")

        try:
            rec = install_pin(install_request(ctx, item.pin), ctx.paths, progress=progress)
        except HarnessError:
            return  # its cell installs again and records why it failed
        if rec.installed_now:
            out[rec.executable] = (
                f"installed ahead of the cells in {rec.seconds:.0f} s (other pins and the models alongside)"
            )
            progress(f"installed {Path(rec.executable).name} in {rec.seconds:.0f} s")

    queue = list(pins.values())
    first = queue[0]
    kind = installer_kind(first.matrix.get_backend(), first.matrix.platforms[first.platform].installer)
    if kind == "pipx" and len(queue) > 1 and not pipx_shared_ready(first._ctx().paths):
        install(queue.pop(0))  # alone: pipx sets up its shared libraries on first use, not safely twice at once
    with ThreadPoolExecutor(max_workers=PARALLEL_INSTALLS) as pool:
        list(pool.map(install, queue))
    worker.join()
    return out


def _history_dir(config: pytest.Config) -> Path | None:
    opt = config.option
    if opt.pm_no_history:
        return None
    if opt.pm_history:
        return Path(opt.pm_history).expanduser().resolve()
    data_dir = Path(opt.pm_data_dir).expanduser() if opt.pm_data_dir else default_data_dir()
    return data_dir.resolve() / "history"


@contextlib.contextmanager
def _slot_lock(ctx: RunContext) -> Iterator[None]:
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


@pytest.hookimpl(tryfirst=True, optionalhook=True)
def pytest_xdist_auto_num_workers(config: pytest.Config) -> int | None:
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
        counts.append(slot_count(gpus, plat.gpus_per_cell) if plat is not None and platform != "cpu" else 1)
    return min(counts)


def run_dir(config: pytest.Config, backend: str) -> Path:
    return Path(config.option.pm_reports_dir).resolve() / backend / str(config.option.pm_run_id)


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    if getattr(config, "workerinput", None) is not None:
        return
    for backend, matrix in config.stash.get(_MATRICES, {}).items():
        directory = run_dir(config, backend)
        store = ResultStore(directory / "results.jsonl")
        cells = store.load()
        if not cells:
            continue
        tr = terminalreporter
        for note in store.notes:  # e.g. lines of an older results schema, converted
            tr.write_line(f"pinmatrix: {note}", yellow=True)
        expected = config.stash.get(_EXPECTED, {}).get(backend, [])
        try:
            paths, recs = write_reports(
                matrix, directory, config.option.pm_run_id, cells, expected=expected, history=_history_dir(config)
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
        for verdict in paths.verdicts:
            tr.write_line(terminal(f"verdict: {verdict.line}"), red=verdict.word == "slower")
        for trend in paths.trends:
            if trend.compared:
                tr.write_line(terminal(f"history: {trend.line}"), red=trend.word in ("suspicious", "regression"))
        for label, path in (
            ("markdown", paths.markdown),
            ("html", paths.html),
            ("results", paths.results_json),
            ("pins", paths.pins_json),
        ):
            tr.write_line(f"{label:>9}: {os.path.relpath(path)}")
