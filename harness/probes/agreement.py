"""Agreement with the reference pin: greedy tokens, top-k logprobs, prompt logprobs, embeddings.

The rule for text is vLLM's ``check_logprobs_close``: two greedy sequences may diverge only where each
side's token is among the other's top-k logprobs, and after that first divergence nothing more is
compared. The reference's samples are stored once per (model, reference pin, settings) in the data dir
and reused, so a run that does not include the reference pin still compares against it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx

from ..errors import ProbeError
from ..results import Agreement, Check, ItemAgreement
from ..words import AgreementKind
from .checks import exchange

PROMPTS = (
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
EMBEDDING_INPUTS = (
    "The quick brown fox jumps over the lazy dog.",
    "Inference servers batch requests.",
    "Paris is in France.",
)
COSINE_MIN = 1 - 1e-3


@dataclass(frozen=True, kw_only=True)
class Thresholds:
    top_k: int
    max_disagreeing_prompts: int  # prompts whose divergence breaks the top-k rule
    max_diverging_prompts: int  # prompts that diverge at all (-1: no limit)
    min_divergence_position: int  # a divergence before this token counts as disagreeing
    prompt_logprob_tolerance: float | None  # max |Δ| on prompt-token logprobs (None: reported only)


def normalise_logprobs(choice: dict[str, Any]) -> tuple[list[str], list[dict[str, float]]]:
    """Tokens and top-k maps from either shape: legacy ``{tokens, top_logprobs: [{tok: lp}]}`` or
    chat-style ``{content: [{token, top_logprobs: [{token, logprob}]}]}`` (llama.cpp answers that way)."""
    lp = choice.get("logprobs") or {}
    if isinstance(lp.get("content"), list):
        tokens = [c.get("token", "") for c in lp["content"]]
        tops = [{t["token"]: t["logprob"] for t in c.get("top_logprobs") or []} for c in lp["content"]]
        return tokens, tops
    return list(lp.get("tokens") or []), [dict(t or {}) for t in lp.get("top_logprobs") or []]


def _prompt_logprobs(choice: dict[str, Any]) -> list[dict[str, float]] | None:
    """vLLM's ``prompt_logprobs``: per prompt position ``{token_id: {logprob, decoded_token}}`` (first is null)."""
    raw = choice.get("prompt_logprobs")
    if not isinstance(raw, list):
        return None
    out: list[dict[str, float]] = []
    for pos in raw:
        if not isinstance(pos, dict):
            out.append({})
            continue
        out.append(
            {
                str(v.get("decoded_token", k)): float(v["logprob"])
                for k, v in pos.items()
                if isinstance(v, dict) and isinstance(v.get("logprob"), int | float) and math.isfinite(v["logprob"])
            }
        )
    return out


def greedy_samples(
    client: httpx.Client, model: str, prompts: Sequence[str], max_tokens: int, top_k: int, *, concurrency: int = 1
) -> list[dict[str, Any]]:
    """Greedy completions with top-k logprobs, plus prompt logprobs where the server supports them.

    The first prompt goes alone (it finds out whether the server takes ``prompt_logprobs``); the rest up
    to ``concurrency`` at a time over the same client, in prompt order in the result."""
    if not prompts:
        return []
    want = [True]

    def one(prompt: str) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": model,
            "prompt": prompt,
            "max_tokens": max_tokens,
            "temperature": 0,
            "logprobs": top_k,
        }
        ex = exchange(client, "POST", "/v1/completions", {**body, "prompt_logprobs": 1} if want[0] else body)
        if ex.status != 200 and want[0]:  # prompt_logprobs is a vLLM extension; others may refuse it
            want[0] = False
            ex = exchange(client, "POST", "/v1/completions", body)
        if ex.status != 200 or not isinstance(ex.data, dict):
            raise ProbeError(f"greedy completion with logprobs: HTTP {ex.status}: {str(ex.data)[:200]}")
        choice = ex.data["choices"][0]
        tokens, tops = normalise_logprobs(choice)
        return {
            "prompt": prompt,
            "text": choice.get("text", ""),
            "tokens": tokens,
            "top_logprobs": tops,
            "prompt_logprobs": _prompt_logprobs(choice),
        }

    first = one(prompts[0])
    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        return [first, *pool.map(one, prompts[1:])]


def compare(ours: Sequence[dict[str, Any]], reference: Sequence[dict[str, Any]]) -> list[ItemAgreement]:
    results = []
    for a, b in zip(ours, reference, strict=False):
        ta, tb = a["tokens"], b["tokens"]
        result = ItemAgreement(
            prompt=a["prompt"], identical=True, ours_text=a.get("text", ""), reference_text=b.get("text", "")
        )
        for i in range(max(len(ta), len(tb))):
            x = ta[i] if i < len(ta) else "<end>"
            y = tb[i] if i < len(tb) else "<end>"
            if x == y:
                continue
            tops_a = a["top_logprobs"][i] if i < len(a["top_logprobs"]) else {}
            tops_b = b["top_logprobs"][i] if i < len(b["top_logprobs"]) else {}
            result = ItemAgreement(
                prompt=a["prompt"],
                identical=False,
                position=i,
                ours=x,
                reference=y,
                close=x in tops_b and y in tops_a,
                ours_text=result.ours_text,
                reference_text=result.reference_text,
            )
            break
        results.append(result)
    return results


def prompt_logprob_delta(ours: Sequence[dict[str, Any]], reference: Sequence[dict[str, Any]]) -> float | None:
    """Largest |Δ logprob| over prompt tokens both sides report (None when neither side has them)."""
    deltas = []
    for a, b in zip(ours, reference, strict=False):
        pa, pb = a.get("prompt_logprobs"), b.get("prompt_logprobs")
        if not pa or not pb:
            continue
        for da, db in zip(pa, pb, strict=False):
            deltas += [abs(da[t] - db[t]) for t in da.keys() & db.keys()]
    return max(deltas) if deltas else None


def evaluate(
    ours: Sequence[dict[str, Any]], reference: Sequence[dict[str, Any]], ref_version: str, t: Thresholds
) -> tuple[list[Check], Agreement]:
    per_prompt = compare(ours, reference)
    diverging = [r for r in per_prompt if not r.identical]
    disagreeing = [r for r in diverging if not r.close or (r.position or 0) < t.min_divergence_position]
    delta = prompt_logprob_delta(ours, reference)
    summary = Agreement(
        kind=AgreementKind.GREEDY,
        reference_version=ref_version,
        compared=len(per_prompt),
        identical=len(per_prompt) - len(diverging),
        close=len(diverging) - len(disagreeing),
        differ=len(disagreeing),
        prompt_logprob_max_delta=delta,
        items=tuple(per_prompt),
    )
    first = disagreeing[0] if disagreeing else (diverging[0] if diverging else None)
    evidence: dict[str, Any] = {"reference_version": ref_version}
    if first is not None:
        evidence.update(
            prompt=first.prompt,
            position=first.position,
            expected=first.reference_text,
            actual=first.ours_text,
            tokens={"ours": first.ours, "reference": first.reference},
        )
    detail = (
        f"vs {ref_version}: {summary.identical}/{len(per_prompt)} identical, {summary.close} close, "
        f"{len(disagreeing)} outside top-{t.top_k}"
        + (f" or before token {t.min_divergence_position}" if t.min_divergence_position else "")
    )
    ok = len(disagreeing) <= t.max_disagreeing_prompts and (
        t.max_diverging_prompts < 0 or len(diverging) <= t.max_diverging_prompts
    )
    checks = [Check(group="agreement", name="agreement.greedy", passed=ok, detail=detail, evidence=evidence)]
    if delta is not None or t.prompt_logprob_tolerance is not None:
        tolerance = t.prompt_logprob_tolerance
        gated = tolerance is not None
        passed = None if delta is None else (delta <= tolerance if tolerance is not None else True)
        tol = f" (tolerance {t.prompt_logprob_tolerance})" if gated else " (reported, not gated)"
        checks.append(
            Check(
                group="agreement",
                name="agreement.prompt_logprobs",
                passed=passed,
                detail=f"max |Δ| over prompt tokens: {delta if delta is None else round(delta, 4)}{tol}",
            )
        )
    return checks, summary


def embeddings(client: httpx.Client, model: str) -> list[list[float]]:
    ex = exchange(client, "POST", "/v1/embeddings", {"model": model, "input": list(EMBEDDING_INPUTS)})
    if ex.status != 200 or not isinstance(ex.data, dict):
        raise ProbeError(f"embeddings: HTTP {ex.status}: {str(ex.data)[:200]}")
    return [d["embedding"] for d in ex.data["data"]]


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    na, nb = math.sqrt(sum(x * x for x in a)), math.sqrt(sum(y * y for y in b))
    return dot / (na * nb) if na and nb else 0.0


def evaluate_embeddings(
    ours: Sequence[Sequence[float]], reference: Sequence[Sequence[float]], ref_version: str
) -> Check:
    sims = [cosine(a, b) if len(a) == len(b) else 0.0 for a, b in zip(ours, reference, strict=False)]
    worst = min(sims) if sims else 0.0
    return Check(
        group="agreement",
        name="agreement.embeddings",
        passed=worst >= COSINE_MIN,
        detail=f"vs {ref_version}: min cosine {worst:.6f} (threshold {COSINE_MIN})",
        evidence={"cosines": [round(s, 6) for s in sims], "inputs": list(EMBEDDING_INPUTS)},
    )
