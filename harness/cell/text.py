"""Probes of text models (chat, completion, embedding): conformance, greedy samples and agreement with the
reference pin, task accuracy. Each is a function of ``Probing``; ``plans.py`` orders them per model kind."""

from __future__ import annotations

import dataclasses

from ..probes import accuracy, agreement, conformance, quality
from ..results import Agreement, Check, TextAccuracy
from ..serial import dump, load_record
from ..words import AgreementKind, ModelKind
from .context import timed
from .probing import Probing


def api_conformance(p: Probing) -> None:
    """The OpenAI API's shapes, limits and errors for the model's kind."""
    p.say("probing API conformance")
    with timed(p.result.probe_s, "conformance"), p.client() as client:
        p.result.checks += conformance.conformance(
            client,
            p.served_name,
            kind=p.model.kind,
            timings=p.result.conformance_s,
            normalized_embeddings=p.model.normalized_embeddings,
        )


def greedy_samples(p: Probing) -> None:
    """Greedy completions of fixed prompts with top-k logprobs (kept for agreement), and whether they loop."""
    w, t = p.workload, p.thresholds
    p.say(f"probing agreement ({w.agreement_prompts} greedy prompts, top-{t.top_logprobs} logprobs)")
    with timed(p.result.probe_s, "agreement"), p.client() as client:
        prompts = list(agreement.PROMPTS[: w.agreement_prompts])
        p.outputs["samples"] = agreement.greedy_samples(
            client, p.served_name, prompts, w.agreement_max_tokens, t.top_logprobs, concurrency=w.probe_concurrency
        )
    p.result.checks.append(quality.degeneration_check(p.outputs["samples"]))  # absolute: the reference pin too


def embedding_samples(p: Probing) -> None:
    w, t = p.workload, p.thresholds
    p.say(f"probing agreement ({w.agreement_prompts} greedy prompts, top-{t.top_logprobs} logprobs)")
    with timed(p.result.probe_s, "agreement"), p.client() as client:
        p.outputs["embeddings"] = agreement.embeddings(client, p.served_name)


def task_accuracy(p: Probing) -> None:
    """Seeded few-shot exact-answer items; gated against the reference pin by ``accuracy_gate``."""
    if not p.items:
        return
    acc = p.accuracy
    p.say(f"probing task accuracy ({len(p.items)} items: {', '.join(acc.tasks) or 'files'})")
    with timed(p.result.probe_s, "accuracy"):
        p.scored = accuracy.run(
            p.base_url,
            p.served_name,
            p.items,
            max_tokens=acc.max_tokens,
            concurrency=acc.concurrency,
            headers=p.headers,
        )
    p.outputs["accuracy"] = dump(p.scored)


def store_outputs(p: Probing) -> None:
    """This pin's outputs saved for the pins compared with it (the reference pin's are what the others read)."""
    p.save_outputs()


def uncompared(p: Probing) -> bool:
    """The cell has nothing to compare with (it is the reference, or the reference's outputs are missing):
    records why and returns True."""
    label = p.store.ref_label
    if p.result.is_baseline:
        p.result.agreement = Agreement(kind=AgreementKind.REFERENCE, reference_version=label)
        detail = "this is the reference pin; its outputs are stored for the others"
        p.result.checks.append(Check(group="agreement", name="agreement.reference", passed=True, detail=detail))
        return True
    if p.reference is None:
        # Not a disagreement, so the cell does not fail; but an unevaluated required check keeps
        # the pin from being recommended (see recommend._rejection).
        note = f"not compared: reference pin {label} has no stored outputs for these settings (run its cell first)"
        p.result.agreement = Agreement(kind=AgreementKind.NOT_COMPARED, reference_version=label, note="not compared")
        p.result.warnings.append(note)
        name = "agreement.transcripts" if p.model.kind is ModelKind.STT else "agreement.greedy"
        p.result.checks.append(Check(group="agreement", name=name, passed=None, detail=note))
        return True
    return False


def greedy_agreement(p: Probing) -> None:
    """vLLM's check_logprobs_close rule against the reference pin's greedy samples."""
    if uncompared(p):
        return
    assert p.reference is not None
    t = p.thresholds
    thresholds = agreement.Thresholds(
        top_k=t.top_logprobs,
        max_disagreeing_prompts=t.max_disagreeing_prompts,
        max_diverging_prompts=t.max_diverging_prompts,
        min_divergence_position=t.min_divergence_position,
        prompt_logprob_tolerance=t.prompt_logprob_tolerance,
    )
    ref_samples = p.reference["samples"]
    checks, p.result.agreement = agreement.evaluate(p.outputs["samples"], ref_samples, p.store.ref_label, thresholds)
    p.result.checks += checks


def embedding_agreement(p: Probing) -> None:
    """Cosine similarity with the reference pin's embeddings."""
    if uncompared(p):
        return
    assert p.reference is not None
    ours, label = p.outputs["embeddings"], p.store.ref_label
    p.result.checks.append(agreement.evaluate_embeddings(ours, p.reference["embeddings"], label))
    p.result.agreement = Agreement(kind=AgreementKind.EMBEDDINGS, reference_version=label, compared=len(ours))


def accuracy_gate(p: Probing) -> None:
    """Paired with the reference pin on the same items (McNemar), and the model's absolute floor."""
    scored = p.scored
    if scored is None:
        return
    stored = p.reference.get("accuracy") if p.reference else None
    ref_scored = load_record(TextAccuracy, stored) if stored else None
    tolerance = p.thresholds.accuracy_tolerance
    gate = accuracy.gate(scored, ref_scored, p.store.ref_label, tolerance, is_reference=p.result.is_baseline)
    p.result.checks.append(gate)
    p.result.accuracy = dataclasses.replace(scored, misses=scored.misses[:10])
    if p.model.min_accuracy is not None:
        p.result.checks.append(quality.floor_check(scored, p.model.min_accuracy))
