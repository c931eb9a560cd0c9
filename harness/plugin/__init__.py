"""The pytest plugin: a matrix file given on the command line becomes one test item per cell.

    pytest matrices/vllm.toml -k 0.32.0 --junitxml=out.xml

Cells of a model run reference pin first (agreement compares against its samples). Each cell's result
is appended to ``<run_dir>/results.jsonl`` as soon as it ends; at the end of the session the reports are
written and the recommendation printed. Files are only collected when named explicitly, so the plugin
is inert in an ordinary test run. The hooks here are thin:

    options.py   the options, the paths they name, the run's stash keys
    items.py     MatrixFile (collector) and CellItem (one cell: resume, run, record, outcome)
    schedule.py  shards, history's estimates, waiting for the reference cell, GPU slot locks, -n auto
    ahead.py     pins installed and models prepared before the first cell
    summary.py   the reports and the terminal summary
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Any

import pytest

from ..errors import HarnessError
from ..report import run_info
from ..shards import parse_shard
from .items import CellItem, MatrixFile
from .options import ALL_CELLS, EXPECTED, MATRICES, add_options, history_dir, new_run_id, run_dir
from .schedule import auto_workers, estimate, shard_cells
from .summary import write_summary


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "pinmatrix: a matrix cell (pin x model x platform)")
    config.stash[MATRICES] = {}
    worker = getattr(config, "workerinput", None)
    config.option.pm_run_id = worker["pm_run_id"] if worker else (config.option.pm_run_id or new_run_id())
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


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    """--shard i/n: keep this shard's cells (every cell stays in run.json's expected list, so a merge of the
    shards says which shard did not report)."""
    cells = [i for i in items if isinstance(i, CellItem)]
    config.stash[ALL_CELLS] = {}
    for c in cells:
        config.stash[ALL_CELLS].setdefault(c.matrix.backend, []).append(c.cell_id)
    if not config.option.pm_shard or not cells:
        return
    try:
        index, count = parse_shard(config.option.pm_shard)
    except HarnessError as exc:
        raise pytest.UsageError(str(exc)) from exc
    keep = shard_cells(cells, index, count, history_dir(config), str(config.option.pm_run_id))
    dropped = [i for i in cells if i.cell_id not in keep]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = [i for i in items if not (isinstance(i, CellItem) and i.cell_id not in keep)]


def pytest_collection_finish(session: pytest.Session) -> None:
    """Which cells this run is to run (after -k and --shard): a report written before all of them ran says so."""
    config = session.config
    cells = [i for i in session.items if isinstance(i, CellItem) and not i.skip_reason]  # unrunnable: not missing
    expected: dict[str, list[str]] = {}
    for item in cells:
        expected.setdefault(item.matrix.backend, []).append(item.cell_id)
    config.stash[EXPECTED] = expected
    history = history_dir(config)
    line = estimate(cells, history, str(config.option.pm_run_id)) if history is not None else ""
    tr = config.pluginmanager.get_plugin("terminalreporter")
    if line and tr is not None and getattr(config, "workerinput", None) is None:
        tr.write_line(line)
    every = config.stash.get(ALL_CELLS, {})
    for backend, cell_ids in expected.items():  # the run dir describes itself: reports rebuild without the matrix
        listed = every.get(backend, cell_ids) if config.option.pm_shard else cell_ids
        run_info(config.stash[MATRICES][backend], str(config.option.pm_run_id), listed).write(run_dir(config, backend))


@pytest.hookimpl(tryfirst=True, optionalhook=True)
def pytest_xdist_auto_num_workers(config: pytest.Config) -> int | None:
    return auto_workers(config)


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    if getattr(config, "workerinput", None) is None:
        write_summary(terminalreporter, config)
