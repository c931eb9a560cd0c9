"""Asking a server one question and keeping the exchange as evidence for a ``Check`` (harness.results).

Evidence holds the request sent and, where it applies, what was expected and what came back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

from ..errors import ProbeError
from ..results import Check

__all__ = ["Check", "Exchange", "exchange"]


@dataclass(frozen=True)
class Exchange:
    """One request and its answer, kept as evidence."""

    method: str
    path: str
    body: Any
    status: int
    data: Any  # parsed JSON, or the raw text when the answer was not JSON
    content: bytes = b""  # the body as sent (audio answers are bytes)
    content_type: str = ""

    @property
    def request(self) -> dict[str, Any]:
        return {"method": self.method, "path": self.path, "body": self.body}

    @property
    def is_json(self) -> bool:
        return not isinstance(self.data, str)


def exchange(
    client: httpx.Client,
    method: str,
    path: str,
    body: Any = None,
    *,
    raw: str | None = None,
    files: dict[str, tuple[str, bytes, str]] | None = None,
) -> Exchange:
    """Send one request; transport failures (the server is gone) raise ProbeError, HTTP errors do not.

    ``files`` makes it a multipart form (``body`` its fields), as the audio endpoints take."""
    for attempt in (1, 2):
        try:
            if files is not None:
                resp = client.request(method, path, data=body, files=files)
            elif raw is not None:
                resp = client.request(method, path, content=raw, headers={"content-type": "application/json"})
            elif body is None:
                resp = client.request(method, path)
            else:
                resp = client.request(method, path, json=body)
            break
        except httpx.RemoteProtocolError as exc:
            # A pooled keep-alive connection the server closed just before we reused it (cpp-httplib,
            # llama.cpp's server, closes idle ones after 5 s): once more on a fresh connection.
            if attempt == 2:
                raise ProbeError(f"{method} {path}: {type(exc).__name__}: {exc}") from exc
        except httpx.TransportError as exc:
            raise ProbeError(f"{method} {path}: {type(exc).__name__}: {exc}") from exc
    try:
        data: Any = resp.json()
    except ValueError:
        data = (
            resp.text
            if not resp.headers.get("content-type", "").startswith("audio/")
            else f"<{len(resp.content)} bytes of audio>"
        )
    sent = body if raw is None else raw
    if files is not None:  # evidence names the file, never carries its bytes
        sent = {
            **(body or {}),
            **{k: f"<{name}: {len(blob)} bytes {ctype}>" for k, (name, blob, ctype) in files.items()},
        }
    return Exchange(method, path, sent, resp.status_code, data, resp.content, resp.headers.get("content-type", ""))
