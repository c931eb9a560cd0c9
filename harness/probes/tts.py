"""Text-to-speech probes (``/v1/audio/speech``): a WAV that parses, a duration that fits the words, bad
input refused, and, where an STT endpoint is given, the speech transcribed back and scored."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import httpx

from ..errors import ProbeError
from ..results import Check
from .checks import Exchange, exchange
from .speech import wav_duration
from .stt import _check, _problem, error_in_200, transcript
from .wer import wer, words


def synthesize(client: httpx.Client, model: str, text: str, voice: str) -> Exchange:
    return exchange(
        client, "POST", "/v1/audio/speech", {"model": model, "input": text, "voice": voice, "response_format": "wav"}
    )


def tts_checks(
    client: httpx.Client, model: str, voice: str, texts: Sequence[str], stt: Callable[[bytes], str] | None = None
) -> tuple[list[Check], list[str]]:
    """Valid audio, a duration that fits the words, bad input refused, and (with ``stt``) the round trip."""
    checks: list[Check] = []
    heard: list[str] = []
    for i, text in enumerate(texts):
        ex = synthesize(client, model, text, voice)
        try:
            if ex.status != 200 or error_in_200(ex) is not None:
                raise ValueError(_problem(ex))
            seconds = wav_duration(ex.content)
        except ValueError as exc:
            checks.append(_check("conformance", f"tts.audio[{i}]", False, str(exc), ex, content_type=ex.content_type))
            continue
        what = f"{seconds:.2f} s of WAV ({ex.content_type or 'no content-type'})"
        checks.append(_check("conformance", f"tts.audio[{i}]", True, what, ex))
        rate = len(words(text)) / seconds
        checks.append(
            _check(
                "conformance",
                f"tts.duration[{i}]",
                0.5 <= rate <= 6.0,
                f"{len(words(text))} words in {seconds:.2f} s = {rate:.1f} words/s (speech is 0.5-6)",
                ex,
            )
        )
        if stt is not None:
            heard.append(stt(ex.content))
    if stt is not None and heard and len(heard) == len(texts):
        rate, edits, total = wer(texts, heard)
        checks.append(
            _check(
                "accuracy",
                "tts.round_trip_wer",
                rate <= 0.5,
                f"TTS then STT: WER {rate:.1%} ({edits} edits in {total} words)",
                heard=heard[:3],
            )
        )
    elif stt is None:
        checks.append(
            _check("accuracy", "tts.round_trip_wer", None, "not evaluated: no STT endpoint given (model stt_url)")
        )
    ex = synthesize(client, model, "", voice)
    code = error_in_200(ex)
    detail = (
        f"error returned as HTTP 200 with status_code {code} in the body (expected an HTTP 4xx)"
        if code is not None
        else f"empty input -> HTTP {ex.status}" + ("" if 400 <= ex.status < 500 else " (expected 4xx)")
    )
    checks.append(_check("conformance", "tts.error.empty_input", 400 <= ex.status < 500, detail, ex, actual=ex.data))
    return checks, heard


def remote_stt(base_url: str, model: str, timeout: float = 120.0) -> Callable[[bytes], str]:
    """Transcribe WAV bytes with an OpenAI-compatible STT endpoint (the TTS round trip)."""

    def run(audio: bytes) -> str:
        with httpx.Client(base_url=base_url, timeout=timeout) as c:
            ex = exchange(
                c,
                "POST",
                "/v1/audio/transcriptions",
                {"model": model, "response_format": "json", "temperature": "0"},
                files={"file": ("speech.wav", audio, "audio/wav")},
            )
        text = transcript(ex)
        if text is None:
            raise ProbeError(f"round-trip STT at {base_url}: {_problem(ex)}")
        return text

    return run
