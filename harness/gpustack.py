"""A GPUStack 2.x server, as the harness uses it: create a model with a pinned backend version, read its
instances' states, delete it; list a backend's versions and a worker's GPUs; and the ledger of every model the
harness created, so a run killed outright (SIGKILL) leaves a record the next run cleans up from.

The API key is sent as ``Authorization: Bearer`` and appears in no error, log line or record.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from filelock import FileLock

from .errors import HarnessError

PREFIX = "pinmatrix-"  # every model the harness creates is named so; cleanup never touches another
RUNNING, FAILED = "running", ("error", "unreachable")


class GpustackError(HarnessError):
    """The GPUStack server refused or could not answer a request (never carries the API key)."""


@dataclass(frozen=True, kw_only=True)
class Instance:
    id: int
    name: str
    state: str
    state_message: str = ""
    backend_version: str = ""
    api_detected_backend_version: str = ""
    worker_id: int | None = None
    worker_name: str = ""
    gpu_type: str = ""
    gpu_indexes: tuple[int, ...] = ()

    @classmethod
    def of(cls, d: Mapping[str, Any]) -> Instance:
        return cls(
            id=int(d.get("id") or 0),
            name=str(d.get("name") or ""),
            state=str(d.get("state") or ""),
            state_message=str(d.get("state_message") or ""),
            backend_version=str(d.get("backend_version") or ""),
            api_detected_backend_version=str(d.get("api_detected_backend_version") or ""),
            worker_id=d.get("worker_id") if isinstance(d.get("worker_id"), int) else None,
            worker_name=str(d.get("worker_name") or ""),
            gpu_type=str(d.get("gpu_type") or ""),
            gpu_indexes=tuple(i for i in d.get("gpu_indexes") or () if isinstance(i, int)),
        )


def api_key(env_name: str, url: str) -> str:
    """The API key from the environment variable the matrix names (the only place a key is taken from)."""
    key = os.environ.get(env_name, "")
    if not key:
        raise GpustackError(f"${env_name} is not set: it holds the API key of {url}")
    return key


def plain_http_warning(url: str) -> str:
    """The one-line warning for a key sent in the clear ("" when it is not)."""
    parts = urlsplit(url)
    if parts.scheme != "http" or parts.hostname in ("127.0.0.1", "localhost", "::1"):
        return ""
    return f"{parts.scheme}://{parts.netloc} is plain http: the API key travels unencrypted"


class Client:
    """GPUStack's management API (``/v2``) with the key; ``transport`` for tests."""

    def __init__(
        self, url: str, key: str, *, verify: bool = True, transport: httpx.BaseTransport | None = None
    ) -> None:
        self.url = url.rstrip("/")
        self._http = httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {key}"},
            timeout=httpx.Timeout(30.0, connect=10.0),
            verify=verify,
            transport=transport,
        )

    def close(self) -> None:
        self._http.close()

    def _ask(self, method: str, path: str, **kw: Any) -> httpx.Response:
        try:
            resp = self._http.request(method, path, **kw)
        except httpx.HTTPError as exc:
            raise GpustackError(f"GPUStack {self.url}: {method} {path}: {type(exc).__name__}: {exc}") from exc
        if resp.status_code in (401, 403):
            raise GpustackError(f"GPUStack {self.url} refused the API key (HTTP {resp.status_code} on {path})")
        return resp

    def _json(self, method: str, path: str, **kw: Any) -> Any:
        resp = self._ask(method, path, **kw)
        if resp.status_code >= 400:
            raise GpustackError(f"GPUStack {self.url}: {method} {path}: HTTP {resp.status_code}: {_message(resp)}")
        try:
            return resp.json()
        except ValueError as exc:
            raise GpustackError(f"GPUStack {self.url}: {method} {path}: not JSON") from exc

    def create_model(self, body: Mapping[str, Any]) -> int:
        data = self._json("POST", "/v2/models", json=dict(body))
        if not isinstance(data, dict) or not isinstance(data.get("id"), int):
            raise GpustackError(f"GPUStack {self.url}: POST /v2/models answered without a model id")
        return int(data["id"])

    def instances(self, model_id: int) -> list[Instance]:
        data = self._json("GET", "/v2/model-instances", params={"model_id": model_id, "perPage": 100})
        return [Instance.of(i) for i in _items(data)]

    def delete_model(self, model_id: int) -> bool:
        """True when deleted, False when it was already gone."""
        resp = self._ask("DELETE", f"/v2/models/{model_id}")
        if resp.status_code == 404:
            return False
        if resp.status_code >= 400:
            raise GpustackError(f"GPUStack {self.url}: DELETE /v2/models/{model_id}: HTTP {resp.status_code}")
        return True

    def models_named(self, name: str) -> list[int]:
        """The ids of the models whose name is exactly ``name``."""
        data = self._json("GET", "/v2/models", params={"search": name, "perPage": 100})
        return [int(m["id"]) for m in _items(data) if m.get("name") == name and isinstance(m.get("id"), int)]

    def backend_versions(self, backend: str) -> list[str]:
        """Every non-deprecated version the server lists for ``backend``."""
        data = self._json("GET", "/v2/inference-backends/list")
        for item in _items(data):
            if item.get("backend_name") == backend:
                return [str(v["version"]) for v in item.get("versions") or () if not v.get("is_deprecated")]
        known = ", ".join(str(i.get("backend_name")) for i in _items(data))
        raise GpustackError(f"GPUStack {self.url} has no backend {backend!r} (it has: {known})")

    def default_cluster(self) -> int:
        """The cluster a model goes to when the matrix names none: GPUStack 2.x needs one (measured on 2.3.0:
        a model without cluster_id is refused with an opaque HTTP 500, "Failed to create model")."""
        clusters = _items(self._json("GET", "/v2/clusters", params={"perPage": 100}))
        chosen = next((c for c in clusters if c.get("is_default")), clusters[0] if len(clusters) == 1 else None)
        if chosen is None or not isinstance(chosen.get("id"), int):
            names = ", ".join(str(c.get("name")) for c in clusters) or "none"
            raise GpustackError(f"GPUStack {self.url}: no default cluster (clusters: {names}): set cluster_id")
        return int(chosen["id"])

    def worker_gpus(self, worker_id: int) -> list[str]:
        data = self._json("GET", f"/v2/workers/{worker_id}")
        devices = ((data or {}).get("status") or {}).get("gpu_devices") or []
        return [str(d.get("name") or "") for d in devices if isinstance(d, dict)]


def _items(data: Any) -> list[dict[str, Any]]:
    items = data.get("items") if isinstance(data, dict) else data
    return [i for i in items or () if isinstance(i, dict)]


def _message(resp: httpx.Response) -> str:
    try:
        data = resp.json()
    except ValueError:
        return resp.text[:200]
    if isinstance(data, dict):
        return str(data.get("message") or data.get("detail") or data.get("error") or data)[:200]
    return str(data)[:200]


def deployment_name(run_id: str, cell_id: str, model: str) -> str:
    """Unique to the run and the cell, recognisable as the harness's, and a valid GPUStack model name."""
    import hashlib

    digest = hashlib.sha256(f"{run_id}\0{cell_id}".encode()).hexdigest()[:10]
    slug = re.sub(r"[^a-z0-9]+", "-", model.lower()).strip("-")[:30]
    return f"{PREFIX}{slug}-{digest}"


class Ledger:
    """``<data-dir>/gpustack/created.jsonl``: a line per model created (written before the request is sent),
    removed once the model is deleted. What a killed run leaves here is what cleanup deletes, and only that."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / "gpustack" / "created.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = FileLock(str(self.path) + ".lock")

    def _read(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        out = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue  # a line torn by a killed run
            if isinstance(entry, dict) and str(entry.get("name", "")).startswith(PREFIX):
                out.append(entry)
        return out

    def _write(self, entries: list[dict[str, Any]]) -> None:
        tmp = self.path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text("".join(json.dumps(e, sort_keys=True) + "\n" for e in entries), encoding="utf-8")
        os.replace(tmp, self.path)

    def add(self, url: str, name: str, model_id: int | None = None) -> None:
        with self._lock:
            entries = [e for e in self._read() if not (e["url"] == url and e["name"] == name)]
            when = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
            entries.append({"url": url, "name": name, "id": model_id, "created_at": when, "pid": os.getpid()})
            self._write(entries)

    def remove(self, url: str, name: str) -> None:
        with self._lock:
            self._write([e for e in self._read() if not (e["url"] == url and e["name"] == name)])

    def entries(self, url: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            return [e for e in self._read() if url is None or e["url"] == url]


def cleanup(ledger: Ledger, client: Client, *, alive: set[int] | None = None) -> list[str]:
    """Delete the models the ledger holds for ``client``'s server (by the recorded id, or by exact name when the
    create request never answered), except those of a process still running (``alive``: pids to spare).
    Returns what was deleted."""
    deleted = []
    for entry in ledger.entries(client.url):
        if alive is not None and entry.get("pid") in alive:
            continue
        ids = client.models_named(entry["name"])
        for model_id in ids:
            if client.delete_model(model_id):
                deleted.append(f"{entry['name']} (id {model_id})")
        ledger.remove(client.url, entry["name"])
    return deleted
