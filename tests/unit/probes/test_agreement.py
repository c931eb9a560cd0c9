from __future__ import annotations

import pytest

from harness.probes.agreement import (
    Thresholds,
    compare,
    cosine,
    evaluate,
    evaluate_embeddings,
    normalise_logprobs,
    prompt_logprob_delta,
)


def _s(prompt: str, tokens: list[str], tops: list[dict[str, float]], plp: list[dict[str, float]] | None = None) -> dict:
    return {"prompt": prompt, "text": "".join(tokens), "tokens": tokens, "top_logprobs": tops, "prompt_logprobs": plp}


T = Thresholds(
    top_k=5,
    max_disagreeing_prompts=0,
    max_diverging_prompts=-1,
    min_divergence_position=0,
    prompt_logprob_tolerance=None,
)


def test_both_logprob_shapes_normalise_alike() -> None:
    legacy = {"logprobs": {"tokens": ["A", "B"], "top_logprobs": [{"A": -0.1, "C": -2.0}, {"B": -0.2}]}}
    chat = {
        "logprobs": {
            "content": [
                {"token": "A", "top_logprobs": [{"token": "A", "logprob": -0.1}, {"token": "C", "logprob": -2.0}]},
                {"token": "B", "top_logprobs": [{"token": "B", "logprob": -0.2}]},
            ]
        }
    }
    assert normalise_logprobs(legacy) == normalise_logprobs(chat) == (["A", "B"], [{"A": -0.1, "C": -2.0}, {"B": -0.2}])


def test_check_logprobs_close_rule() -> None:
    ref = [
        _s("p1", ["a", "b", "c"], [{"a": 0}, {"b": 0, "x": -1}, {"c": 0}]),
        _s("p2", ["a", "b"], [{"a": 0}, {"b": 0}]),
        _s("p3", ["a", "b"], [{"a": 0}, {"b": 0}]),
    ]
    ours = [
        _s("p1", ["a", "x", "q"], [{"a": 0}, {"x": 0, "b": -1}, {"q": 0}]),  # close: each in the other's top-k
        _s("p2", ["a", "z"], [{"a": 0}, {"z": 0}]),  # far: neither in the other's top-k
        _s("p3", ["a", "b"], [{"a": 0}, {"b": 0}]),
    ]
    got = [(r.prompt, r.identical, r.position, r.ours, r.reference, r.close) for r in compare(ours, ref)]
    assert got == [
        ("p1", False, 1, "x", "b", True),
        ("p2", False, 1, "z", "b", False),
        ("p3", True, None, "", "", True),
    ]
    checks, summary = evaluate(ours, ref, "1.0", T)
    assert (summary.kind, summary.compared, summary.identical, summary.close, summary.differ) == ("greedy", 3, 1, 1, 1)
    assert checks[0].passed is False
    assert checks[0].detail == "vs 1.0: 1/3 identical, 1 close, 1 outside top-5"
    assert checks[0].evidence["prompt"] == "p2" and checks[0].evidence["tokens"] == {"ours": "z", "reference": "b"}


def test_length_difference_is_a_divergence() -> None:
    (r,) = compare([_s("p", ["a"], [{"a": 0}])], [_s("p", ["a", "b"], [{"a": 0}, {"b": 0}])])
    assert (r.position, r.ours, r.reference, r.close) == (1, "<end>", "b", False)


def test_how_many_and_how_far_may_diverge() -> None:
    ref = [_s("p", ["a", "b"], [{"a": 0, "x": -1}, {"b": 0}])]
    ours = [_s("p", ["x", "b"], [{"x": 0, "a": -1}, {"b": 0}])]  # close divergence at token 0
    assert evaluate(ours, ref, "1", T)[0][0].passed is True
    early = Thresholds(**{**T.__dict__, "min_divergence_position": 1})
    assert evaluate(ours, ref, "1", early)[0][0].passed is False
    none_allowed = Thresholds(**{**T.__dict__, "max_diverging_prompts": 0})
    assert evaluate(ours, ref, "1", none_allowed)[0][0].passed is False


def test_prompt_logprobs_reported_and_gated() -> None:
    ref = [_s("p", ["a"], [{"a": 0}], [{}, {" x": -1.0, " y": -2.0}])]
    ours = [_s("p", ["a"], [{"a": 0}], [{}, {" x": -1.25}])]
    assert prompt_logprob_delta(ours, ref) == pytest.approx(0.25)
    checks, _ = evaluate(ours, ref, "1", T)
    assert checks[1].name == "agreement.prompt_logprobs" and checks[1].passed is True
    assert "(reported, not gated)" in checks[1].detail
    gated = Thresholds(**{**T.__dict__, "prompt_logprob_tolerance": 0.1})
    assert evaluate(ours, ref, "1", gated)[0][1].passed is False


def test_embeddings_cosine_threshold() -> None:
    assert cosine([1, 0], [1, 0]) == 1.0
    ok = evaluate_embeddings([[1.0, 0.0], [0.0, 1.0]], [[1.0, 0.001], [0.0, 1.0]], "1")
    bad = evaluate_embeddings([[1.0, 0.0]], [[1.0, 0.1]], "1")
    assert ok.passed is True and bad.passed is False
    assert bad.detail == "vs 1: min cosine 0.995037 (threshold 0.999)"


def test_greedy_prompts_sent_concurrently_answer_as_sequentially_and_in_order() -> None:
    import json
    import threading
    import time

    import httpx

    from harness.probes.agreement import greedy_samples

    lock, state = threading.Lock(), {"now": 0, "most": 0}

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        if "prompt_logprobs" in body:  # a server without vLLM's extension: refused, asked again without it
            return httpx.Response(400, json={"error": {"message": "unknown field prompt_logprobs"}})
        with lock:
            state["now"] += 1
            state["most"] = max(state["most"], state["now"])
        time.sleep(0.05)
        with lock:
            state["now"] -= 1
        toks = [f" {body['prompt'][:3]}{i}" for i in range(body["max_tokens"])]
        lp = {
            "tokens": toks,
            "token_logprobs": [-0.1] * len(toks),
            "top_logprobs": [{t: -0.1} for t in toks],
            "text_offset": [0] * len(toks),
        }
        return httpx.Response(
            200, json={"choices": [{"index": 0, "text": "".join(toks), "logprobs": lp, "finish_reason": "length"}]}
        )

    prompts = [f"p{i:02d} prompt" for i in range(9)]

    def run(concurrency: int) -> list[dict]:
        with httpx.Client(base_url="http://t", transport=httpx.MockTransport(handler)) as client:
            return greedy_samples(client, "m", prompts, 3, 5, concurrency=concurrency)

    one = run(1)
    assert state["most"] == 1
    four = run(4)
    assert four == one and [s["prompt"] for s in four] == prompts
    assert state["most"] == 4  # they really were in flight together
