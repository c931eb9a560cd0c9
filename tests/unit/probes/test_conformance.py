from __future__ import annotations

import httpx

from harness.probes.conformance import check_chat


def _chat(content: str) -> httpx.Client:
    def handler(request: httpx.Request) -> httpx.Response:
        choice = {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content}}
        return httpx.Response(
            200,
            json={
                "id": "x",
                "object": "chat.completion",
                "created": 1,
                "model": "m",
                "choices": [choice],
                "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
            },
        )

    return httpx.Client(transport=httpx.MockTransport(handler), base_url="http://t")


def test_a_failed_template_check_says_what_was_wrong() -> None:
    verdicts = {c.name: c for c in check_chat(_chat(""), "m")}
    empty = verdicts["chat.template_applied"]
    assert (
        empty.passed is False
        and empty.detail == "empty reply (a chat template that ends the turn at once, or none applied)"
    )
    leaked = {c.name: c for c in check_chat(_chat("<|im_start|>assistant hi"), "m")}["chat.template_applied"]
    assert leaked.passed is False and leaked.detail == "raw special tokens in the reply: ['<|im_start|>']"
    ok = {c.name: c for c in check_chat(_chat("The answer is 4."), "m")}["chat.template_applied"]
    assert ok.passed is True and ok.detail == "no raw special tokens in the reply"
