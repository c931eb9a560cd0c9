"""Task accuracy on small seeded task sets we generate, gated with a Wilson lower bound.

Tasks are exact-answer and sized for small models: arithmetic, unit conversion, copying a word,
and multiple choice from facts stated in the prompt. Each item is a few-shot completion prompt
("Question: ...\\nAnswer:") answered greedily up to the first newline and scored by exact match. An
external lm-eval-style JSONL file (``{"prompt": ..., "answer": ...}`` per line) can add items.

Gate: both pins answer the same items, so they are compared paired: the exact McNemar test on the
items where they disagree (an identical pin can never fail; a pin that loses k items net fails once k
clears the test at 5%). Against a reference stored without per-item outcomes (an older harness), the
unpaired rule decides: the pin's Wilson 95% lower bound against the reference's accuracy x (1 - tolerance).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from ..errors import ProbeError
from ..results import Check, Miss, TaskScore, TextAccuracy
from ..serial import dump

BUILTIN_TASKS = ("arithmetic", "unit-conversion", "copy", "multiple-choice")
Z95 = 1.959963984540054


@dataclass(frozen=True, kw_only=True)
class Item:
    task: str
    prompt: str
    answer: str


def _few_shot(examples: Sequence[tuple[str, str]], question: str) -> str:
    shots = "".join(f"Question: {q}\nAnswer: {a}\n\n" for q, a in examples)
    return f"{shots}Question: {question}\nAnswer:"


def _arithmetic(rng: random.Random) -> tuple[str, str]:
    a, b = rng.randint(1, 9), rng.randint(1, 9)
    return f"What is {a} + {b}?", str(a + b)


_UNITS = (
    ("meters", "centimeters", 100),
    ("kilograms", "grams", 1000),
    ("hours", "minutes", 60),
    ("minutes", "seconds", 60),
)


def _unit_conversion(rng: random.Random) -> tuple[str, str]:
    big, small, factor = rng.choice(_UNITS)
    n = rng.randint(1, 5)
    return f"How many {small} are in {n} {big}?", str(n * factor)


_WORDS = (
    "apple",
    "river",
    "candle",
    "zebra",
    "pencil",
    "garden",
    "rocket",
    "violin",
    "marble",
    "tiger",
    "cloud",
    "lemon",
)


def _copy(rng: random.Random) -> tuple[str, str]:
    word = rng.choice(_WORDS)
    return f"Repeat this word exactly: {word}", word


_NAMES = ("Anna", "Ben", "Carla", "David", "Ella", "Farid", "Greta", "Hugo")
_COLORS = ("red", "blue", "green", "yellow", "black", "white")


def _multiple_choice(rng: random.Random) -> tuple[str, str]:
    a, b = rng.sample(_NAMES, 2)
    ca, cb = rng.sample(_COLORS, 2)
    who, color = rng.choice(((a, ca), (b, cb)))
    options = [ca, cb]
    rng.shuffle(options)
    letter = "AB"[options.index(color)]
    q = (
        f"{a} has a {ca} bag. {b} has a {cb} bag. What color is {who}'s "
        f"bag? A) {options[0]} B) {options[1]}. Reply with the letter."
    )
    return q, letter


_GENERATORS: dict[str, Callable[[random.Random], tuple[str, str]]] = {
    "arithmetic": _arithmetic,
    "unit-conversion": _unit_conversion,
    "copy": _copy,
    "multiple-choice": _multiple_choice,
}


def builtin_items(task: str, n: int, seed: int) -> list[Item]:
    """``n`` items of ``task`` plus 2 fixed solved examples in each prompt, reproducible from ``seed``."""
    gen = _GENERATORS[task]
    shots_rng = random.Random(f"{seed}:{task}:shots")
    shots = [gen(shots_rng) for _ in range(2)]
    rng = random.Random(f"{seed}:{task}")
    items = []
    for _ in range(n):
        q, a = gen(rng)
        items.append(Item(task=task, prompt=_few_shot(shots, q), answer=a))
    return items


def load_jsonl(path: Path, task: str | None = None) -> list[Item]:
    """lm-eval-style items; errors name the file and line."""
    items = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}:{n}: invalid JSON: {exc.msg}") from exc
        if (
            not isinstance(row, dict)
            or not isinstance(row.get("prompt"), str)
            or not isinstance(row.get("answer"), str)
        ):
            raise ValueError(f"{path}:{n}: expected an object with string 'prompt' and 'answer'")
        items.append(Item(task=task or path.stem, prompt=row["prompt"], answer=row["answer"]))
    return items


def normalise(text: str) -> str:
    first = text.strip().splitlines()[0] if text.strip() else ""
    return first.strip().strip(".").strip().lower()


def wilson(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def items_digest(items: Sequence[Item]) -> str:
    return hashlib.sha256(json.dumps([(i.task, i.prompt, i.answer) for i in items]).encode()).hexdigest()[:12]


async def _answer_all(
    base_url: str,
    model: str,
    items: Sequence[Item],
    max_tokens: int,
    concurrency: int,
    transport: httpx.AsyncBaseTransport | None,
    headers: Mapping[str, str] | None = None,
) -> list[str]:
    sem = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(
        base_url=base_url, transport=transport, timeout=120, headers=dict(headers or {})
    ) as client:

        async def one(item: Item) -> str:
            body = {"model": model, "prompt": item.prompt, "max_tokens": max_tokens, "temperature": 0, "stop": ["\n"]}
            async with sem:
                try:
                    resp = await client.post("/v1/completions", json=body)
                except httpx.TransportError as exc:
                    raise ProbeError(f"accuracy item: {type(exc).__name__}: {exc}") from exc
            if resp.status_code != 200:
                raise ProbeError(f"accuracy item: HTTP {resp.status_code}: {resp.text[:200]}")
            return str(resp.json()["choices"][0]["text"])

        return list(await asyncio.gather(*(one(i) for i in items)))


def run(
    base_url: str,
    model: str,
    items: Sequence[Item],
    *,
    max_tokens: int = 8,
    concurrency: int = 4,
    transport: httpx.AsyncBaseTransport | None = None,
    headers: Mapping[str, str] | None = None,
) -> TextAccuracy:
    """Answer every item; the score per task and overall, with Wilson 95% intervals and the misses."""
    answers = asyncio.run(_answer_all(base_url, model, items, max_tokens, concurrency, transport, headers))
    per_task: dict[str, list[int]] = {}
    misses = []
    for item, got in zip(items, answers, strict=True):
        ok = normalise(got) == normalise(item.answer)
        per_task.setdefault(item.task, []).append(int(ok))
        if not ok:
            misses.append(
                Miss(task=item.task, prompt=item.prompt.rsplit("Question: ", 1)[-1], expected=item.answer, actual=got)
            )

    def score(xs: Sequence[int]) -> TaskScore:
        lo, hi = wilson(sum(xs), len(xs))
        return TaskScore(
            correct=sum(xs), n=len(xs), accuracy=sum(xs) / len(xs) if xs else 0.0, wilson_low=lo, wilson_high=hi
        )

    outcomes = "".join(
        "1" if normalise(got) == normalise(item.answer) else "0" for item, got in zip(items, answers, strict=True)
    )
    return TextAccuracy(
        digest=items_digest(items),
        overall=score([x for xs in per_task.values() for x in xs]),
        tasks={t: score(xs) for t, xs in per_task.items()},
        misses=tuple(misses),
        outcomes=outcomes,
    )


ALPHA = 0.05  # a pin fails when losing this many items net would happen by chance less often than this


def mcnemar_p(lost: int, gained: int) -> float:
    """Exact one-sided McNemar test: P(at least ``lost`` of the discordant items go against the pin) when
    either way is equally likely (binomial, p = 1/2)."""
    n = lost + gained
    return sum(math.comb(n, k) for k in range(lost, n + 1)) / 2**n if n else 1.0


def gate(
    ours: TextAccuracy, reference: TextAccuracy | None, ref_version: str, tolerance: float, *, is_reference: bool
) -> Check:
    o = ours.overall
    interval = f"{o.accuracy:.1%} ({o.correct}/{o.n}, Wilson 95% [{o.wilson_low:.1%}, {o.wilson_high:.1%}])"
    evidence: dict[str, Any] = {"misses": [dump(m) for m in ours.misses[:5]]}
    if is_reference:
        return Check(
            group="accuracy", name="accuracy.tasks", passed=True, detail=f"reference pin: {interval}", evidence=evidence
        )
    if reference is None or reference.digest != ours.digest:
        detail = f"{interval}; not compared: no reference accuracy for these items from {ref_version}"
        return Check(group="accuracy", name="accuracy.tasks", passed=None, detail=detail, evidence=evidence)
    if ours.outcomes and len(reference.outcomes) == len(ours.outcomes):
        # Paired on the same items: only the items where the two pins disagree say anything.
        lost = sum(1 for a, b in zip(ours.outcomes, reference.outcomes, strict=True) if a == "0" and b == "1")
        gained = sum(1 for a, b in zip(ours.outcomes, reference.outcomes, strict=True) if a == "1" and b == "0")
        p = mcnemar_p(lost, gained)
        ok = p >= ALPHA
        detail = (
            f"{interval}; paired with {ref_version} on the same "
            f"{len(ours.outcomes)} items: {lost} lost, {gained} gained "
            f"(exact McNemar p={p:.2g} {'>=' if ok else '<'} {ALPHA:g})"
        )
        return Check(group="accuracy", name="accuracy.tasks", passed=ok, detail=detail, evidence=evidence)
    floor = reference.overall.accuracy * (1 - tolerance)
    ok = o.wilson_low >= floor
    detail = (
        f"{interval} vs reference {ref_version} {reference.overall.accuracy:.1%}: lower bound "
        f"{o.wilson_low:.1%} {'>=' if ok else '<'} {floor:.1%} (reference x (1 - {tolerance:g}))"
    )
    return Check(group="accuracy", name="accuracy.tasks", passed=ok, detail=detail, evidence=evidence)
