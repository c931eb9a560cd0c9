"""Speech-to-text probes (``/v1/audio/transcriptions``): conformance of every ``response_format`` and of
errors, including servers that answer an error with HTTP 200 and a ``status_code`` in the body (vox-box
does); transcripts scored by WER against the spoken text and compared with the reference pin's."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

import httpx

from ..errors import ProbeError
from ..results import Agreement, Check, ClipScore, ItemAgreement, SpeechAccuracy
from ..serial import dump
from ..words import AgreementKind
from .checks import Exchange, exchange
from .speech import Clip
from .wer import edit_distance, wer, words

RESPONSE_FORMATS = ("json", "text", "srt", "verbose_json", "vtt")
_SRT_CUE = re.compile(r"^\s*1\s*\n\d\d:\d\d:\d\d,\d\d\d --> \d\d:\d\d:\d\d,\d\d\d\s*\n\S", re.M)
_VTT_CUE = re.compile(r"^WEBVTT\b.*?\n\s*\n.*?\d\d:\d\d(:\d\d)?\.\d\d\d --> \d\d:\d\d(:\d\d)?\.\d\d\d", re.S)


def _check(group: str, name: str, ok: bool | None, detail: str, ex: Exchange | None = None, **evidence: Any) -> Check:
    ev: dict[str, Any] = {}
    if ex is not None:
        ev["request"], ev["status"] = ex.request, ex.status
    ev.update(evidence)
    return Check(group=group, name=name, passed=ok, detail=detail, evidence=ev)


def error_in_200(ex: Exchange) -> int | None:
    """The error status a server put in the body of an HTTP 200 (``{"status_code": 400, ...}``), if any."""
    if ex.status == 200 and isinstance(ex.data, dict):
        code = ex.data.get("status_code")
        if isinstance(code, int) and code >= 400:
            return code
        if "error" in ex.data and "text" not in ex.data:
            return 500
    return None


def _problem(ex: Exchange) -> str:
    if (code := error_in_200(ex)) is not None:
        return f"HTTP 200 carrying an error (status_code {code}): {str(ex.data)[:200]}"
    return f"HTTP {ex.status}: {str(ex.data)[:200]}"


def transcribe(client: httpx.Client, model: str, clip: Clip, response_format: str = "json", **fields: str) -> Exchange:
    form = {"model": model, "response_format": response_format, "temperature": "0", "language": "en", **fields}
    return exchange(
        client, "POST", "/v1/audio/transcriptions", form, files={"file": (clip.path.name, clip.audio, "audio/wav")}
    )


def transcript(ex: Exchange) -> str | None:
    """The text of a json/verbose_json answer, or None when it is not a transcription."""
    if (
        ex.status == 200
        and isinstance(ex.data, dict)
        and isinstance(ex.data.get("text"), str)
        and error_in_200(ex) is None
    ):
        return str(ex.data["text"])
    return None


def _format_problem(fmt: str, ex: Exchange, clip: Clip, plain: str) -> str:
    if ex.status != 200 or error_in_200(ex) is not None:
        return _problem(ex)
    body = ex.content.decode("utf-8", errors="replace")
    if fmt != "verbose_json" and ex.content_type.startswith("application/json"):
        return f"JSON-encoded (content-type {ex.content_type}), expected {fmt} as text/plain: {body[:160]}"
    if fmt == "text":
        return (
            ""
            if words(body) == words(plain)
            else f"text {body.strip()[:120]!r} differs from the json answer {plain[:120]!r}"
        )
    if fmt == "srt":
        return "" if _SRT_CUE.search(body) else f"not SRT (no '1' cue with 00:00:00,000 --> timing): {body[:200]!r}"
    if fmt == "vtt":
        return "" if _VTT_CUE.search(body) else f"not WebVTT (no WEBVTT header and a cue timing): {body[:200]!r}"
    d = ex.data if isinstance(ex.data, dict) else {}
    segments = d.get("segments")
    if not isinstance(d.get("text"), str):
        return f"no text field: {body[:200]}"
    if not isinstance(segments, list) or not segments:
        return f"no segments list: {body[:200]}"
    for s in segments:
        start, end = (s.get("start"), s.get("end")) if isinstance(s, dict) else (None, None)
        if (
            not isinstance(start, int | float)
            or not isinstance(end, int | float)
            or not 0 <= start <= end <= clip.duration_s + 1.0
        ):
            return f"segment times {start!r}..{end!r} outside 0..{clip.duration_s:.2f} s: {str(s)[:200]}"
    return ""


def _error_checks(client: httpx.Client, model: str, clip: Clip) -> list[Check]:
    """A 4xx status is the API's contract; an error inside an HTTP 200 breaks every client that checks the
    status."""
    not_audio = {"file": ("notes.wav", b"this is not audio", "audio/wav")}
    cases: list[tuple[str, Callable[[], Exchange]]] = [
        ("stt.error.unknown_response_format", lambda: transcribe(client, model, clip, "bogus-format")),
        (
            "stt.error.not_audio",
            lambda: exchange(client, "POST", "/v1/audio/transcriptions", {"model": model}, files=not_audio),
        ),
        (
            "stt.error.missing_file",
            lambda: exchange(client, "POST", "/v1/audio/transcriptions", {"model": model}, files={}),
        ),
    ]
    checks = []
    for name, send in cases:
        ex = send()
        code = error_in_200(ex)
        if code is not None:
            detail = f"error returned as HTTP 200 with status_code {code} in the body (expected an HTTP 4xx)"
        else:
            detail = f"HTTP {ex.status}" + ("" if 400 <= ex.status < 500 else " (expected 4xx)")
        checks.append(_check("conformance", name, 400 <= ex.status < 500, detail, ex, actual=ex.data))
    return checks


def stt_conformance(client: httpx.Client, model: str, clip: Clip) -> tuple[list[Check], str | None]:
    """Conformance checks, and the json transcript of ``clip`` (None when there is none)."""
    g = "conformance"
    checks = []
    first = transcribe(client, model, clip)
    plain = transcript(first)
    checks.append(
        _check(
            g,
            "stt.json",
            plain is not None and bool(words(plain)),
            f"text {plain[:120]!r}" if plain is not None else _problem(first),
            first,
            actual=first.data,
        )
    )
    for fmt in RESPONSE_FORMATS[1:]:
        ex = transcribe(client, model, clip, fmt)
        problem = _format_problem(fmt, ex, clip, plain or "")
        checks.append(
            _check(
                g,
                f"stt.response_format.{fmt}",
                not problem,
                problem or f"valid {fmt}",
                ex,
                actual=ex.content.decode("utf-8", errors="replace"),
            )
        )
    again = transcribe(client, model, clip)
    same = transcript(again)
    checks.append(
        _check(
            g,
            "stt.deterministic",
            None if plain is None else same == plain,
            "same clip twice at temperature 0: " + ("identical" if same == plain else f"{plain!r} then {same!r}"),
            again,
        )
    )
    checks += _error_checks(client, model, clip)
    after = transcribe(client, model, clip)
    checks.append(
        _check(
            g,
            "stt.error.server_keeps_serving",
            transcript(after) is not None,
            f"a good request after the bad ones -> {_problem(after) if transcript(after) is None else 'transcribed'}",
            after,
        )
    )
    return checks, plain


def transcribe_all(client: httpx.Client, model: str, clips: Sequence[Clip]) -> list[str]:
    out = []
    for clip in clips:
        ex = transcribe(client, model, clip)
        text = transcript(ex)
        if text is None:
            raise ProbeError(f"transcription of {clip.text!r} failed: {_problem(ex)}")
        out.append(text)
    return out


def wer_check(
    texts: Sequence[str],
    hyps: Sequence[str],
    ref_wer: float | None,
    ref_version: str,
    *,
    max_wer: float,
    tolerance: float,
    is_reference: bool,
) -> tuple[Check, SpeechAccuracy]:
    """WER against the spoken text: under ``max_wer``, and no worse than the reference pin's + tolerance."""
    rate, edits, total = wer(texts, hyps)
    per = tuple(
        ClipScore(spoken=t, heard=h, edits=edit_distance(words(t), words(h))) for t, h in zip(texts, hyps, strict=True)
    )
    summary = SpeechAccuracy(wer=rate, edits=edits, words=total, clips=len(texts), per_clip=per, reference_wer=ref_wer)
    detail = f"WER {rate:.1%} ({edits} edits in {total} words, {len(texts)} clips)"
    ok = rate <= max_wer
    if not ok:
        detail += f" > max {max_wer:.0%}"
    elif not is_reference and ref_wer is not None:
        ok = rate <= ref_wer + tolerance
        detail += f"; reference {ref_version}: {ref_wer:.1%}" + ("" if ok else f" (worse by more than {tolerance:.0%})")
    elif not is_reference:
        detail += f"; not compared: reference {ref_version} has no stored WER"
    worst = [dump(p) for p in sorted(per, key=lambda p: -p.edits)[:3]]
    return _check("accuracy", "accuracy.wer", ok, detail, worst=worst), summary


def transcript_agreement(
    ours: Sequence[str], theirs: Sequence[str], ref_version: str, max_differing: int
) -> tuple[Check, Agreement]:
    """Transcripts vs the reference pin's, clip by clip (the same audio, greedy decoding)."""
    differ = [i for i, (a, b) in enumerate(zip(ours, theirs, strict=True)) if words(a) != words(b)]
    rate, _, _ = wer(theirs, ours)
    items = tuple(
        ItemAgreement(prompt=f"clip {i}", identical=False, ours_text=ours[i], reference_text=theirs[i]) for i in differ
    )
    summary = Agreement(
        kind=AgreementKind.TRANSCRIPTS,
        reference_version=ref_version,
        compared=len(ours),
        identical=len(ours) - len(differ),
        differ=len(differ),
        wer_vs_reference=rate,
        items=items,
    )
    ok = len(differ) <= max_differing
    detail = (
        f"{len(ours) - len(differ)}/{len(ours)} transcripts identical to {ref_version}'s (WER between them {rate:.1%})"
    )
    differing = [{"ours": x.ours_text, "reference": x.reference_text} for x in items[:3]]
    return _check("agreement", "agreement.transcripts", ok, detail, differing=differing), summary
