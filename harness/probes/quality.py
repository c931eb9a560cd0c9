"""Absolute anchors: what is wrong with a model's output whatever pin serves it.

Agreement and accuracy are relative to the reference pin, so a model broken for every pin (a conversion
that lost the tokenizer's BOS setting, a bad checkpoint) passes them. Two checks hold without a reference:

- ``accuracy.no_degeneration``: greedy text caught in a loop (" France of France of France"): a run of
  one phrase of 1-6 words repeated back to back, at least 2.5 times, covering at least half the words.
  Failed when half or more of the agreement prompts degenerate (one looping answer can be a model's style).
- ``accuracy.floor``: the model's ``min_accuracy`` (its point accuracy on the task items), where the
  matrix sets one for the model.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from ..results import Check, TextAccuracy

MAX_PHRASE = 6  # words
MIN_REPEATS = 2.5
MIN_COVERAGE = 0.5
_WORD = re.compile(r"\w+")


def loop(text: str) -> str | None:
    """The phrase ``text`` repeats in a loop, or None."""
    words = [w.lower() for w in _WORD.findall(text)]
    best: tuple[float, str] | None = None
    for period in range(1, min(MAX_PHRASE, len(words) // 2) + 1):
        run = 0
        for i in range(len(words) - period):
            run = run + 1 if words[i] == words[i + period] else 0
            span = run + period
            if span / period >= MIN_REPEATS and span / len(words) >= MIN_COVERAGE:
                start = i + 1 - run
                phrase = " ".join(words[start : start + period])
                if best is None or span > best[0]:
                    best = (span, phrase)
    return best[1] if best else None


def degeneration_check(samples: Sequence[Mapping[str, Any]]) -> Check:
    loops = {str(s.get("prompt", "")): phrase for s in samples if (phrase := loop(str(s.get("text", "")))) is not None}
    ok = len(loops) * 2 < len(samples) if samples else True
    detail = f"{len(loops)} of {len(samples)} greedy answers loop" + (
        ": " + "; ".join(f"{p[:40]!r} -> {ph!r} again and again" for p, ph in list(loops.items())[:3]) if loops else ""
    )
    return Check(
        group="accuracy",
        name="accuracy.no_degeneration",
        passed=ok,
        detail=detail,
        evidence={
            "loops": loops,
            "texts": [str(s.get("text", ""))[:200] for s in samples if s.get("prompt") in loops][:5],
        },
    )


def floor_check(scored: TextAccuracy, min_accuracy: float) -> Check:
    o = scored.overall
    ok = o.accuracy >= min_accuracy
    return Check(
        group="accuracy",
        name="accuracy.floor",
        passed=ok,
        detail=(
            f"{o.accuracy:.1%} ({o.correct}/{o.n}) {'>=' if ok else '<'} the model's min_accuracy {min_accuracy:.1%}"
        ),
    )
