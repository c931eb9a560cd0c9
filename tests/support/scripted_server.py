"""A tiny scripted OpenAI-compatible server for tests: behaves well, or misbehaves one way at a time.

    python scripted_server.py --host 127.0.0.1 --port N [--mode MODE] [--pid-file F] [--answers F]

A test double for fault injection, never a backend. Modes:
  ok               behaves like a small, well-behaved model (default)
  exit             exits 3 at start            hang        never becomes ready
  slow-ready:<s>   503 on /v1/models for <s> s child       forks a child that ignores SIGINT
  wrong-usage      usage totals off by one     stop-ignored  `stop` strings are not honoured
  stream-differs   streamed text differs from non-streamed
  special-tokens   chat replies leak <|im_start|>
  error-500        malformed requests get HTTP 500
  diverge          one agreement prompt diverges outside the top-k
  dumb             answers half of the accuracy items wrong
  degenerate       greedy text loops (" France France France ...")
  wrong-counters   /metrics counts one generated token too many per request
--slowdown F makes every token F times slower (a slower pin); --drift-period S stretches every server's tokens by
a shared wave over wall time (x1.0 .. x1.8), a machine that drifts under all of them alike.
What it says about itself: GET /version answers {"version": <--report-version>} (404 without it); GET /metrics
serves Prometheus token counters (<prefix>:prompt_tokens_total, <prefix>:generation_tokens_total; --metrics-prefix,
scripted by default), a TTFT
histogram and --extra-metric families (each a gauge).
Speech (/v1/audio/transcriptions, /v1/audio/speech):
  error-200        audio errors come back as HTTP 200 {"status_code": 400, ...} (as vox-box does)
  text-as-json     text/srt/vtt come back JSON-encoded (as vox-box does)
  mishear          every clip loses its last word
  tts-garbled      speech answers are not audio
With --transcripts (a JSON map sha256 of a WAV -> its words) uploaded clips are "heard" as those words;
the WAVs this server synthesizes carry their text in their samples, so it hears those back too.
Greedy text is " w<k>" tokens derived from the prompt, so every count is exact; with --answers (a JSON
map prompt -> answer) accuracy prompts get their answer.
"""

from __future__ import annotations

import argparse
import email.parser
import hashlib
import io
import json
import math
import os
import random
import signal
import subprocess
import sys
import threading
import time
import wave
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

START = time.monotonic()
ARGS = argparse.Namespace()
COUNTS = {"prompt": 0, "generation": 0, "requests": 0}
TTFT_S: list[float] = []
COUNT_LOCK = threading.Lock()
TTFT_BOUNDS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0)
ANSWERS: dict[str, str] = {}
LOAD_REQUESTS: list[int] = []  # streamed load requests seen (die-in-load:N)
TRANSCRIPTS: dict[str, str] = {}
SPEECH_MAGIC = b"SCRIPTED-SPEECH:"
DIVERGE_PROMPT = "The capital of France is"


def _h(text: str) -> int:
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16)


def _generate(prompt: str, n: int, temperature: float, seed: int | None) -> list[str]:
    if prompt in ANSWERS:
        answer = ANSWERS[prompt]
        if ARGS.mode == "dumb" and _h(prompt) % 2:
            answer = "wrong"
        return [" " + answer, "\n", " Question"][:n]
    if temperature > 0:
        rng = random.Random(seed if seed is not None else time.monotonic_ns())
        return [f" r{rng.randint(0, 99)}" for _ in range(n)]
    if ARGS.mode == "degenerate":
        return [" France"] * n
    base = _h(prompt) % 7
    toks = [f" w{(base + i) % 10}" for i in range(n)]
    if ARGS.mode == "diverge" and prompt == DIVERGE_PROMPT and n > 1:
        toks[1] = " zzz"
    return toks


def _top(tok: str, k: int) -> dict[str, float]:
    # Alternatives never include the greedy tokens of another pin: " zzz" and " w*" stay apart.
    return {tok: -0.1, **{f" alt{j}": -1.0 - j for j in range(k - 1)}}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt: str, *args: object) -> None:
        sys.stderr.write("scripted: " + fmt % args + "\n")

    def _json(self, code: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _error(self, code: int, message: str) -> None:
        self._json(500 if ARGS.mode == "error-500" else code, {"error": {"message": message, "code": code}})

    def do_GET(self) -> None:
        if self.path in ("/v1/models", "/health"):
            mode = ARGS.mode
            if mode.startswith("slow-ready:") and time.monotonic() - START < float(mode.split(":")[1]):
                return self._json(503, {"error": "loading"})
            return self._json(200, {"object": "list", "data": [{"id": ARGS.served_model_name, "object": "model"}]})
        if self.path == "/version" and ARGS.report_version:
            return self._json(200, {"version": ARGS.report_version})
        if self.path == "/metrics":
            return self._send(200, _metrics().encode(), "text/plain; version=0.0.4")
        self._json(404, {"error": "not found"})

    def _audio_error(self, code: int, detail: str) -> None:
        if ARGS.mode == "error-200":
            return self._json(200, {"status_code": code, "detail": detail, "headers": None})
        self._json(code, {"error": {"message": detail, "code": code}})

    def _send(self, code: int, body: bytes, ctype: str) -> None:
        self.send_response(code)
        self.send_header("content-type", ctype)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _transcribe(self, raw: bytes) -> None:
        msg = email.parser.BytesParser().parsebytes(
            b"content-type: " + self.headers["content-type"].encode() + b"\r\n\r\n" + raw
        )
        fields: dict[str, bytes] = {}
        for part in msg.get_payload() if msg.is_multipart() else []:
            fields[part.get_param("name", header="content-disposition")] = part.get_payload(decode=True)
        fmt = fields.get("response_format", b"json").decode()
        if "file" not in fields:
            return self._audio_error(400, "Field file is required")
        if fmt not in ("json", "text", "srt", "verbose_json", "vtt"):
            return self._audio_error(400, f"Unsupported response_format: {fmt}")
        audio = fields["file"]
        try:
            with wave.open(io.BytesIO(audio)) as w:
                duration = w.getnframes() / w.getframerate()
                frames = w.readframes(w.getnframes())
        except (wave.Error, EOFError):
            return self._audio_error(400, "Invalid data found when processing input")
        if frames.startswith(SPEECH_MAGIC):  # speech this server synthesized
            text = frames[len(SPEECH_MAGIC) :].split(b"\0")[0].decode()
        else:
            digest = hashlib.sha256(audio).hexdigest()
            text = TRANSCRIPTS.get(digest, "")
            if ARGS.mode == "mishear":
                text = text.rsplit(" ", 1)[0]
        text = text[:1].upper() + text[1:] + "."
        end = f"{int(duration) // 60:02d}:{duration % 60:06.3f}"
        if fmt in ("text", "srt", "vtt"):
            body = {
                "text": text,
                "srt": f"1\n00:00:00,000 --> 00:{end.replace('.', ',')}\n{text}\n",
                "vtt": f"WEBVTT\n\n00:00.000 --> {end}\n{text}\n",
            }[fmt]
            if ARGS.mode == "text-as-json":
                return self._json(200, text)
            return self._send(200, body.encode(), "text/plain; charset=utf-8")
        if fmt == "verbose_json":
            return self._json(
                200,
                {
                    "task": "transcribe",
                    "language": "en",
                    "duration": duration,
                    "text": text,
                    "segments": [{"id": 0, "start": 0.0, "end": round(duration, 2), "text": " " + text}],
                },
            )
        return self._json(200, {"text": text})

    def _speech(self, body: dict) -> None:
        text = body.get("input")
        if not isinstance(text, str) or not text.strip():
            return self._audio_error(400, "input must be a non-empty string")
        if ARGS.mode == "tts-garbled":
            return self._send(200, b"\xff\xfb not audio", "audio/wav")
        rate = 16000
        payload = SPEECH_MAGIC + text.encode() + b"\0"
        n = int(rate * 0.4 * len(text.split()))  # 2.5 words/s, like speech
        out = io.BytesIO()
        with wave.open(out, "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(rate)
            w.writeframes(payload + b"\0" * (2 * n - len(payload)))
        self._send(200, out.getvalue(), "audio/wav")

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("content-length", 0)))
        if self.path == "/v1/audio/transcriptions":
            return self._transcribe(raw)
        try:
            body = json.loads(raw or b"{}")
        except json.JSONDecodeError:
            return self._error(400, "invalid JSON")
        if self.path == "/v1/audio/speech":
            return self._speech(body)
        if body.get("model") != ARGS.served_model_name:
            return self._error(404, f"model {body.get('model')!r} does not exist")
        max_tokens = body.get("max_tokens", 16)
        if not isinstance(max_tokens, int) or max_tokens < 1:
            return self._error(400, "max_tokens must be at least 1")
        if self.path == "/v1/embeddings":
            return self._embeddings(body)
        chat = self.path == "/v1/chat/completions"
        if chat:
            prompt = json.dumps(body.get("messages"))
        elif self.path == "/v1/completions":
            prompt = body.get("prompt", "")
        else:
            return self._error(404, "not found")
        temperature, seed = float(body.get("temperature", 1.0)), body.get("seed")
        choices = []
        for i in range(int(body.get("n", 1))):
            toks = _generate(prompt, max_tokens, temperature, None if seed is None else seed + i)
            finish = "length"
            stops = body.get("stop") or []
            if ARGS.mode != "stop-ignored":
                text = "".join(toks)
                cut = min((text.index(s) for s in stops if s in text), default=None)
                if cut is not None:
                    kept, acc = [], ""
                    for t in toks:
                        if len(acc) + len(t) > cut:
                            break
                        kept.append(t)
                        acc += t
                    toks, finish = kept, "stop"
            choices.append((toks, finish))
        n_out = sum(len(t) for t, _ in choices)
        usage = {"prompt_tokens": len(prompt.split()), "completion_tokens": n_out}
        usage["total_tokens"] = usage["prompt_tokens"] + n_out + (1 if ARGS.mode == "wrong-usage" else 0)
        _count(usage, received=time.monotonic())
        if body.get("stream"):
            if ARGS.mode.startswith("die-in-load:") and body.get(
                "ignore_eos"
            ):  # killed mid-throughput (the OOM killer does this)
                LOAD_REQUESTS.append(1)
                if len(LOAD_REQUESTS) > int(ARGS.mode.split(":")[1]):
                    print("scripted: killed during load", file=sys.stderr, flush=True)
                    os.kill(os.getpid(), signal.SIGKILL)
            return self._stream(choices[0][0], usage, body)
        out = []
        for i, (toks, finish) in enumerate(choices):
            text = "".join(toks)
            if chat:
                content = ("<|im_start|>assistant\n" if ARGS.mode == "special-tokens" else "") + text
                c: dict[str, Any] = {
                    "index": i,
                    "message": {"role": "assistant", "content": content},
                    "finish_reason": finish,
                }
                if body.get("logprobs"):
                    k = int(body.get("top_logprobs") or 1)
                    c["logprobs"] = {
                        "content": [
                            {
                                "token": t,
                                "logprob": -0.1,
                                "bytes": list(t.encode()),
                                "top_logprobs": [{"token": a, "logprob": lp} for a, lp in _top(t, k).items()],
                            }
                            for t in toks
                        ]
                    }
            else:
                c = {"index": i, "text": text, "finish_reason": finish}
                if body.get("logprobs"):
                    k = int(body["logprobs"])
                    offsets = [sum(len(x) for x in toks[:j]) for j in range(len(toks))]
                    c["logprobs"] = {
                        "tokens": toks,
                        "token_logprobs": [-0.1] * len(toks),
                        "top_logprobs": [_top(t, k) for t in toks],
                        "text_offset": offsets,
                    }
            out.append(c)
        obj = "chat.completion" if chat else "text_completion"
        self._json(
            200,
            {
                "id": f"x-{time.monotonic_ns()}",
                "object": obj,
                "created": int(time.time()),
                "model": ARGS.served_model_name,
                "choices": out,
                "usage": usage,
            },
        )

    def _embeddings(self, body: dict) -> None:
        inputs = body.get("input")
        inputs = [inputs] if isinstance(inputs, str) else inputs
        data = []
        for i, text in enumerate(inputs):
            rng = random.Random(_h(text))
            vec = [rng.uniform(-1, 1) for _ in range(8)]
            if ARGS.mode == "diverge":
                vec[0] += 0.5  # a different model, as far as cosine can tell
            norm = sum(x * x for x in vec) ** 0.5
            data.append({"object": "embedding", "index": i, "embedding": [x / norm for x in vec]})
        self._json(
            200,
            {
                "object": "list",
                "data": data,
                "model": ARGS.served_model_name,
                "usage": {"prompt_tokens": 1, "total_tokens": 1},
            },
        )

    def _stream(self, toks: list[str], usage: dict[str, int], body: dict) -> None:
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()

        def send(payload: str) -> None:
            data = f"data: {payload}\n\n".encode()
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()

        if ARGS.mode == "stream-differs":
            toks = toks[:-1] + [" different"]
        for i, t in enumerate(toks):
            if ARGS.mode == "stall-stream" and body.get("ignore_eos") and i == 1:
                time.sleep(3600)  # a stream that stops mid-response: the client's per-request timeout must end it
            time.sleep(_token_delay())
            send(json.dumps({"object": "text_completion", "choices": [{"index": 0, "text": t, "finish_reason": None}]}))
        if (body.get("stream_options") or {}).get("include_usage"):
            send(json.dumps({"object": "text_completion", "choices": [], "usage": usage}))
        send("[DONE]")
        self.wfile.write(b"0\r\n\r\n")


def _token_delay() -> float:
    """The time per token: --token-delay, times --slowdown, times a machine-wide wave when --drift-period is set
    (every server reads the same wall clock, so all of them slow down and speed up together, between x1.0 and
    x1.8, as a machine whose load changes does; no calibration of the harness sees it)."""
    delay = ARGS.token_delay * ARGS.slowdown
    if ARGS.drift_period > 0:
        phase = 2 * math.pi * (time.time() + ARGS.drift_phase) / ARGS.drift_period
        delay *= 1.0 + 0.4 * (1 - math.cos(phase))
    return delay


def _count(usage: dict[str, int], received: float) -> None:
    """What /metrics reports: the usage of every completion served (one token too many: wrong-counters)."""
    with COUNT_LOCK:
        COUNTS["prompt"] += usage["prompt_tokens"]
        COUNTS["generation"] += usage["completion_tokens"] + (1 if ARGS.mode == "wrong-counters" else 0)
        COUNTS["requests"] += 1
        TTFT_S.append(ARGS.token_delay + (time.monotonic() - received))


def _metrics() -> str:
    P = ARGS.metrics_prefix  # noqa: N806 - the family prefix, as a backend names its metrics
    with COUNT_LOCK:
        lines = [
            f"# HELP {P}:prompt_tokens_total Prompt tokens served.",
            f"# TYPE {P}:prompt_tokens_total counter",
            f'{P}:prompt_tokens_total{{model_name="{ARGS.served_model_name}"}} {COUNTS["prompt"]}.0',
            f"# TYPE {P}:generation_tokens_total counter",
            f'{P}:generation_tokens_total{{model_name="{ARGS.served_model_name}"}} {COUNTS["generation"]}.0',
            f"# TYPE {P}:time_to_first_token_seconds histogram",
        ]
        for le in TTFT_BOUNDS:
            lines.append(f'{P}:time_to_first_token_seconds_bucket{{le="{le}"}} {sum(t <= le for t in TTFT_S)}.0')
        lines.append(f'{P}:time_to_first_token_seconds_bucket{{le="+Inf"}} {len(TTFT_S)}.0')
        lines.append(f"{P}:time_to_first_token_seconds_count {len(TTFT_S)}.0")
        lines.append(f"{P}:time_to_first_token_seconds_sum {sum(TTFT_S)}")
    for name in filter(None, ARGS.extra_metric.split(",")):
        lines += [f"# TYPE {name} gauge", f"{name} 1.0"]
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--mode", default="ok")
    p.add_argument("--served-model-name", default="scripted")
    p.add_argument("--model", default="")
    p.add_argument("--pid-file", default="")
    p.add_argument("--answers", default="")
    p.add_argument("--transcripts", default="")
    p.add_argument("--token-delay", type=float, default=0.002)
    p.add_argument("--metrics-prefix", default="scripted")  # sglang, llamacpp...: the names a backend uses
    p.add_argument("--slowdown", type=float, default=1.0)  # x the time per token: a slower pin
    p.add_argument("--drift-period", type=float, default=0.0)  # seconds of a machine-wide speed wave (0: none)
    p.add_argument("--drift-phase", type=float, default=0.0)
    p.add_argument("--report-version", default="")  # what GET /version says (empty: 404, not exposed)
    p.add_argument("--extra-metric", default="")  # comma-separated gauge families /metrics also serves
    global ARGS
    ARGS, _ = p.parse_known_args()
    if ARGS.answers:
        with open(ARGS.answers) as fh:
            ANSWERS.update(json.load(fh))
    if ARGS.transcripts:
        with open(ARGS.transcripts) as fh:
            TRANSCRIPTS.update(json.load(fh))
    if ARGS.pid_file:
        with open(ARGS.pid_file, "a") as fh:
            fh.write(f"{os.getpid()}\n")
    if ARGS.mode == "oom":
        print("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 20.00 GiB", file=sys.stderr)
        sys.exit(1)
    if ARGS.mode == "exit":
        print("RuntimeError: scripted failure at start", file=sys.stderr)
        sys.exit(3)
    if ARGS.mode == "hang":
        while True:
            time.sleep(1)
    if ARGS.mode == "child":
        ignore_sigint = "import signal, time; signal.signal(signal.SIGINT, signal.SIG_IGN); time.sleep(600)"
        child = subprocess.Popen([sys.executable, "-c", ignore_sigint])
        if ARGS.pid_file:
            with open(ARGS.pid_file, "a") as fh:
                fh.write(f"{child.pid}\n")
    server = ThreadingHTTPServer((ARGS.host, ARGS.port), Handler)
    print(f"scripted: booted in {time.monotonic() - START:.3f} s", file=sys.stderr, flush=True)
    print("scripted: serving", file=sys.stderr, flush=True)
    server.serve_forever()


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    main()
