"""Paired rounds wait, before one side's wave, for the other side's server to go quiet (a server that spins
after its last request would otherwise slow only whichever side goes second)."""

from __future__ import annotations

import asyncio
import itertools
import time

import pytest

from harness.cell import paired
from harness.cell.probing import Together


def _cpu(busy_windows: int | None) -> Together:
    """A partner whose CPU time grows by a whole window's worth for ``busy_windows`` reads (None: forever)."""
    reads = itertools.count()

    def cpu_s(side: str) -> float:
        n = next(reads)
        busy = n if busy_windows is None else min(n, busy_windows)
        return busy * paired.QUIET_WINDOW_S  # one core's worth per window while busy, then flat

    return Together(url="http://127.0.0.1:1", cpu_s=cpu_s)


def test_a_side_waits_while_the_other_is_busy_then_goes() -> None:
    quiet = paired.Quiet(_cpu(busy_windows=3))
    asyncio.run(quiet.settle("theirs"))
    (waited,) = quiet.waits
    assert 3 * paired.QUIET_WINDOW_S <= waited < 3 * paired.QUIET_WINDOW_S + 0.5
    assert "waited before 1 of 1 waves" in quiet.summary() and "never went quiet" not in quiet.summary()


def test_an_idle_server_costs_one_window_then_nothing() -> None:
    quiet = paired.Quiet(_cpu(busy_windows=0))
    asyncio.run(quiet.settle("ours"))  # first look: one window to see it idle
    time.sleep(paired.QUIET_WINDOW_S)  # the other side's wave: this side stays idle meanwhile
    asyncio.run(quiet.settle("ours"))  # quiet since it was last looked at: no wait
    first, again = quiet.waits
    assert paired.QUIET_WINDOW_S <= first < paired.QUIET_WINDOW_S + 0.3 and again < 0.01


def test_a_server_that_never_goes_quiet_is_waited_for_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(paired, "QUIET_CAP_S", 0.5)
    quiet = paired.Quiet(_cpu(busy_windows=None))
    asyncio.run(quiet.settle("theirs"))
    asyncio.run(quiet.settle("theirs"))  # not again: the cap is paid once per cell
    assert len(quiet.waits) == 1 and 0.5 <= quiet.waits[0] < 1.0
    assert "the partner's server never went quiet within 0.5 s" in quiet.summary()


def test_without_proc_nothing_waits() -> None:
    quiet = paired.Quiet(Together(url="http://127.0.0.1:1"))
    asyncio.run(quiet.settle("theirs"))
    assert quiet.waits == [] and quiet.summary() == ""
