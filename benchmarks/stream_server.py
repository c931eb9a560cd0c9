"""A calibration instrument: an OpenAI-style streaming server that sends fixed-size chunks as fast as asked.

    python -m benchmarks.stream_server --port N [--chunk-bytes 8]

POST /v1/completions with {"max_tokens": n, "stream": true} answers n SSE chunks of one "token" each,
then a usage chunk (include_usage) and [DONE], written in one go so the server is never the limit of a
client benchmark. GET /v1/models answers for readiness. Raw asyncio streams: no framework overhead.
"""

from __future__ import annotations

import argparse
import asyncio
import json

_cache: dict[tuple[int, int, bool], bytes] = {}


def _body(n: int, chunk_bytes: int, usage: bool) -> bytes:
    key = (n, chunk_bytes, usage)
    if key not in _cache:
        token = "x" * chunk_bytes
        chunk = json.dumps(
            {
                "id": "c",
                "object": "text_completion",
                "model": "calib",
                "choices": [{"index": 0, "text": token, "logprobs": None, "finish_reason": None}],
            }
        )
        events = [f"data: {chunk}\n\n"] * n
        if usage:
            u = {"prompt_tokens": 8, "completion_tokens": n, "total_tokens": 8 + n}
            events.append(
                "data: " + json.dumps({"id": "c", "object": "text_completion", "choices": [], "usage": u}) + "\n\n"
            )
        events.append("data: [DONE]\n\n")
        payload = "".join(events).encode()
        # one HTTP/1.1 chunk for the whole stream: the client still parses every SSE event
        _cache[key] = f"{len(payload):x}\r\n".encode() + payload + b"\r\n0\r\n\r\n"
    return _cache[key]


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, chunk_bytes: int) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, path, _ = lines[0].split(" ", 2)
            length = next((int(ln.split(":", 1)[1]) for ln in lines[1:] if ln.lower().startswith("content-length:")), 0)
            body = json.loads(await reader.readexactly(length)) if length else {}
            if method == "GET":
                data = b'{"object":"list","data":[{"id":"calib","object":"model"}]}'
                writer.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
                    + str(len(data)).encode()
                    + b"\r\n\r\n"
                    + data
                )
            else:
                usage = bool((body.get("stream_options") or {}).get("include_usage"))
                writer.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
                )
                writer.write(_body(int(body.get("max_tokens", 16)), chunk_bytes, usage))
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionResetError):
        pass
    finally:
        writer.close()


async def main(port: int, chunk_bytes: int) -> None:
    server = await asyncio.start_server(lambda r, w: handle(r, w, chunk_bytes), "127.0.0.1", port)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--chunk-bytes", type=int, default=8)
    a = p.parse_args()
    asyncio.run(main(a.port, a.chunk_bytes))
