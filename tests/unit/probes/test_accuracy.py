from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from harness.probes.accuracy import BUILTIN_TASKS, builtin_items, gate, load_jsonl, normalise, run, wilson
from harness.results import TaskScore, TextAccuracy


def test_wilson_matches_hand_computed_values() -> None:
    # p = 0.5, n = 100: centre 0.5, half-width 1.96*sqrt(.25/100 + 1.96^2/40000)/(1 + 1.96^2/100)
    lo, hi = wilson(50, 100)
    assert lo == pytest.approx(0.4038, abs=1e-4) and hi == pytest.approx(0.5962, abs=1e-4)
    assert wilson(0, 10)[0] == 0.0 and wilson(10, 10)[1] == pytest.approx(1.0)
    assert wilson(10, 10)[0] == pytest.approx(0.7225, abs=1e-4)


@pytest.mark.parametrize("task", BUILTIN_TASKS)
def test_builtin_tasks_are_seeded_and_few_shot(task: str) -> None:
    a, b = builtin_items(task, 5, seed=1), builtin_items(task, 5, seed=1)
    assert a == b and builtin_items(task, 5, seed=2) != a
    assert a[0].prompt.count("Question: ") == 3 and a[0].prompt.endswith("\nAnswer:")


def test_answers_are_right() -> None:
    for item in builtin_items("arithmetic", 20, seed=3):
        q = item.prompt.rsplit("Question: What is ", 1)[1].split("?")[0]
        x, y = (int(v) for v in q.split(" + "))
        assert item.answer == str(x + y)


def test_normalise() -> None:
    assert normalise(" 15.\nQuestion: x") == "15"
    assert normalise(" Zebra") == "zebra"


def test_run_scores_with_mock_server() -> None:
    items = builtin_items("copy", 10, seed=1)
    answers = {i.prompt: i.answer for i in items}
    wrong = set(list(answers)[:3])
    n_wrong = sum(1 for i in items if i.prompt in wrong)  # a word may repeat, and so may its prompt
    assert n_wrong >= 3

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        assert body["stop"] == ["\n"] and body["temperature"] == 0
        text = " nope" if body["prompt"] in wrong else " " + answers[body["prompt"]]
        return httpx.Response(200, json={"choices": [{"text": text}]})

    result = run("http://t", "m", items, transport=httpx.MockTransport(handler))
    assert result.overall.correct == 10 - n_wrong and result.overall.n == 10
    assert result.tasks["copy"].accuracy == (10 - n_wrong) / 10
    assert len(result.misses) == n_wrong and result.misses[0].actual == " nope"


def _result(correct: int, n: int, digest: str = "d") -> TextAccuracy:
    lo, hi = wilson(correct, n)
    return TextAccuracy(
        digest=digest, overall=TaskScore(correct=correct, n=n, accuracy=correct / n, wilson_low=lo, wilson_high=hi)
    )


def test_gate_rule() -> None:
    ref = _result(88, 160)
    same = gate(_result(88, 160), ref, "0.31.0", 0.2, is_reference=False)
    assert same.passed is True
    dropped = gate(_result(60, 160), ref, "0.31.0", 0.2, is_reference=False)
    assert dropped.passed is False
    assert dropped.detail.startswith(
        "37.5% (60/160, Wilson 95% [30.4%, 45.2%]) vs reference 0.31.0 55.0%: lower bound 30.4% < 44.0%"
    )
    assert gate(_result(1, 2), _result(1, 2, "other"), "x", 0.2, is_reference=False).passed is None
    assert gate(_result(1, 2), None, "x", 0.2, is_reference=True).passed is True


def test_jsonl_items_and_errors(tmp_path: Path) -> None:
    f = tmp_path / "capitals.jsonl"
    f.write_text('{"prompt": "Capital of France?", "answer": "Paris"}\n\n{"prompt": "x"}\n')
    with pytest.raises(ValueError, match=r"capitals\.jsonl:3: expected an object with string 'prompt' and 'answer'"):
        load_jsonl(f)
    f.write_text('{"prompt": "Capital of France?", "answer": "Paris"}\n')
    (item,) = load_jsonl(f)
    assert (item.task, item.answer) == ("capitals", "Paris")


def _paired(outcomes: str, digest: str = "d") -> TextAccuracy:
    correct = outcomes.count("1")
    lo, hi = wilson(correct, len(outcomes))
    score = TaskScore(correct=correct, n=len(outcomes), accuracy=correct / len(outcomes), wilson_low=lo, wilson_high=hi)
    return TextAccuracy(digest=digest, outcomes=outcomes, overall=score)


def test_paired_gate_never_fails_an_identical_pin_and_catches_a_net_loss() -> None:
    ref = _paired(
        "1" * 25 + "0" * 15
    )  # 25/40: the Wilson gate failed an identical pin here (lower bound 47.0% < 50.0%)
    assert gate(_paired("1" * 25 + "0" * 15), ref, "0.31.0", 0.2, is_reference=False).passed is True
    lost8 = gate(_paired("0" * 8 + "1" * 17 + "0" * 15), ref, "0.31.0", 0.2, is_reference=False)
    assert lost8.passed is False
    assert lost8.detail.endswith(
        "paired with 0.31.0 on the same 40 items: 8 lost, 0 gained (exact McNemar p=0.0039 < 0.05)"
    )
    # swaps that cancel out are not a loss
    swapped = gate(_paired("0" * 3 + "1" * 22 + "1" * 3 + "0" * 12), ref, "0.31.0", 0.2, is_reference=False)
    assert swapped.passed is True and "3 lost, 3 gained" in swapped.detail


def test_without_per_item_outcomes_the_wilson_floor_decides() -> None:
    ref = _paired("1" * 88 + "0" * 72)
    old_ref = TextAccuracy(digest="d", overall=ref.overall)  # stored by an older harness: no outcomes
    assert gate(_paired("1" * 60 + "0" * 100), old_ref, "0.31.0", 0.2, is_reference=False).passed is False


def test_mcnemar_exact() -> None:
    from harness.probes.accuracy import mcnemar_p

    assert mcnemar_p(0, 0) == 1.0
    assert mcnemar_p(8, 0) == 0.5**8
    assert round(mcnemar_p(5, 1), 4) == round(7 / 64, 4)  # P(X >= 5 | n=6, 1/2) = (6 + 1) / 64
