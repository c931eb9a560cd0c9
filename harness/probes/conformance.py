"""API conformance over the OpenAI schema: each check a named result with the exchange as evidence.

A server that answers wrongly is a finding (a failed Check), never an exception; only a server that
cannot be reached raises ProbeError.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import httpx

from ..errors import ProbeError
from ..words import ModelKind
from .checks import Check, Exchange, exchange

# Raw chat-template markers that must never reach a user: their presence means the template was not
# applied, or special tokens were not skipped when detokenizing.
SPECIAL_TOKENS = ("<|im_start|>", "<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<|start_header_id|>", "</s>", "<s>")
COMPLETION_PROMPT = "The capital of France is"
CHAT_MESSAGES = [{"role": "user", "content": "What is 2+2?"}]


def _check(name: str, ok: bool | None, detail: str, ex: Exchange | None = None, **evidence: Any) -> Check:
    ev: dict[str, Any] = {}
    if ex is not None:
        ev["request"] = ex.request
        ev["status"] = ex.status
    ev.update(evidence)
    return Check(group="conformance", name=name, passed=ok, detail=detail, evidence=ev)


def _usage_problem(usage: Any) -> str:
    if not isinstance(usage, dict):
        return f"usage missing: {usage!r}"
    fields = ("prompt_tokens", "completion_tokens", "total_tokens")
    if not all(isinstance(usage.get(f), int) and not isinstance(usage.get(f), bool) for f in fields):
        return f"usage fields not all ints: {usage!r}"
    if usage["prompt_tokens"] + usage["completion_tokens"] != usage["total_tokens"]:
        return f"prompt_tokens + completion_tokens != total_tokens: {usage!r}"
    return ""


def _shape_problems(ex: Exchange, obj: str, choice_ok: Callable[[dict[str, Any]], str]) -> list[str]:
    if ex.status != 200 or not isinstance(ex.data, dict):
        return [f"HTTP {ex.status}: {str(ex.data)[:200]}"]
    d = ex.data
    problems = []
    for key, typ in (("id", str), ("created", int), ("model", str), ("choices", list)):
        if not isinstance(d.get(key), typ):
            problems.append(f"{key}={d.get(key)!r} is not {typ.__name__}")
    if d.get("object") != obj:
        problems.append(f"object={d.get('object')!r}, expected {obj!r}")
    choices = d.get("choices") or []
    if not choices or not isinstance(choices[0], dict):
        return problems + ["no choices"]
    if choices[0].get("finish_reason") not in ("stop", "length"):
        problems.append(f"finish_reason={choices[0].get('finish_reason')!r}")
    if p := choice_ok(choices[0]):
        problems.append(p)
    if p := _usage_problem(d.get("usage")):
        problems.append(p)
    return problems


def _completion(client: httpx.Client, model: str, **body: Any) -> Exchange:
    return exchange(client, "POST", "/v1/completions", {"model": model, "temperature": 0, **body})


def _text(ex: Exchange, i: int = 0) -> str:
    try:
        return str(ex.data["choices"][i]["text"])
    except (KeyError, IndexError, TypeError):
        return ""


def check_models(client: httpx.Client, model: str) -> Check:
    ex = exchange(client, "GET", "/v1/models")
    ids = [m.get("id") for m in ex.data.get("data", [])] if isinstance(ex.data, dict) else []
    return _check(
        "models.lists_served_name", ex.status == 200 and model in ids, f"served ids: {ids}", ex, expected=model
    )


def check_chat(client: httpx.Client, model: str) -> list[Check]:
    body = {"model": model, "messages": CHAT_MESSAGES, "max_tokens": 32, "temperature": 0}
    ex = exchange(client, "POST", "/v1/chat/completions", body)

    def choice_ok(c: dict[str, Any]) -> str:
        msg = c.get("message") or {}
        return (
            "" if msg.get("role") == "assistant" and isinstance(msg.get("content"), str) else f"message={msg!r}"[:160]
        )

    problems = _shape_problems(ex, "chat.completion", choice_ok)
    content = (
        (((ex.data.get("choices") or [{}])[0].get("message") or {}).get("content") or "")
        if isinstance(ex.data, dict)
        else ""
    )
    leaked = [t for t in SPECIAL_TOKENS if t in content]
    return [
        _check("chat.shape", not problems, "; ".join(problems) or repr(content)[:120], ex),
        _check(
            "chat.template_applied",
            not leaked and bool(content),
            f"raw special tokens in the reply: {leaked}"
            if leaked
            else "empty reply (a chat template that ends the turn at once, or none applied)"
            if not content
            else "no raw special tokens in the reply",
            ex,
            actual=content,
        ),
    ]


def check_completion(client: httpx.Client, model: str) -> list[Check]:
    max_tokens = 5
    ex = _completion(client, model, prompt=COMPLETION_PROMPT, max_tokens=max_tokens)

    def choice_ok(c: dict[str, Any]) -> str:
        return "" if isinstance(c.get("text"), str) else f"text={c.get('text')!r}"

    problems = _shape_problems(ex, "text_completion", choice_ok)
    shape = _check("completion.shape", not problems, "; ".join(problems) or repr(_text(ex)), ex)
    try:  # judged on its own, so a shape problem elsewhere is not reported twice
        got, finish = ex.data["usage"]["completion_tokens"], ex.data["choices"][0]["finish_reason"]
    except (KeyError, IndexError, TypeError):
        return [shape, _check("completion.max_tokens", False, f"no usage/finish_reason to check: HTTP {ex.status}", ex)]
    ok = got == max_tokens if finish == "length" else (finish == "stop" and got < max_tokens)
    detail = f"max_tokens={max_tokens}: completion_tokens={got}, finish_reason={finish!r}"
    return [
        shape,
        _check(
            "completion.max_tokens",
            ok,
            detail,
            ex,
            expected=f"{max_tokens} tokens and 'length', or fewer and 'stop'",
            actual={"completion_tokens": got, "finish_reason": finish},
        ),
    ]


def check_stop(client: httpx.Client, model: str) -> Check:
    """A stop string taken from the model's own greedy output must end the text there, unemitted."""
    base = _completion(client, model, prompt="List three colors:", max_tokens=16)
    plain = _text(base)
    words = plain.split()
    if len(words) < 3:
        return _check("completion.stop", None, f"greedy output too short to pick a stop string: {plain!r}", base)
    stop = " " + words[2] if " " + words[2] in plain else words[2]
    expected = plain[: plain.index(stop)]
    ex = _completion(client, model, prompt="List three colors:", max_tokens=16, stop=[stop])
    got = _text(ex)
    finish = ex.data["choices"][0].get("finish_reason") if ex.status == 200 and isinstance(ex.data, dict) else None
    problems = []
    if stop in got:
        problems.append(f"stop string {stop!r} was emitted")
    if got != expected:
        problems.append(f"text {got!r} != {expected!r}")
    if finish != "stop":
        problems.append(f"finish_reason={finish!r}, expected 'stop'")
    return _check(
        "completion.stop",
        not problems,
        "; ".join(problems) or f"stopped before {stop!r}",
        ex,
        expected=expected,
        actual=got,
    )


def check_n(client: httpx.Client, model: str) -> Check:
    ex = _completion(client, model, prompt="Once upon a time", max_tokens=8, n=2, temperature=0.8, seed=7)
    choices = ex.data.get("choices", []) if isinstance(ex.data, dict) else []
    indices = sorted(c["index"] for c in choices if isinstance(c, dict) and isinstance(c.get("index"), int))
    ok = ex.status == 200 and indices == [0, 1]
    return _check(
        "completion.n", ok, f"n=2 -> {len(choices)} choices, indices {indices}", ex, expected=[0, 1], actual=indices
    )


def check_seed(client: httpx.Client, model: str) -> Check:
    body = {"prompt": "Once upon a time", "max_tokens": 12, "temperature": 1.0, "seed": 1234}
    a, b = _completion(client, model, **body), _completion(client, model, **body)
    ok = a.status == b.status == 200 and _text(a) == _text(b)
    return _check(
        "completion.seed",
        ok,
        "same seed, same text" if ok else f"{_text(a)!r} != {_text(b)!r}",
        a,
        actual=[_text(a), _text(b)],
    )


def check_stream_equals_plain(client: httpx.Client, model: str) -> Check:
    body = {"model": model, "prompt": "Write one sentence about the sea:", "max_tokens": 24, "temperature": 0}
    plain = exchange(client, "POST", "/v1/completions", body)
    if plain.status != 200:
        return _check("stream.equals_plain", False, f"HTTP {plain.status}", plain)
    parts, usage = [], None
    sbody = {**body, "stream": True, "stream_options": {"include_usage": True}}
    try:
        with client.stream("POST", "/v1/completions", json=sbody) as resp:
            for line in resp.iter_lines():
                if not line.startswith("data:") or line[5:].strip() == "[DONE]":
                    continue
                payload = json.loads(line[5:])
                for choice in payload.get("choices") or []:
                    parts.append(choice.get("text") or "")
                usage = payload.get("usage") or usage
    except httpx.TransportError as exc:
        raise ProbeError(f"streaming /v1/completions: {exc}") from exc
    streamed, plain_text, plain_usage = "".join(parts), _text(plain), plain.data.get("usage")
    problems = []
    if streamed != plain_text:
        problems.append(f"streamed {streamed!r} != plain {plain_text!r}")
    if not usage or usage.get("completion_tokens") != (plain_usage or {}).get("completion_tokens"):
        problems.append(f"streamed usage {usage!r} != plain usage {plain_usage!r}")
    return _check(
        "stream.equals_plain",
        not problems,
        "; ".join(problems)[:300] or "identical text and usage",
        plain,
        expected=plain_text,
        actual=streamed,
    )


def check_logprobs_shapes(client: httpx.Client, model: str, k: int = 3, *, chat: bool = True) -> list[Check]:
    """The legacy completions shape, and (``chat``: the model has a chat template) the chat ``content[]`` one."""
    legacy = check_completion_logprobs(client, model, k)
    return [legacy, check_chat_logprobs(client, model, k)] if chat else [legacy]


def check_completion_logprobs(client: httpx.Client, model: str, k: int = 3) -> Check:
    ex = _completion(client, model, prompt=COMPLETION_PROMPT, max_tokens=4, logprobs=k)
    problems = []
    lp = ((ex.data.get("choices") or [{}])[0].get("logprobs") or {}) if isinstance(ex.data, dict) else {}
    n = (ex.data.get("usage") or {}).get("completion_tokens") if isinstance(ex.data, dict) else None
    if ex.status != 200:
        problems.append(f"HTTP {ex.status}")
    elif "content" in lp and "tokens" not in lp:
        problems.append("chat-style logprobs.content[] in a /v1/completions answer (legacy shape expected)")
    else:
        for key in ("tokens", "token_logprobs", "top_logprobs", "text_offset"):
            if not isinstance(lp.get(key), list) or len(lp[key]) != n:
                problems.append(f"logprobs.{key} is not a list of {n}")
        tops = lp.get("top_logprobs") or []
        if any(not isinstance(t, dict) or not k <= len(t) <= k + 1 for t in tops):
            problems.append(f"top_logprobs entries do not hold {k} (or {k}+1) alternatives")
    return _check("completion.logprobs_shape", not problems, "; ".join(problems) or "legacy shape, sizes match", ex)


def check_chat_logprobs(client: httpx.Client, model: str, k: int = 3) -> Check:
    cbody = {
        "model": model,
        "messages": CHAT_MESSAGES,
        "max_tokens": 4,
        "temperature": 0,
        "logprobs": True,
        "top_logprobs": k,
    }
    cex = exchange(client, "POST", "/v1/chat/completions", cbody)
    cproblems = []
    content = (
        ((((cex.data.get("choices") or [{}])[0].get("logprobs")) or {}).get("content"))
        if isinstance(cex.data, dict)
        else None
    )
    if cex.status != 200:
        cproblems.append(f"HTTP {cex.status}")
    elif not isinstance(content, list) or not content:
        cproblems.append(f"logprobs.content is {content!r}")
    else:
        for item in content:
            tops = item.get("top_logprobs")
            if not isinstance(item.get("token"), str) or not isinstance(item.get("logprob"), int | float):
                cproblems.append(f"bad entry {item!r}"[:160])
                break
            if not isinstance(tops, list) or len(tops) != k:
                cproblems.append(
                    f"top_logprobs has {len(tops) if isinstance(tops, list) else tops!r} entries, expected {k}"
                )
                break
    return _check("chat.logprobs_shape", not cproblems, "; ".join(cproblems) or "content[] shape, sizes match", cex)


def check_errors(client: httpx.Client, model: str) -> list[Check]:
    cases: list[tuple[str, dict[str, Any] | None, str | None]] = [  # (name, JSON body, or raw text)
        ("error.negative_max_tokens", {"model": model, "prompt": "x", "max_tokens": -1}, None),
        ("error.unknown_model", {"model": model + "-does-not-exist", "prompt": "x", "max_tokens": 2}, None),
        ("error.bad_json", None, '{"model": "x", "prompt": '),
    ]
    out = []
    for name, body, raw in cases:
        ex = exchange(client, "POST", "/v1/completions", body, raw=raw)
        ok = (
            400 <= ex.status < 500
            and ex.is_json
            and isinstance(ex.data, dict)
            and ("error" in ex.data or "detail" in ex.data)
        )
        got = f"HTTP {ex.status}" + ("" if 400 <= ex.status < 500 else " (expected 4xx)")
        got += (
            ", JSON error body"
            if ok or (ex.is_json and isinstance(ex.data, dict) and "error" in ex.data)
            else ", no JSON error body"
        )
        out.append(_check(name, ok, got, ex, expected="4xx with a JSON error", actual=ex.data))
    after = exchange(client, "GET", "/v1/models")
    out.append(
        _check(
            "error.server_keeps_serving",
            after.status == 200,
            f"GET /v1/models after bad requests -> {after.status}",
            after,
        )
    )
    return out


def check_embeddings(client: httpx.Client, model: str, *, normalized: bool) -> list[Check]:
    inputs = ["The quick brown fox.", "A completely different sentence about tea."]
    ex = exchange(client, "POST", "/v1/embeddings", {"model": model, "input": inputs})
    data = ex.data.get("data") if isinstance(ex.data, dict) else None
    if ex.status != 200 or not isinstance(data, list) or len(data) != 2:
        return [_check("embeddings.shape", False, f"HTTP {ex.status}: {str(ex.data)[:200]}", ex)]
    vectors = [d.get("embedding") for d in data]
    dims = [len(v) if isinstance(v, list) else None for v in vectors]
    again = exchange(client, "POST", "/v1/embeddings", {"model": model, "input": inputs[:1]})
    dim2 = len(again.data["data"][0]["embedding"]) if again.status == 200 else None
    checks = [
        _check(
            "embeddings.dimension_stable",
            dims[0] == dims[1] == dim2 and bool(dims[0]),
            f"dimensions {dims + [dim2]}",
            ex,
        )
    ]
    if normalized:
        norms = [sum(x * x for x in v) ** 0.5 for v in vectors if isinstance(v, list)]
        ok = all(abs(n - 1.0) <= 1e-3 for n in norms)
        checks.append(_check("embeddings.unit_norm", ok, f"norms {[round(n, 5) for n in norms]}", ex))
    return checks


def conformance(
    client: httpx.Client,
    model: str,
    *,
    kind: ModelKind = ModelKind.CHAT,
    normalized_embeddings: bool = False,
    timings: dict[str, float] | None = None,
) -> list[Check]:
    """Every check for a model of ``kind``; ``timings`` gets the seconds each group of checks took."""
    timings = {} if timings is None else timings
    chat = kind is ModelKind.CHAT  # a base model (completion) has no chat template: no chat request at all

    def run(name: str, fn: Callable[[], Check | list[Check]]) -> list[Check]:
        t0 = time.monotonic()
        try:
            out = fn()
        finally:
            timings[name] = time.monotonic() - t0
        return out if isinstance(out, list) else [out]

    if kind is ModelKind.EMBEDDING:
        return [
            *run("models", lambda: check_models(client, model)),
            *run("embeddings", lambda: check_embeddings(client, model, normalized=normalized_embeddings)),
            *run("errors", lambda: check_errors(client, model)),
        ]
    return [
        *run("models", lambda: check_models(client, model)),
        *(run("chat", lambda: check_chat(client, model)) if chat else ()),  # a base model has no chat template
        *run("completion", lambda: check_completion(client, model)),
        *run("stop", lambda: check_stop(client, model)),
        *run("n", lambda: check_n(client, model)),
        *run("seed", lambda: check_seed(client, model)),
        *run("stream", lambda: check_stream_equals_plain(client, model)),
        *run("logprobs", lambda: check_logprobs_shapes(client, model, chat=chat)),
        *run("errors", lambda: check_errors(client, model)),
    ]
