from __future__ import annotations

import io
import wave
from pathlib import Path

import pytest

from harness.errors import HarnessError
from harness.probes import speech, stt, wer
from harness.probes.checks import Exchange


def _wav(seconds: float, rate: int = 16000) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"\0\0" * int(seconds * rate))
    return out.getvalue()


def test_wer_ignores_case_and_punctuation_and_counts_edits() -> None:
    assert wer.wer(["the cat sat"], ["The cat, sat!"]) == (0.0, 0, 3)
    assert wer.wer(["a b c d"], ["a x c"]) == (0.5, 2, 4)  # one substitution, one deletion
    assert wer.wer(["the man's fall"], ["The man\u2019s fault."]) == (1 / 3, 1, 3)
    assert wer.words("the cold-reared, colt") == ["the", "cold", "reared", "colt"]


def test_error_in_200_is_found_only_in_200s() -> None:
    assert stt.error_in_200(Exchange("POST", "/x", {}, 200, {"status_code": 400, "detail": "bad"})) == 400
    assert stt.error_in_200(Exchange("POST", "/x", {}, 200, {"text": "fine"})) is None
    assert stt.error_in_200(Exchange("POST", "/x", {}, 400, {"status_code": 400})) is None


@pytest.mark.parametrize(
    ("fmt", "body", "ctype", "problem"),
    [
        ("srt", "1\n00:00:00,000 --> 00:00:02,500\nThe cat sat.\n", "text/plain", ""),
        ("srt", "The cat sat.", "text/plain", "not SRT"),
        ("vtt", "WEBVTT\n\n00:00.000 --> 00:02.500\nThe cat sat.\n", "text/plain", ""),
        ("vtt", "00:00.000 --> 00:02.500\nThe cat sat.\n", "text/plain", "not WebVTT"),
        ("text", "The cat sat.\n", "text/plain; charset=utf-8", ""),
        ("text", '"The cat sat."', "application/json", "JSON-encoded (content-type application/json)"),
        ("text", "The dog sat.", "text/plain", "text 'The dog sat.' differs from the json answer"),
    ],
)
def test_response_format_shapes(fmt: str, body: str, ctype: str, problem: str, tmp_path: Path) -> None:
    clip = speech.Clip(text="the cat sat", path=tmp_path / "c.wav", duration_s=2.5)
    ex = Exchange("POST", "/v1/audio/transcriptions", {}, 200, body, body.encode(), ctype)
    got = stt._format_problem(fmt, ex, clip, "The cat sat.")
    assert got.startswith(problem) if problem else got == "", got


def test_verbose_json_segments_must_fit_the_clip(tmp_path: Path) -> None:
    clip = speech.Clip(text="the cat sat", path=tmp_path / "c.wav", duration_s=2.0)
    good = {"text": "The cat sat.", "segments": [{"start": 0.0, "end": 1.9}]}
    bad = {"text": "The cat sat.", "segments": [{"start": 0.0, "end": 9.0}]}
    assert (
        stt._format_problem("verbose_json", Exchange("POST", "/", {}, 200, good, b"{}", "application/json"), clip, "")
        == ""
    )
    got = stt._format_problem("verbose_json", Exchange("POST", "/", {}, 200, bad, b"{}", "application/json"), clip, "")
    assert got.startswith("segment times 0.0..9.0 outside 0..2.00 s")


def test_wav_duration_and_not_a_wav() -> None:
    assert speech.wav_duration(_wav(1.5)) == pytest.approx(1.5)
    with pytest.raises(ValueError, match="not a WAV file"):
        speech.wav_duration(b"ID3 an mp3")


def test_sentences_are_seeded() -> None:
    assert speech.pick_sentences(5, 1) == speech.pick_sentences(5, 1) != speech.pick_sentences(5, 2)
    assert all(not any(ch.isdigit() for ch in s) for s in speech.SENTENCES)  # digits make WER ambiguous


def test_missing_espeak_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(HarnessError, match=r"^espeak-ng is not on PATH: .*\(apt-get install espeak-ng\)$"):
        speech.make_clips(2, 0, tmp_path / "clips")


def test_wer_gate_against_the_reference() -> None:
    check, summary = stt.wer_check(
        ["a b c d"], ["a b c x"], 0.0, "1.0", max_wer=0.5, tolerance=0.05, is_reference=False
    )
    assert check.passed is False and "worse by more than 5%" in check.detail and summary.wer == 0.25
    check, _ = stt.wer_check(["a b c d"], ["a b c x"], 0.25, "1.0", max_wer=0.5, tolerance=0.05, is_reference=False)
    assert check.passed is True
    check, _ = stt.wer_check(["a b"], ["x y"], None, "1.0", max_wer=0.5, tolerance=0.05, is_reference=True)
    assert check.passed is False and check.detail.endswith("> max 50%")
