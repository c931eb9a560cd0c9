"""A check is data: a name, a verdict and the evidence a person needs to act on it.

``passed`` is True, False, or None (could not be evaluated: not a failure, but a required check that
was not evaluated keeps a pin from being recommended). Evidence holds the request sent and, where it
applies, what was expected and what came back.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from .errors import ProbeError

_EVIDENCE_CHARS = 600  # per field: enough to read, small enough for a report


@dataclass(frozen=True, kw_only=True)
class Check:
    group: str  # conformance | agreement | accuracy
    name: str
    passed: bool | None
    detail: str = ""
    evidence: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"group": self.group, "name": self.name, "passed": self.passed, "detail": self.detail,
                "evidence": {k: _short(v) for k, v in self.evidence.items()}}  # fmt: skip


def _short(value: Any) -> Any:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    if len(text) <= _EVIDENCE_CHARS:
        return value
    return text[:_EVIDENCE_CHARS] + f"… ({len(text)} chars)"


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


def exchange(client: httpx.Client, method: str, path: str, body: Any = None, *, raw: str | None = None,
             files: dict[str, tuple[str, bytes, str]] | None = None) -> Exchange:  # fmt: skip
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
        data = resp.text if not resp.headers.get("content-type", "").startswith("audio/") else f"<{len(resp.content)} bytes of audio>"
    sent = body if raw is None else raw
    if files is not None:  # evidence names the file, never carries its bytes
        sent = {**(body or {}), **{k: f"<{name}: {len(blob)} bytes {ctype}>" for k, (name, blob, ctype) in files.items()}}
    return Exchange(method, path, sent, resp.status_code, data, resp.content, resp.headers.get("content-type", ""))


def is_blocking(check: dict[str, Any], required: Sequence[str]) -> bool:
    """A failed check in a required group that the matrix has not waived."""
    return check.get("group") in required and check.get("passed") is False and not check.get("waived")
