"""Speech made here: seeded sentences spoken by espeak-ng, so the words are known exactly and every pin
hears the same audio (cached in the data dir by sentence, voice and speed)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import shutil
import subprocess
import wave
from dataclasses import dataclass
from pathlib import Path

from ..errors import HarnessError

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


@dataclass(frozen=True, kw_only=True)
class Clip:
    text: str
    path: Path
    duration_s: float

    @property
    def audio(self) -> bytes:
        return self.path.read_bytes()


def espeak() -> str:
    found = shutil.which("espeak-ng")
    if found is None:
        raise HarnessError(
            "espeak-ng is not on PATH: it makes the speech the STT probes transcribe (apt-get install espeak-ng)"
        )
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
            return float(w.getnframes() / w.getframerate())
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
            proc = subprocess.run(
                [exe, "-v", voice, "-s", str(wpm), "-w", str(tmp), "--stdin"],
                input=text,
                text=True,
                capture_output=True,
            )
            if proc.returncode != 0 or not tmp.exists():
                raise HarnessError(f"espeak-ng failed for {text!r}: {(proc.stderr or proc.stdout).strip()[:200]}")
            tmp.replace(path)
        clips.append(Clip(text=text, path=path, duration_s=wav_duration(path.read_bytes())))
    return clips
