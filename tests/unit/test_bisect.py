"""The bisect search: the first bad release in at most ceil(log2(n)) + 1 cells, wherever it is; a cell it cannot
judge stops the search instead of steering it."""

from __future__ import annotations

import pytest

from harness.bisection import Step, budget, judge, search
from harness.results import Check, FailureClass, Status
from harness.words import StepWord
from tests.support import cells
from tests.unit.test_verdict import _point

RELEASES = [f"1.0.{i}" for i in range(8)]


@pytest.mark.parametrize("first_bad", RELEASES[1:])
def test_the_first_bad_release_is_found_within_budget(first_bad: str) -> None:
    ran: list[str] = []

    def measure(version: str) -> Step:
        ran.append(version)
        return Step(
            version=version,
            word=StepWord.BAD if RELEASES.index(version) >= RELEASES.index(first_bad) else StepWord.GOOD,
            why="",
        )

    found, steps = search(RELEASES, measure)
    assert found == first_bad
    assert len(ran) + 1 <= budget(len(RELEASES)) == 4  # + the good pin's reference cell
    assert len(set(ran)) == len(ran) and RELEASES[0] not in ran


def test_verify_bad_stops_when_the_bad_end_is_not_bad() -> None:
    found, steps = search(RELEASES, lambda v: Step(version=v, word=StepWord.GOOD, why="same"), verify_bad=True)
    assert found is None and [s.version for s in steps] == ["1.0.7"]


def test_a_cell_that_cannot_be_judged_stops_the_search() -> None:
    found, steps = search(RELEASES, lambda v: Step(version=v, word=StepWord.CANNOT_JUDGE, why="install-failed: x"))
    assert found is None and len(steps) == 1


def test_judging_on_throughput_and_on_a_check_group() -> None:
    good = cells.cell("1.0.0", reference=True, throughput=[_point(30.0, 1)])
    same = cells.cell("1.0.4", throughput=[_point(30.0, 2)])
    # good only where the intervals show it: at ±15% these 16-request points are equivalent; at ±5% they are
    # inconclusive, and a search does not guess
    assert judge(same, good, "throughput", noise=0.15, drift=0.1, seed=0).word is StepWord.GOOD
    unsure = judge(same, good, "throughput", noise=0.05, drift=0.1, seed=0)
    assert unsure.word is StepWord.CANNOT_JUDGE and "inconclusive" in unsure.why
    slow = judge(cells.cell("1.0.5", throughput=[_point(15.0, 3)]), good, "throughput", noise=0.05, drift=0.1, seed=0)
    assert slow.word == "bad" and "slower" in slow.why
    few = judge(
        cells.cell("1.0.5", throughput=[_point(15.0, 3, requests=3)]), good, "throughput", noise=0.05, drift=0.1, seed=0
    )
    assert few.word == "cannot judge" and "too few samples" in few.why
    broken = cells.cell(
        "1.0.6",
        status=Status.FAILED,
        failure_class=FailureClass.CHECK_FAILED,
        checks=[Check(group="agreement", name="agreement.greedy", passed=False, detail="3 prompts disagree")],
    )
    assert judge(broken, good, "agreement", noise=0.05, drift=0.1, seed=0).why == "agreement.greedy: 3 prompts disagree"
    assert judge(broken, good, "conformance", noise=0.05, drift=0.1, seed=0).word == "cannot judge"  # none ran
    dead = cells.cell("1.0.6", status=Status.ERROR, failure_class=FailureClass.STARTUP_FAILED, reason="exit 1")
    assert judge(dead, good, "throughput", noise=0.05, drift=0.1, seed=0).why == "startup-failed: exit 1"
