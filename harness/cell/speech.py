"""Probes of speech models: speech to text (conformance, WER against the spoken text and the reference pin,
transcript agreement) and text to speech (valid audio, the round trip through an STT server)."""

from __future__ import annotations

from ..probes import speech, stt, tts
from ..probes.wer import edit_distance, wer, words
from ..results import ClipScore, SpeechAccuracy
from .probing import Probing
from .text import uncompared

SPEECH_TIMEOUT_S = 300.0  # a transcription of several clips on a CPU takes minutes, not a text request's seconds


def speech_clips(p: Probing) -> None:
    """Seeded sentences spoken by espeak-ng, cached in the data dir: every pin hears the same audio."""
    w = p.workload
    p.say(f"making speech: {w.speech_clips} seeded sentences with espeak-ng (seed {w.seed})")
    p.clips = speech.make_clips(w.speech_clips, w.seed, p.ctx.paths.data_dir / "audio" / "espeak")
    seconds = sum(c.duration_s for c in p.clips)
    p.result.notes["speech"] = f"{speech.espeak_version()}; {len(p.clips)} clips, {seconds:.2f} s of audio"


def stt_conformance(p: Probing) -> None:
    p.say(f"probing API conformance (transcriptions: {', '.join(stt.RESPONSE_FORMATS)}, errors)")
    with p.client(SPEECH_TIMEOUT_S) as client:
        checks, _ = stt.stt_conformance(client, p.served_name, p.clips[0])
    p.result.checks += checks


def transcripts(p: Probing) -> None:
    """Every clip transcribed, scored by word error rate against the spoken text and the reference pin's."""
    t, clips = p.thresholds, p.clips
    p.say(f"transcribing {len(clips)} clips ({sum(c.duration_s for c in clips):.1f} s of speech)")
    with p.client(SPEECH_TIMEOUT_S) as client:
        heard = stt.transcribe_all(client, p.served_name, clips)
    p.outputs["transcripts"] = heard
    texts = [c.text for c in clips]
    ref_wer = wer(texts, p.reference["transcripts"])[0] if p.reference else None
    check, p.result.accuracy = stt.wer_check(
        texts,
        heard,
        ref_wer,
        p.store.ref_label,
        max_wer=t.max_wer,
        tolerance=t.wer_tolerance,
        is_reference=p.result.is_baseline,
    )
    p.result.checks.append(check)


def transcript_agreement(p: Probing) -> None:
    """Transcripts identical to the reference pin's, clip by clip."""
    if uncompared(p):
        return
    assert p.reference is not None
    check, p.result.agreement = stt.transcript_agreement(
        p.outputs["transcripts"], p.reference["transcripts"], p.store.ref_label, p.thresholds.max_disagreeing_prompts
    )
    p.result.checks.append(check)


def synthesis(p: Probing) -> None:
    """Valid audio of a plausible length, bad input refused, and the round trip through an STT server where
    the model names one."""
    model = p.model
    texts = speech_texts(p)
    stt_fn = tts.remote_stt(model.stt_url, model.stt_model) if model.stt_url else None
    round_trip = f", round trip through {model.stt_url}" if stt_fn else ""
    p.say(f"probing speech synthesis ({len(texts)} sentences, voice {model.voice!r}){round_trip}")
    with p.client(SPEECH_TIMEOUT_S) as client:
        checks, heard = tts.tts_checks(client, p.served_name, model.voice, texts, stt_fn)
    p.result.checks += checks
    if heard:
        rate, edits, total = wer(texts, heard)
        per = tuple(
            ClipScore(spoken=a, heard=b, edits=edit_distance(words(a), words(b)))
            for a, b in zip(texts, heard, strict=True)
        )
        p.result.accuracy = SpeechAccuracy(wer=rate, edits=edits, words=total, clips=len(texts), per_clip=per)


def speech_texts(p: Probing) -> list[str]:
    w = p.workload
    return [s for s, _ in speech.pick_sentences(w.speech_clips, w.seed)]
