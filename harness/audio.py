"""Speech probes: speech-to-text (``/v1/audio/transcriptions``) and text-to-speech (``/v1/audio/speech``).

The speech an STT pin transcribes is made here with espeak-ng from seeded sentences, so the words spoken
are known exactly and every pin hears the same audio (cached in the data dir by sentence, voice and
speed). Scored by word error rate against the spoken text; conformance covers the ``response_format``
variants and errors, including servers that answer an error with HTTP 200 and a ``status_code`` in the
body (vox-box does). TTS answers are checked as audio (a WAV that parses, a duration that fits the text)
and, where an STT endpoint is given, transcribed back.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import random
import re
import shutil
import subprocess
import time
import wave
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from .checks import Check, Exchange, exchange
from .errors import HarnessError, ProbeError
from .metrics import Distribution, mean, percentile, t_critical_95

# Short everyday sentences with no digits or names (a transcript of "2" for "two" is not an error we
# want to score); several are Harvard sentences (IEEE 1969), written for speech tests.
SENTENCES = (
    "the quick brown fox jumps over the lazy dog",
    "the birch canoe slid on the smooth planks",
    "glue the sheet to the dark blue background",
    "it is easy to tell the depth of a well",
    "these days a chicken leg is a rare dish",
    "rice is often served in round bowls",
    "the juice of lemons makes fine punch",
    "the box was thrown beside the parked truck",
    "the hogs were fed chopped corn and garbage",
    "a large size in stockings is hard to sell",
    "the boy was there when the sun rose",
    "a rod is used to catch pink salmon",
    "the source of the huge river is the clear spring",
    "kick the ball straight and follow through",
    "help the woman get back to her feet",
    "a pot of tea helps to pass the evening",
    "smoky fires lack flame and heat",
    "the soft cushion broke the man's fall",
    "the salt breeze came across from the sea",
    "the girl at the booth sold fifty bonds",
    "the small pup gnawed a hole in the sock",
    "the fish twisted and turned on the bent hook",
    "press the pants and sew a button on the vest",
    "the swan dive was far short of perfect",
    "the beauty of the view stunned the young boy",
    "her purse was full of useless trash",
    "the colt reared and threw the tall rider",
    "it snowed and rained and hailed the same morning",
    "read verse out loud for pleasure",
    "hoist the load to your left shoulder",
)
RESPONSE_FORMATS = ("json", "text", "srt", "verbose_json", "vtt")
_SRT_CUE = re.compile(r"^\s*1\s*\n\d\d:\d\d:\d\d,\d\d\d --> \d\d:\d\d:\d\d,\d\d\d\s*\n\S", re.M)
_VTT_CUE = re.compile(r"^WEBVTT\b.*?\n\s*\n.*?\d\d:\d\d(:\d\d)?\.\d\d\d --> \d\d:\d\d(:\d\d)?\.\d\d\d", re.S)


@dataclass(frozen=True, kw_only=True)
class Clip:
    text: str
    path: Path
    duration_s: float

    @property
    def audio(self) -> bytes:
        return self.path.read_bytes()


# --- speech made here -------------------------------------------------------------------------


def espeak() -> str:
    found = shutil.which("espeak-ng")
    if found is None:
        raise HarnessError("espeak-ng is not on PATH: it makes the speech the STT probes transcribe (apt-get install espeak-ng)")
    return found


def espeak_version() -> str:
    out = subprocess.run([espeak(), "--version"], capture_output=True, text=True)
    return out.stdout.strip()


def pick_sentences(n: int, seed: int) -> list[tuple[str, int]]:
    """``n`` (sentence, words-per-minute) pairs, the same for the same seed."""
    rng = random.Random(seed)
    chosen = rng.sample(SENTENCES, k=min(n, len(SENTENCES)))
    return [(s, rng.choice((150, 160, 170))) for s in chosen]


def wav_duration(data: bytes) -> float:
    """Seconds of audio in a WAV; ValueError when it is not one."""
    try:
        with wave.open(io.BytesIO(data)) as w:
            if w.getnframes() <= 0 or w.getframerate() <= 0:
                raise ValueError("no audio frames")
            return w.getnframes() / w.getframerate()
    except (wave.Error, EOFError) as exc:
        raise ValueError(f"not a WAV file: {exc}") from exc


def make_clips(n: int, seed: int, cache_dir: Path, voice: str = "en-us") -> list[Clip]:
    """Speech for ``n`` seeded sentences, made once with espeak-ng and cached by text, voice and speed."""
    exe = espeak()
    cache_dir.mkdir(parents=True, exist_ok=True)
    clips = []
    for text, wpm in pick_sentences(n, seed):
        key = hashlib.sha256(json.dumps([text, voice, wpm]).encode()).hexdigest()[:16]
        path = cache_dir / f"{key}.wav"
        if not path.exists():
            tmp = path.with_name(f".{key}.{os.getpid()}.wav")  # parallel workers may make the same clip
            # argv only; the text goes in on stdin so nothing in it can read as an option
            proc = subprocess.run([exe, "-v", voice, "-s", str(wpm), "-w", str(tmp), "--stdin"], input=text, text=True,
                                  capture_output=True)  # fmt: skip
            if proc.returncode != 0 or not tmp.exists():
                raise HarnessError(f"espeak-ng failed for {text!r}: {(proc.stderr or proc.stdout).strip()[:200]}")
            tmp.replace(path)
        clips.append(Clip(text=text, path=path, duration_s=wav_duration(path.read_bytes())))
    return clips


# --- scoring ------------------------------------------------------------------------------------


def words(text: str) -> list[str]:
    """Lower-case words without punctuation (apostrophes kept inside words)."""
    return re.findall(r"[a-z0-9]+(?:'[a-z0-9]+)*", text.lower().replace("\u2019", "'"))


def edit_distance(a: Sequence[str], b: Sequence[str]) -> int:
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, start=1):
        cur = [i] + [0] * len(b)
        for j, y in enumerate(b, start=1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y))
        prev = cur
    return prev[-1]


def wer(references: Sequence[str], hypotheses: Sequence[str]) -> tuple[float, int, int]:
    """Corpus word error rate: (edits / reference words, edits, reference words)."""
    edits = sum(edit_distance(words(r), words(h)) for r, h in zip(references, hypotheses, strict=True))
    total = sum(len(words(r)) for r in references)
    return (edits / total if total else 0.0), edits, total


# --- conformance --------------------------------------------------------------------------------


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
    return exchange(client, "POST", "/v1/audio/transcriptions", form, files={"file": (clip.path.name, clip.audio, "audio/wav")})


def transcript(ex: Exchange) -> str | None:
    """The text of a json/verbose_json answer, or None when it is not a transcription."""
    if ex.status == 200 and isinstance(ex.data, dict) and isinstance(ex.data.get("text"), str) and error_in_200(ex) is None:
        return str(ex.data["text"])
    return None


def _format_problem(fmt: str, ex: Exchange, clip: Clip, plain: str) -> str:
    if ex.status != 200 or error_in_200(ex) is not None:
        return _problem(ex)
    body = ex.content.decode("utf-8", errors="replace")
    if fmt != "verbose_json" and ex.content_type.startswith("application/json"):
        return f"JSON-encoded (content-type {ex.content_type}), expected {fmt} as text/plain: {body[:160]}"
    if fmt == "text":
        return "" if words(body) == words(plain) else f"text {body.strip()[:120]!r} differs from the json answer {plain[:120]!r}"
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
        if not isinstance(start, int | float) or not isinstance(end, int | float) or not 0 <= start <= end <= clip.duration_s + 1.0:
            return f"segment times {start!r}..{end!r} outside 0..{clip.duration_s:.2f} s: {str(s)[:200]}"
    return ""


def stt_conformance(client: httpx.Client, model: str, clip: Clip) -> tuple[list[Check], str | None]:
    """Conformance checks, and the json transcript of ``clip`` (None when there is none)."""
    g = "conformance"
    checks = []
    first = transcribe(client, model, clip)
    plain = transcript(first)
    checks.append(_check(g, "stt.json", plain is not None and bool(words(plain)),
                         f"text {plain[:120]!r}" if plain is not None else _problem(first), first, actual=first.data))  # fmt: skip
    for fmt in RESPONSE_FORMATS[1:]:
        ex = transcribe(client, model, clip, fmt)
        problem = _format_problem(fmt, ex, clip, plain or "")
        checks.append(_check(g, f"stt.response_format.{fmt}", not problem, problem or f"valid {fmt}", ex,
                             actual=ex.content.decode("utf-8", errors="replace")))  # fmt: skip
    again = transcribe(client, model, clip)
    same = transcript(again)
    checks.append(_check(g, "stt.deterministic", None if plain is None else same == plain,
                         "same clip twice at temperature 0: " + ("identical" if same == plain else f"{plain!r} then {same!r}"),
                         again))  # fmt: skip
    # Errors: a 4xx status is the API's contract; an error inside an HTTP 200 breaks every client
    # that checks the status.
    cases = [
        ("stt.error.unknown_response_format", lambda: transcribe(client, model, clip, "bogus-format")),
        ("stt.error.not_audio", lambda: exchange(client, "POST", "/v1/audio/transcriptions", {"model": model},
                                                 files={"file": ("notes.wav", b"this is not audio", "audio/wav")})),  # fmt: skip
        ("stt.error.missing_file", lambda: exchange(client, "POST", "/v1/audio/transcriptions", {"model": model}, files={})),
    ]
    for name, send in cases:
        ex = send()
        code = error_in_200(ex)
        if code is not None:
            detail = f"error returned as HTTP 200 with status_code {code} in the body (expected an HTTP 4xx)"
        else:
            detail = f"HTTP {ex.status}" + ("" if 400 <= ex.status < 500 else " (expected 4xx)")
        checks.append(_check(g, name, 400 <= ex.status < 500, detail, ex, actual=ex.data))
    after = transcribe(client, model, clip)
    checks.append(_check(g, "stt.error.server_keeps_serving", transcript(after) is not None,
                         f"a good request after the bad ones -> {_problem(after) if transcript(after) is None else 'transcribed'}",
                         after))  # fmt: skip
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


def wer_check(texts: Sequence[str], hyps: Sequence[str], ref_wer: float | None, ref_version: str, *, max_wer: float,
              tolerance: float, is_reference: bool) -> tuple[Check, dict[str, Any]]:  # fmt: skip
    """WER against the spoken text: under ``max_wer``, and no worse than the reference pin's + tolerance."""
    rate, edits, total = wer(texts, hyps)
    per: list[dict[str, Any]] = [{"spoken": t, "heard": h, "edits": edit_distance(words(t), words(h))}
                                  for t, h in zip(texts, hyps, strict=True)]  # fmt: skip
    summary: dict[str, Any] = {"wer": rate, "edits": edits, "words": total, "clips": len(texts), "per_clip": per}
    detail = f"WER {rate:.1%} ({edits} edits in {total} words, {len(texts)} clips)"
    ok = rate <= max_wer
    if not ok:
        detail += f" > max {max_wer:.0%}"
    elif not is_reference and ref_wer is not None:
        ok = rate <= ref_wer + tolerance
        detail += f"; reference {ref_version}: {ref_wer:.1%}" + ("" if ok else f" (worse by more than {tolerance:.0%})")
    elif not is_reference:
        detail += f"; not compared: reference {ref_version} has no stored WER"
    summary["reference_wer"] = ref_wer
    return _check("accuracy", "accuracy.wer", ok, detail, worst=sorted(per, key=lambda p: -p["edits"])[:3]), summary


def transcript_agreement(ours: Sequence[str], theirs: Sequence[str], ref_version: str, max_differing: int) -> tuple[Check, dict[str, Any]]:
    """Transcripts vs the reference pin's, clip by clip (the same audio, greedy decoding)."""
    differ = [i for i, (a, b) in enumerate(zip(ours, theirs, strict=True)) if words(a) != words(b)]
    rate, _, _ = wer(theirs, ours)
    summary: dict[str, Any] = {"reference_version": ref_version, "clips": len(ours), "identical": len(ours) - len(differ),
               "differ": len(differ), "wer_vs_reference": rate,
               "per_clip": [{"ours": ours[i], "reference": theirs[i]} for i in differ]}  # fmt: skip
    ok = len(differ) <= max_differing
    detail = f"{len(ours) - len(differ)}/{len(ours)} transcripts identical to {ref_version}'s (WER between them {rate:.1%})"
    return _check("agreement", "agreement.transcripts", ok, detail, differing=summary["per_clip"][:3]), summary


# --- text to speech -----------------------------------------------------------------------------


def synthesize(client: httpx.Client, model: str, text: str, voice: str) -> Exchange:
    return exchange(client, "POST", "/v1/audio/speech", {"model": model, "input": text, "voice": voice, "response_format": "wav"})


def tts_checks(client: httpx.Client, model: str, voice: str, texts: Sequence[str],
               stt: Callable[[bytes], str] | None = None) -> tuple[list[Check], list[str]]:  # fmt: skip
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
        checks.append(_check("conformance", f"tts.duration[{i}]", 0.5 <= rate <= 6.0,
                             f"{len(words(text))} words in {seconds:.2f} s = {rate:.1f} words/s (speech is 0.5-6)", ex))  # fmt: skip
        if stt is not None:
            heard.append(stt(ex.content))
    if stt is not None and heard and len(heard) == len(texts):
        rate, edits, total = wer(texts, heard)
        checks.append(_check("accuracy", "tts.round_trip_wer", rate <= 0.5,
                             f"TTS then STT: WER {rate:.1%} ({edits} edits in {total} words)", heard=heard[:3]))  # fmt: skip
    elif stt is None:
        checks.append(_check("accuracy", "tts.round_trip_wer", None, "not evaluated: no STT endpoint given (model stt_url)"))
    ex = synthesize(client, model, "", voice)
    code = error_in_200(ex)
    detail = (f"error returned as HTTP 200 with status_code {code} in the body (expected an HTTP 4xx)" if code is not None
              else f"empty input -> HTTP {ex.status}" + ("" if 400 <= ex.status < 500 else " (expected 4xx)"))  # fmt: skip
    checks.append(_check("conformance", "tts.error.empty_input", 400 <= ex.status < 500, detail, ex, actual=ex.data))
    return checks, heard


def remote_stt(base_url: str, model: str, timeout: float = 120.0) -> Callable[[bytes], str]:
    """Transcribe WAV bytes with an OpenAI-compatible STT endpoint (the TTS round trip)."""

    def run(audio: bytes) -> str:
        with httpx.Client(base_url=base_url, timeout=timeout) as c:
            ex = exchange(c, "POST", "/v1/audio/transcriptions", {"model": model, "response_format": "json", "temperature": "0"},
                          files={"file": ("speech.wav", audio, "audio/wav")})  # fmt: skip
        text = transcript(ex)
        if text is None:
            raise ProbeError(f"round-trip STT at {base_url}: {_problem(ex)}")
        return text

    return run


# --- load: latency and real-time factor under concurrency ---------------------------------------

Send = Callable[[httpx.AsyncClient, int], Awaitable[float]]  # request i -> seconds of audio it covered


async def _level(base_url: str, send: Send, n: int, concurrency: int, timeout_s: float) -> dict[str, Any]:
    latencies: list[float] = []
    rtfs: list[float] = []
    audio_s = 0.0
    errors: list[str] = []
    queue = iter(range(n))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async with httpx.AsyncClient(base_url=base_url, timeout=timeout_s, limits=limits) as client:

        async def worker() -> None:
            nonlocal audio_s
            for i in queue:
                t0 = time.perf_counter()
                try:
                    seconds = await send(client, i)
                except (httpx.HTTPError, ValueError, ProbeError) as exc:
                    errors.append(f"{type(exc).__name__}: {str(exc)[:200]}")
                    continue
                took = time.perf_counter() - t0
                latencies.append(took * 1000)
                rtfs.append(took / seconds if seconds > 0 else float("nan"))
                audio_s += seconds

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - start
    return {"requests": n, "completed": len(latencies), "failed": len(errors), "errors": sorted(set(errors))[:5],
            "duration_s": wall, "audio_s": audio_s, "audio_s_per_s": audio_s / wall if wall > 0 else 0.0,
            "request_s": len(latencies) / wall if wall > 0 else 0.0, "latency_ms": Distribution.of(latencies).to_dict(),
            "rtf": Distribution.of([r for r in rtfs if r == r]).to_dict()}  # fmt: skip


def run_levels(base_url: str, send: Send, *, concurrency: Sequence[int], requests: int, repeats: int, warmup: int = 1,
               timeout_s: float = 300.0, on_point: Callable[[dict[str, Any]], None] = lambda _: None) -> list[dict[str, Any]]:  # fmt: skip
    """One point per concurrency: the median repeat's figures, every repeat, and the spread of audio s/s."""
    if warmup:
        asyncio.run(_level(base_url, send, warmup, 1, timeout_s))
    points = []
    for c in concurrency:
        reps = [asyncio.run(_level(base_url, send, requests, c, timeout_s)) for _ in range(repeats)]
        values = [r["audio_s_per_s"] for r in reps]
        median_rep = sorted(reps, key=lambda r: r["audio_s_per_s"])[(len(reps) - 1) // 2]
        point = {"label": f"c={c}", "mode": "concurrency", "target": c, **median_rep, "repeats": reps,
                 "audio_s_per_s_all": values, "audio_s_per_s_median": percentile(values, 50), "audio_s_per_s_ci95": None,
                 "saturated": False, "saturation_reason": ""}  # fmt: skip
        if len(values) >= 2:
            m = mean(values)
            sd = (sum((v - m) ** 2 for v in values) / (len(values) - 1)) ** 0.5
            half = t_critical_95(len(values) - 1) * sd / len(values) ** 0.5
            point["audio_s_per_s_ci95"] = [m - half, m + half]
        on_point(point)
        points.append(point)
    return points


def stt_sender(model: str, clips: Sequence[Clip]) -> Send:
    blobs = [(c.path.name, c.audio, c.duration_s) for c in clips]

    async def send(client: httpx.AsyncClient, i: int) -> float:
        name, blob, seconds = blobs[i % len(blobs)]
        # the same form as the scored transcriptions (language given: no detection pass)
        form = {"model": model, "response_format": "json", "temperature": "0", "language": "en"}
        resp = await client.post("/v1/audio/transcriptions", data=form, files={"file": (name, blob, "audio/wav")})
        resp.raise_for_status()
        data = resp.json()
        if not isinstance(data, dict) or not isinstance(data.get("text"), str):
            raise ValueError(f"not a transcription: {str(data)[:200]}")
        return seconds

    return send


def tts_sender(model: str, voice: str, texts: Sequence[str]) -> Send:
    async def send(client: httpx.AsyncClient, i: int) -> float:
        resp = await client.post("/v1/audio/speech", json={"model": model, "input": texts[i % len(texts)], "voice": voice,
                                                           "response_format": "wav"})  # fmt: skip
        resp.raise_for_status()
        return wav_duration(resp.content)

    return send
