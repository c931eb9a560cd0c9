"""A tiny scripted OpenAI-compatible server for integration tests (fault injection, not a backend).

    python scripted_server.py --host 127.0.0.1 --port N [--mode MODE] [--pid-file F]

Modes: ok (answers like a small model), exit (exits 3 at start), hang (never becomes ready),
slow-ready:<s> (503 on /v1/models until <s> seconds have passed), wrong-usage (usage totals do not add
up), child (also forks a child that ignores SIGINT, to test that the whole group is stopped).
Completions stream one chunk per token: "tok0 tok1 ..." so counts are exact.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

START = time.monotonic()
ARGS = argparse.Namespace()


def _tokens(prompt: str, n: int) -> list[str]:
    seed = sum(map(ord, prompt)) % 7
    return [f" w{(seed + i) % 10}" for i in range(n)]


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

    def do_GET(self) -> None:
        if self.path in ("/v1/models", "/health"):
            mode = ARGS.mode
            if mode.startswith("slow-ready:") and time.monotonic() - START < float(mode.split(":")[1]):
                return self._json(503, {"error": "loading"})
            return self._json(200, {"object": "list", "data": [{"id": ARGS.served_model_name, "object": "model"}]})
        self._json(404, {"error": "not found"})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))) or b"{}")
        max_tokens = body.get("max_tokens", 16)
        if not isinstance(max_tokens, int) or max_tokens < 1:
            return self._json(400, {"error": {"message": "max_tokens must be at least 1"}})
        if self.path == "/v1/chat/completions":
            prompt = json.dumps(body.get("messages"))
        elif self.path == "/v1/completions":
            prompt = body.get("prompt", "")
        else:
            return self._json(404, {"error": "not found"})
        toks = _tokens(prompt, max_tokens)
        usage = {"prompt_tokens": len(prompt.split()), "completion_tokens": len(toks)}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"] + (1 if ARGS.mode == "wrong-usage" else 0)
        if body.get("stream"):
            return self._stream(toks, usage, body)
        if self.path == "/v1/chat/completions":
            choice = {"index": 0, "message": {"role": "assistant", "content": "".join(toks)}, "finish_reason": "length"}
            return self._json(200, {"id": "c1", "object": "chat.completion", "choices": [choice], "usage": usage})
        choice = {"index": 0, "text": "".join(toks), "finish_reason": "length"}
        if body.get("logprobs"):
            k = int(body["logprobs"])
            choice["logprobs"] = {"tokens": toks, "token_logprobs": [-0.1] * len(toks),
                                  "top_logprobs": [{t: -0.1, **{f" alt{j}": -1.0 - j for j in range(k - 1)}} for t in toks]}
        self._json(200, {"id": "c2", "object": "text_completion", "choices": [choice], "usage": usage})

    def _stream(self, toks: list[str], usage: dict[str, int], body: dict) -> None:
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()

        def send(payload: str) -> None:
            data = f"data: {payload}\n\n".encode()
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()

        for t in toks:
            time.sleep(ARGS.token_delay)
            send(json.dumps({"object": "text_completion", "choices": [{"index": 0, "text": t, "finish_reason": None}]}))
        if (body.get("stream_options") or {}).get("include_usage"):
            send(json.dumps({"object": "text_completion", "choices": [], "usage": usage}))
        send("[DONE]")
        self.wfile.write(b"0\r\n\r\n")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--mode", default="ok")
    p.add_argument("--served-model-name", default="scripted")
    p.add_argument("--model", default="")
    p.add_argument("--pid-file", default="")
    p.add_argument("--token-delay", type=float, default=0.002)
    global ARGS
    ARGS, _ = p.parse_known_args()
    if ARGS.pid_file:
        with open(ARGS.pid_file, "a") as fh:
            fh.write(f"{os.getpid()}\n")
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
    ThreadingHTTPServer((ARGS.host, ARGS.port), Handler).serve_forever()


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    main()
