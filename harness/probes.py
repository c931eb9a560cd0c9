"""Probes against a ready server: API conformance and greedy agreement with the reference pin.

Each check is data (``Check``), never an exception: a server that answers wrongly is a finding. Only a
server that cannot be reached at all raises ProbeError.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from .errors import ProbeError


@dataclass(frozen=True, kw_only=True)
class Check:
    name: str
    passed: bool
    detail: str = ""

    def to_dict(self) -> dict[str, object]:
        return {"name": self.name, "passed": self.passed, "detail": self.detail}


def _post(client: httpx.Client, path: str, body: dict[str, Any]) -> httpx.Response:
    try:
        return client.post(path, json=body)
    except httpx.TransportError as exc:
        raise ProbeError(f"POST {path}: {type(exc).__name__}: {exc}") from exc


def _usage_problem(usage: Any) -> str:
    if not isinstance(usage, dict):
        return f"usage missing: {usage!r}"
    fields = ("prompt_tokens", "completion_tokens", "total_tokens")
    if not all(isinstance(usage.get(f), int) for f in fields):
        return f"usage fields not all ints: {usage!r}"
    if usage["prompt_tokens"] + usage["completion_tokens"] != usage["total_tokens"]:
        return f"prompt_tokens + completion_tokens != total_tokens: {usage!r}"
    return ""


def check_chat(client: httpx.Client, model: str) -> Check:
    body = {"model": model, "messages": [{"role": "user", "content": "What is 2+2?"}], "max_tokens": 16, "temperature": 0}
    resp = _post(client, "/v1/chat/completions", body)
    if resp.status_code != 200:
        return Check(name="chat.shape", passed=False, detail=f"HTTP {resp.status_code}: {resp.text[:200]}")
    data = resp.json()
    problems = []
    if data.get("object") != "chat.completion":
        problems.append(f"object={data.get('object')!r}")
    choices = data.get("choices") or [{}]
    msg = choices[0].get("message") or {}
    if msg.get("role") != "assistant" or not isinstance(msg.get("content"), str):
        problems.append(f"message={msg!r}"[:120])
    if choices[0].get("finish_reason") not in ("stop", "length"):
        problems.append(f"finish_reason={choices[0].get('finish_reason')!r}")
    if p := _usage_problem(data.get("usage")):
        problems.append(p)
    return Check(name="chat.shape", passed=not problems, detail="; ".join(problems) or repr(msg.get("content"))[:80])


def check_completion(client: httpx.Client, model: str, max_tokens: int = 5) -> list[Check]:
    body = {"model": model, "prompt": "The capital of France is", "max_tokens": max_tokens, "temperature": 0}
    resp = _post(client, "/v1/completions", body)
    if resp.status_code != 200:
        detail = f"HTTP {resp.status_code}: {resp.text[:200]}"
        return [Check(name="completion.shape", passed=False, detail=detail),
                Check(name="completion.max_tokens", passed=False, detail=detail)]  # fmt: skip
    data = resp.json()
    problems = []
    if data.get("object") != "text_completion":
        problems.append(f"object={data.get('object')!r}")
    choice = (data.get("choices") or [{}])[0]
    if not isinstance(choice.get("text"), str):
        problems.append(f"text={choice.get('text')!r}")
    if choice.get("finish_reason") not in ("stop", "length"):
        problems.append(f"finish_reason={choice.get('finish_reason')!r}")
    if p := _usage_problem(data.get("usage")):
        problems.append(p)
    shape = Check(name="completion.shape", passed=not problems, detail="; ".join(problems) or repr(choice.get("text")))
    got = (data.get("usage") or {}).get("completion_tokens")
    honoured = isinstance(got, int) and (got == max_tokens if choice.get("finish_reason") == "length" else got <= max_tokens)
    detail = f"max_tokens={max_tokens}, completion_tokens={got}, finish_reason={choice.get('finish_reason')!r}"
    return [shape, Check(name="completion.max_tokens", passed=honoured, detail=detail)]


def check_stream_equals_plain(client: httpx.Client, model: str, max_tokens: int = 24) -> Check:
    prompt = "Write one sentence about the sea:"
    base = {"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0}
    plain = _post(client, "/v1/completions", base)
    if plain.status_code != 200:
        return Check(name="stream.equals_plain", passed=False, detail=f"HTTP {plain.status_code}")
    plain_text = plain.json()["choices"][0]["text"]
    parts, usage = [], None
    try:
        with client.stream("POST", "/v1/completions", json={**base, "stream": True, "stream_options": {"include_usage": True}}) as resp:
            for line in resp.iter_lines():
                if not line.startswith("data:") or line[5:].strip() == "[DONE]":
                    continue
                payload = json.loads(line[5:])
                for choice in payload.get("choices") or []:
                    parts.append(choice.get("text") or "")
                usage = payload.get("usage") or usage
    except httpx.TransportError as exc:
        raise ProbeError(f"streaming /v1/completions: {exc}") from exc
    streamed = "".join(parts)
    problems = []
    if streamed != plain_text:
        problems.append(f"streamed {streamed!r} != plain {plain_text!r}")
    if not usage or usage.get("completion_tokens") != plain.json()["usage"]["completion_tokens"]:
        problems.append(f"streamed usage {usage!r} != plain usage {plain.json()['usage']!r}")
    return Check(name="stream.equals_plain", passed=not problems, detail="; ".join(problems)[:300])


def check_bad_request(client: httpx.Client, model: str) -> Check:
    resp = _post(client, "/v1/completions", {"model": model, "prompt": "x", "max_tokens": -1})
    try:
        after = client.get("/v1/models").status_code
    except httpx.TransportError as exc:
        return Check(name="bad_request.4xx", passed=False, detail=f"server stopped answering: {exc}")
    ok = 400 <= resp.status_code < 500 and after == 200
    return Check(name="bad_request.4xx", passed=ok, detail=f"max_tokens=-1 -> HTTP {resp.status_code}; then /v1/models -> {after}")


def conformance(client: httpx.Client, model: str) -> list[Check]:
    return [check_chat(client, model), *check_completion(client, model), check_stream_equals_plain(client, model),
            check_bad_request(client, model)]  # fmt: skip


# --- agreement --------------------------------------------------------------------------------

AGREEMENT_PROMPTS = (
    "The capital of France is",
    "Water boils at a temperature of",
    "The largest planet in our solar system is",
    "def fibonacci(n):",
    "Once upon a time, in a small village,",
    "The three primary colors are",
    "To make a cup of tea, first",
    "The opposite of hot is",
    "In 1969, the first person to walk on the moon was",
    "A haiku about autumn:",
    "The chemical symbol for gold is",
    "Photosynthesis is the process by which",
)


def normalise_logprobs(choice: dict[str, Any]) -> tuple[list[str], list[dict[str, float]]]:
    """Tokens and top-k maps from either logprobs shape: legacy completions
    ``{tokens, top_logprobs: [{tok: lp}]}`` or chat-style ``{content: [{token, top_logprobs: [{token, logprob}]}]}``."""
    lp = choice.get("logprobs") or {}
    if isinstance(lp.get("content"), list):
        tokens = [c.get("token", "") for c in lp["content"]]
        tops = [{t["token"]: t["logprob"] for t in c.get("top_logprobs") or []} for c in lp["content"]]
        return tokens, tops
    tokens = list(lp.get("tokens") or [])
    tops = [dict(t or {}) for t in lp.get("top_logprobs") or []]
    return tokens, tops


def greedy_samples(client: httpx.Client, model: str, prompts: Sequence[str], max_tokens: int, top_k: int) -> list[dict[str, Any]]:
    out = []
    for prompt in prompts:
        body = {"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "logprobs": top_k}
        resp = _post(client, "/v1/completions", body)
        if resp.status_code != 200:
            raise ProbeError(f"greedy completion with logprobs: HTTP {resp.status_code}: {resp.text[:200]}")
        choice = resp.json()["choices"][0]
        tokens, tops = normalise_logprobs(choice)
        out.append({"prompt": prompt, "text": choice.get("text", ""), "tokens": tokens, "top_logprobs": tops})
    return out


@dataclass(frozen=True, kw_only=True)
class Divergence:
    prompt: str
    position: int
    ours: str
    reference: str
    close: bool  # each side's token is in the other's top-k there


def compare(ours: Sequence[dict[str, Any]], reference: Sequence[dict[str, Any]]) -> list[Divergence]:
    """vLLM's ``check_logprobs_close`` rule: sequences may diverge only where each side's token is in
    the other's top-k logprobs; after that first divergence the rest is not compared."""
    found = []
    for a, b in zip(ours, reference, strict=False):
        for i, (ta, tb) in enumerate(zip(a["tokens"], b["tokens"], strict=False)):
            if ta == tb:
                continue
            tops_a = a["top_logprobs"][i] if i < len(a["top_logprobs"]) else {}
            tops_b = b["top_logprobs"][i] if i < len(b["top_logprobs"]) else {}
            found.append(Divergence(prompt=a["prompt"], position=i, ours=ta, reference=tb, close=ta in tops_b and tb in tops_a))
            break
        else:
            if len(a["tokens"]) != len(b["tokens"]):
                i = min(len(a["tokens"]), len(b["tokens"]))
                found.append(Divergence(prompt=a["prompt"], position=i, ours="<end>" if i >= len(a["tokens"]) else a["tokens"][i],
                                        reference="<end>" if i >= len(b["tokens"]) else b["tokens"][i], close=False))  # fmt: skip
    return found
