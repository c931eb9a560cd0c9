from __future__ import annotations

import json

import httpx

from harness.probes import compare, conformance, normalise_logprobs


def _server(*, usage_off: int = 0, ignore_max_tokens: bool = False, stream_text: str | None = None, bad_status: int = 400):
    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            return httpx.Response(200, json={"data": [{"id": "m"}]})
        body = json.loads(request.content)
        if body["max_tokens"] < 1:
            return httpx.Response(bad_status, json={"error": "bad"})
        n = body["max_tokens"] + (3 if ignore_max_tokens else 0)
        usage = {"prompt_tokens": 4, "completion_tokens": n, "total_tokens": 4 + n + usage_off}
        text = "".join(f" w{i}" for i in range(n))
        if body.get("stream"):
            chunks = [f" w{i}" for i in range(n)] if stream_text is None else [stream_text]
            lines = [json.dumps({"choices": [{"text": c}]}) for c in chunks]
            lines += [json.dumps({"choices": [], "usage": usage}), "[DONE]"]
            return httpx.Response(200, content="".join(f"data: {ln}\n\n" for ln in lines).encode())
        if request.url.path == "/v1/chat/completions":
            return httpx.Response(200, json={"object": "chat.completion", "usage": usage,
                                             "choices": [{"message": {"role": "assistant", "content": text}, "finish_reason": "length"}]})
        return httpx.Response(200, json={"object": "text_completion", "usage": usage,
                                         "choices": [{"text": text, "finish_reason": "length"}]})

    return httpx.Client(base_url="http://t", transport=httpx.MockTransport(handler))


def _by_name(checks):
    return {c.name: c for c in checks}


def test_conforming_server_passes_everything() -> None:
    checks = _by_name(conformance(_server(), "m"))
    assert all(c.passed for c in checks.values()), checks
    assert set(checks) == {"chat.shape", "completion.shape", "completion.max_tokens", "stream.equals_plain", "bad_request.4xx"}


def test_inconsistent_usage_fails_shape_checks() -> None:
    checks = _by_name(conformance(_server(usage_off=1), "m"))
    assert not checks["chat.shape"].passed
    assert "prompt_tokens + completion_tokens != total_tokens" in checks["completion.shape"].detail


def test_max_tokens_ignored_is_caught() -> None:
    checks = _by_name(conformance(_server(ignore_max_tokens=True), "m"))
    assert not checks["completion.max_tokens"].passed
    assert checks["completion.max_tokens"].detail == "max_tokens=5, completion_tokens=8, finish_reason='length'"


def test_stream_differs_from_plain() -> None:
    checks = _by_name(conformance(_server(stream_text="something else"), "m"))
    assert not checks["stream.equals_plain"].passed


def test_bad_request_must_be_4xx() -> None:
    assert not _by_name(conformance(_server(bad_status=500), "m"))["bad_request.4xx"].passed


def test_both_logprob_shapes_normalise_alike() -> None:
    legacy = {"logprobs": {"tokens": ["A", "B"], "top_logprobs": [{"A": -0.1, "C": -2.0}, {"B": -0.2}]}}
    chat = {"logprobs": {"content": [
        {"token": "A", "top_logprobs": [{"token": "A", "logprob": -0.1}, {"token": "C", "logprob": -2.0}]},
        {"token": "B", "top_logprobs": [{"token": "B", "logprob": -0.2}]},
    ]}}
    assert normalise_logprobs(legacy) == normalise_logprobs(chat) == (["A", "B"], [{"A": -0.1, "C": -2.0}, {"B": -0.2}])


def _sample(prompt: str, tokens: list[str], tops: list[dict[str, float]]) -> dict:
    return {"prompt": prompt, "tokens": tokens, "top_logprobs": tops}


def test_check_logprobs_close_rule() -> None:
    ref = [_sample("p1", ["a", "b", "c"], [{"a": 0}, {"b": 0, "x": -1}, {"c": 0}]),
           _sample("p2", ["a", "b"], [{"a": 0}, {"b": 0}]),
           _sample("p3", ["a", "b"], [{"a": 0}, {"b": 0}])]
    ours = [_sample("p1", ["a", "x", "q"], [{"a": 0}, {"x": 0, "b": -1}, {"q": 0}]),  # close: each in the other's top-k
            _sample("p2", ["a", "z"], [{"a": 0}, {"z": 0}]),  # far: neither in the other's top-k
            _sample("p3", ["a", "b"], [{"a": 0}, {"b": 0}])]  # identical
    d = compare(ours, ref)
    assert [(x.prompt, x.position, x.ours, x.reference, x.close) for x in d] == [
        ("p1", 1, "x", "b", True),
        ("p2", 1, "z", "b", False),
    ]


def test_length_difference_is_a_divergence() -> None:
    d = compare([_sample("p", ["a"], [{"a": 0}])], [_sample("p", ["a", "b"], [{"a": 0}, {"b": 0}])])
    assert [(x.position, x.ours, x.reference, x.close) for x in d] == [(1, "<end>", "b", False)]
