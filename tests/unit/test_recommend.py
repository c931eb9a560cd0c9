from __future__ import annotations

import dataclasses
import functools

from harness.recommend import recommend
from harness.results import CellResult, Check, FailureClass, Status
from harness.words import VerdictWord
from tests.support import cells


def cell(
    version: str,
    tok_s: float | None = 100.0,
    *,
    status: Status = Status.PASSED,
    agreement: bool | None = True,
    failure: FailureClass | None = None,
    reason: str = "",
) -> CellResult:
    c = cells.cell(version, reference=version == "0.31.0", status=status, failure_class=failure, reason=reason)
    c.checks = [
        Check(group="conformance", name="chat.shape", passed=True),
        Check(group="agreement", name="agreement.greedy", passed=agreement),
    ]
    if tok_s is not None:
        c.throughput = [cells.text_point(1, tok_s * 0.25), cells.text_point(4, tok_s)]
    return c


def rec(cells, tie_break="newest", noise=0.05):
    return recommend(
        cells, required_checks=("conformance", "agreement"), noise=noise, tie_break=tie_break, reference="0.31.0"
    )


def test_fastest_eligible_pin_wins() -> None:
    r = rec([cell("0.31.0", 80.0), cell("0.32.0", 100.0)])
    assert r.version == "0.32.0"
    assert r.reasons[1] == "fastest eligible pin: peak 100.0 output tok/s"
    assert r.rejected == {"0.31.0": "eligible, not chosen: 80.0 output tok/s vs 100.0"}


def test_ties_inside_noise_go_to_policy() -> None:
    cells = [cell("0.31.0", 100.0), cell("0.32.0", 97.0), cell("0.30.0", 99.0)]
    assert rec(cells, "newest").version == "0.32.0"
    assert rec(cells, "closest-to-reference").version == "0.31.0"
    assert "a tie, broken by policy 'newest'" in rec(cells, "newest").reasons[1]


def test_closest_to_reference_prefers_newer_of_equal_distance() -> None:
    cells = [
        cell("0.30.0", 100.0),
        cell("0.31.0", None, status=Status.ERROR, failure=FailureClass.STARTUP_FAILED, reason="boom"),
        cell("0.32.0", 100.0),
    ]
    assert rec(cells, "closest-to-reference").version == "0.32.0"


def test_failed_pins_carry_reasons() -> None:
    cells = [
        cell("0.31.0", 50.0),
        cell(
            "0.26.0",
            None,
            status=Status.ERROR,
            failure=FailureClass.INSTALL_FAILED,
            reason="No matching distribution found for torch==2.11.0+cpu",
        ),
        cell("0.32.0", 200.0, agreement=False),
        cell("0.33.0", 300.0, agreement=None),
    ]
    r = rec(cells)
    assert r.version == "0.31.0"
    assert r.rejected["0.26.0"] == "install-failed: No matching distribution found for torch==2.11.0+cpu"
    assert r.rejected["0.32.0"] == "failed required checks: agreement.greedy"
    assert r.rejected["0.33.0"] == "required checks not evaluated: agreement.greedy"


def test_nothing_eligible() -> None:
    r = rec([cell("0.32.0", 10.0, agreement=False)])
    assert r.version is None
    assert r.reasons == ("no pin installed, started and passed every required check",)


def test_pins_without_throughput_are_chosen_by_policy() -> None:
    r = rec([cell("0.31.0", None), cell("0.32.0", None)])
    assert r.version == "0.32.0"
    assert r.reasons[1] == "no throughput measured; chosen among 2 eligible pin(s) by policy 'newest'"


def test_waived_failures_do_not_block() -> None:
    c = cell("0.32.0", 100.0, agreement=False)
    c.checks[1] = dataclasses.replace(c.checks[1], waived="known: llama.cpp answers chat-style logprobs")
    r = rec([c])
    assert r.version == "0.32.0"


def test_a_check_failure_reason_is_not_doubled() -> None:
    c = cell(
        "0.32.0",
        100.0,
        status=Status.FAILED,
        failure=FailureClass.CHECK_FAILED,
        reason="failed: chat.shape (no choices)",
    )
    assert rec([cell("0.31.0"), c]).rejected["0.32.0"] == "failed: chat.shape (no choices)"


def test_a_pin_slower_than_the_deployed_one_is_not_chosen_over_it_whatever_its_peak() -> None:
    from harness.verdict import compare
    from tests.unit.test_verdict import _point

    deployed = cell("0.31.0")
    deployed.throughput = [_point(30.0, 1, c=1, ttft_s=0.05), _point(30.0, 2, c=4)]
    newer = cell("0.32.0")  # more tokens per second at c=4, but a first token 60% later at c=1
    newer.throughput = [_point(30.0, 3, c=1, ttft_s=0.08), _point(40.0, 4, c=4)]
    found = compare(newer, deployed)
    r = recommend(
        [deployed, newer],
        required_checks=("conformance", "agreement"),
        noise=0.05,
        tie_break="newest",
        reference="0.31.0",
        verdicts=found,
    )
    assert r.version == "0.31.0"
    assert r.rejected["0.32.0"].startswith(
        "slower than the deployed pin 0.31.0: 0.32.0 vs 0.31.0 (deployed): TTFT p50 ×1.6"
    )
    # without verdicts (or with the deployed pin itself out of the running), the peak decides as before
    assert rec([deployed, newer]).version == "0.32.0"
    faster = cell("0.32.0")
    faster.throughput = [_point(30.0, 5, c=1, ttft_s=0.05), _point(40.0, 6, c=4)]
    chosen = recommend(
        [deployed, faster],
        required_checks=("conformance", "agreement"),
        noise=0.05,
        tie_break="newest",
        reference="0.31.0",
        verdicts=compare(faster, deployed),
    )
    assert chosen.version == "0.32.0"
    [sure] = [r for r in chosen.reasons if r.startswith("against the deployed pin 0.31.0: ")]
    assert sure.endswith("(6 metric x load point verdicts)") and "faster" in sure
    broken = cell("0.31.0", agreement=False)
    broken.throughput = deployed.throughput
    assert (
        recommend(
            [broken, newer],
            required_checks=("conformance", "agreement"),
            noise=0.05,
            tie_break="newest",
            reference="0.31.0",
            verdicts=found,
        ).version
        == "0.32.0"
    )


def test_pins_the_paired_rounds_call_equivalent_to_the_deployed_one_tie_whatever_their_peaks() -> None:
    """A CI run: three identical servers, paired rounds "equivalent" on every output tok/s verdict, yet the peaks
    of cells measured one after another (706, 682 and 657 tok/s, tight repeats) ranked the newest pin out of the
    tie. Peaks from different minutes are the sequential evidence paired rounds replace."""

    def peaked(version: str, *rates: float) -> CellResult:
        c = cell(version)
        c.throughput = [cells.text_point(1, *(r / 4 for r in rates)), cells.text_point(4, *rates)]
        return c

    runs = [peaked("0.31.0", 700, 706, 712), peaked("0.32.0", 675, 682, 690), peaked("0.33.0", 650, 657, 664)]
    same = [
        cells.verdict(VerdictWord.EQUIVALENT, 1.0, 0.97, 1.03, version=v, point=p, deployed=True)
        for v in ("0.32.0", "0.33.0")
        for p in ("c=1", "c=4")
    ]
    assert rec(runs).version == "0.32.0"  # the peaks alone: 0.33.0's interval is below 0.31.0's
    by = functools.partial(
        recommend,
        runs,
        required_checks=("conformance", "agreement"),
        noise=0.05,
        tie_break="newest",
        reference="0.31.0",
    )
    chosen = by(verdicts=same)
    assert chosen.version == "0.33.0", chosen.reasons
    assert "each equivalent to the deployed pin 0.31.0 in paired rounds" in chosen.reasons[-1], chosen.reasons
    # one inconclusive verdict: 0.33.0 is not called equal to the deployed pin, and the peaks rank it out again
    assert (
        by(
            verdicts=[*same[:-1], cells.verdict(VerdictWord.INCONCLUSIVE, version="0.33.0", point="c=4", deployed=True)]
        ).version
        == "0.32.0"
    )
