from __future__ import annotations

import json

import httpx

from harness.loadgen import make_prompts, run_levels


def _sse(*payloads: object) -> bytes:
    return b"".join(f"data: {p if isinstance(p, str) else json.dumps(p)}\n\n".encode() for p in payloads)


def test_prompts_are_seeded() -> None:
    assert make_prompts(3, 26, seed=1) == make_prompts(3, 26, seed=1)
    assert make_prompts(3, 26, seed=1) != make_prompts(3, 26, seed=2)
    assert len(make_prompts(3, 26, seed=1)[0].split()) == 20


def test_streaming_client_counts_tokens_from_usage() -> None:
    seen: list[dict] = []

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        seen.append(body)
        n = body["max_tokens"]
        chunks = [{"choices": [{"index": 0, "text": f" t{i}"}]} for i in range(n)]
        usage = {"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": n, "total_tokens": 5 + n}}
        return httpx.Response(200, content=_sse(*chunks, usage, "[DONE]"), headers={"content-type": "text/event-stream"})

    levels = run_levels("http://test", "m", ["a", "b", "c"], [1, 2], max_tokens=4, extra={"ignore_eos": True},
                        transport=httpx.MockTransport(handler))
    assert [lvl.concurrency for lvl in levels] == [1, 2]
    for lvl in levels:
        assert (lvl.requests, lvl.completed, lvl.failed, lvl.output_tokens) == (3, 3, 0, 12)
        assert lvl.token_count_mismatches == 0
        assert lvl.itl_ms.n == 9
    assert seen[0]["stream_options"] == {"include_usage": True}
    assert seen[0]["ignore_eos"] is True and seen[0]["temperature"] == 0.0


def test_errors_and_missing_usage_are_failures() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if json.loads(request.content)["prompt"] == "bad":
            return httpx.Response(500, text="engine died")
        return httpx.Response(200, content=_sse({"choices": [{"text": "x"}]}, "[DONE]"))

    (lvl,) = run_levels("http://test", "m", ["bad", "ok"], [1], max_tokens=1, transport=httpx.MockTransport(handler))
    assert (lvl.completed, lvl.failed) == (0, 2)
    assert lvl.errors == ("HTTP 500: engine died", "no usage in the stream")


def test_mismatch_between_chunks_and_usage_is_reported() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        usage = {"choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 3, "total_tokens": 4}}
        return httpx.Response(200, content=_sse({"choices": [{"text": "x"}]}, usage, "[DONE]"))

    (lvl,) = run_levels("http://test", "m", ["p"], [1], max_tokens=3, transport=httpx.MockTransport(handler))
    assert lvl.token_count_mismatches == 1
