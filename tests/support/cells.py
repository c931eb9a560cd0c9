"""Typed cell results for report and recommendation tests, built with the producers' own code
(``summarize``/``aggregate``, ``LoadPoint.of``, ``agreement.evaluate``, ``stt.wer_check``), so a change in what
the producers make shows up here instead of being papered over by hand-made data."""

from __future__ import annotations

from collections.abc import Sequence

from harness.load.metrics import RequestRecord, aggregate, summarize
from harness.probes import agreement, stt
from harness.probes.accuracy import wilson
from harness.results import AUDIO_UNIT, Agreement, CellResult, Check, LoadPoint, Run, Startup, TaskScore, TextAccuracy
from harness.stats import Distribution
from harness.verdict import Verdict
from harness.words import VerdictWord


def text_run(tok_s: float, *, requests: int = 8, ttft_s: float = 0.05, client_cpu_s: float = 0.1) -> Run:
    """One run whose output tok/s is exactly ``tok_s`` (over 4 s): ``requests`` streamed requests."""
    duration = 4.0
    total = round(tok_s * duration)
    per = [total // requests + (1 if i < total % requests else 0) for i in range(requests)]
    records = []
    for i, n in enumerate(per):
        sent = i * duration / requests
        step = (duration / requests - ttft_s) / max(n, 1)
        chunks = tuple(sent + ttft_s + k * step for k in range(n))
        records.append(
            RequestRecord(
                sent=sent, chunk_times=chunks, end=chunks[-1] if chunks else sent, output_tokens=n, chunk_count=n
            )
        )
    return summarize(records, duration, client_cpu_s=client_cpu_s)


def text_point(concurrency: int, *rates: float, client_cpu_s: float = 0.1) -> LoadPoint:
    """A concurrency point with one run per rate (repeats), aggregated as the load generator does."""
    return aggregate([text_run(r, client_cpu_s=client_cpu_s) for r in rates], mode="concurrency", target=concurrency)


def audio_point(concurrency: int, *rates: float, latency_ms: float = 1450.0, rtf: float = 0.5) -> LoadPoint:
    runs = [
        Run(
            rate=r,
            requests=8,
            completed=8,
            failed=0,
            duration_s=11.0,
            request_s=0.7,
            audio_s=22.3,
            distributions={
                "latency_ms": Distribution.of([latency_ms * concurrency] * 8),
                "rtf": Distribution.of([rtf * concurrency] * 8),
            },
        )
        for r in rates
    ]
    return LoadPoint.of(label=f"c={concurrency}", mode="concurrency", target=concurrency, unit=AUDIO_UNIT, runs=runs)


def sample(prompt: str, tokens: Sequence[str], tops: Sequence[dict[str, float]]) -> dict[str, object]:
    return {"prompt": prompt, "tokens": list(tokens), "top_logprobs": list(tops), "text": "".join(tokens)}


def greedy_agreement(
    ours: list[dict[str, object]], reference: list[dict[str, object]], ref_version: str
) -> tuple[list[Check], Agreement]:
    t = agreement.Thresholds(
        top_k=5,
        max_disagreeing_prompts=0,
        max_diverging_prompts=-1,
        min_divergence_position=0,
        prompt_logprob_tolerance=None,
    )
    return agreement.evaluate(ours, reference, ref_version, t)


def task_accuracy(correct: int, n: int, tasks: dict[str, tuple[int, int]] | None = None) -> TextAccuracy:
    def score(c: int, k: int) -> TaskScore:
        lo, hi = wilson(c, k)
        return TaskScore(correct=c, n=k, accuracy=c / k, wilson_low=lo, wilson_high=hi)

    return TextAccuracy(digest="d", overall=score(correct, n), tasks={t: score(*v) for t, v in (tasks or {}).items()})


def wer_accuracy(
    spoken: Sequence[str], heard: Sequence[str], ref_wer: float | None, *, is_reference: bool
) -> tuple[Check, object]:
    return stt.wer_check(spoken, heard, ref_wer, "ref", max_wer=0.5, tolerance=0.05, is_reference=is_reference)


def cell(
    version: str,
    *,
    backend: str = "vllm",
    model: str = "m",
    reference: bool = False,
    startup_s: float = 30.0,
    **fields: object,
) -> CellResult:
    c = CellResult(
        cell_id=f"{backend}_{version}-{model}-cpu",
        backend=backend,
        version=version,
        model=model,
        platform="cpu",
        is_reference=reference,
        **fields,  # type: ignore[arg-type]
    )
    c.startup["cold"] = Startup(seconds=startup_s)
    c.phases["startup"] = startup_s
    return c


def verdict(
    word: VerdictWord,
    ratio: float | None = None,
    low: float | None = None,
    high: float | None = None,
    *,
    version: str = "0.32.0",
    point: str = "c=1",
    metric: str = "output tok/s",
    margin: float = 0.05,
    rounds: int = 10,
    n: int = 10,
    **fields: object,
) -> Verdict:
    """A verdict of ``version`` against the deployed pin 0.31.0 from ``rounds`` paired rounds (0: cell by cell, on
    ``n`` requests a side)."""
    return Verdict(
        version=version,
        reference="0.31.0",
        model="m",
        point=point,
        metric=metric,
        ratio=ratio,
        low=low,
        high=high,
        n=n,
        n_reference=n,
        word=word,
        margin=margin,
        rounds=rounds,
        **fields,  # type: ignore[arg-type]
    )
