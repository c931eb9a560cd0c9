"""A stand-in GPUStack 2.x server for tests: the endpoints the harness uses, with GPUStack's field names
(gpustack/schemas/models.py, routes/), each model instance served by a scripted server process.

A test double at the boundary, never a backend. Per backend version a behaviour is planted:
  ok                   the instance runs that version
  slow:<s>             ... with <s> seconds per token (the scripted server's --token-delay)
  runs:<version>       GPUStack silently runs another version (backend_version and the live server say so)
  error:<message>      the instance goes to "error" with that state_message
  start-delay:<s>      the instance stays "starting" for <s> seconds first
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx

from harness.launch import free_port

SERVER = Path(__file__).with_name("scripted_server.py")
GPU = "NVIDIA H100 80GB HBM3"


@dataclass
class StandIn:
    key: str
    backend: str = "vLLM"
    versions: Mapping[str, str] = field(default_factory=dict)  # backend_version -> behaviour
    models: dict[int, dict[str, Any]] = field(default_factory=dict)
    instances: dict[int, dict[str, Any]] = field(default_factory=dict)  # model id -> instance
    processes: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)
    requests: list[tuple[str, str, Any]] = field(default_factory=list)  # (method, path, body) as received
    lock: threading.Lock = field(default_factory=threading.Lock)
    ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    url: str = ""

    def create(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        missing = [k for k in ("name", "source", "backend", "backend_version", "cluster_id") if not body.get(k)]
        if missing:
            return 422, {"message": f"missing {', '.join(missing)}"}
        if body["backend"] != self.backend:
            return 400, {"message": f"unknown backend {body['backend']}"}
        if any(m["name"] == body["name"] for m in self.models.values()):
            return 409, {"message": f"model {body['name']} exists"}
        with self.lock:
            model_id = next(self.ids)
            self.models[model_id] = {**body, "id": model_id}
            self.instances[model_id] = {
                "id": model_id,
                "name": f"{body['name']}-0",
                "model_id": model_id,
                "model_name": body["name"],
                "state": "pending",
                "state_message": "",
                "backend": body["backend"],
                "backend_version": None,
                "api_detected_backend_version": None,
                "worker_id": 1,
                "worker_name": "worker-1",
                "gpu_indexes": [0],
                "port": None,
            }
        threading.Thread(target=self._start, args=(model_id,), daemon=True).start()
        return 200, self.models[model_id]

    def _set(self, model_id: int, **fields: Any) -> None:
        with self.lock:
            if model_id in self.instances:
                self.instances[model_id].update(fields)

    def _start(self, model_id: int) -> None:
        body = self.models[model_id]
        asked = str(body["backend_version"])
        behaviour = self.versions.get(asked, "error:no such version on this server")
        time.sleep(0.2)
        self._set(model_id, state="scheduled")
        time.sleep(0.2)
        if behaviour.startswith("error:"):
            self._set(model_id, state="error", state_message=behaviour.removeprefix("error:"))
            return
        runs = behaviour.removeprefix("runs:") if behaviour.startswith("runs:") else asked
        delay = float(behaviour.removeprefix("slow:")) if behaviour.startswith("slow:") else 0.002
        self._set(model_id, state="starting", backend_version=runs)
        if behaviour.startswith("start-delay:"):
            time.sleep(float(behaviour.removeprefix("start-delay:")))
        port = free_port()
        argv = [sys.executable, str(SERVER), "--port", str(port), "--served-model-name", body["name"]]
        argv += ["--report-version", runs, "--token-delay", str(delay)]
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        with self.lock:
            if model_id not in self.models:  # deleted while starting
                proc.kill()
                proc.wait(10)
                return
            self.processes[model_id] = proc
        for _ in range(100):
            try:
                if httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.05)
        self._set(model_id, state="running", port=port, api_detected_backend_version=runs)

    def delete(self, model_id: int) -> bool:
        with self.lock:
            if model_id not in self.models:
                return False
            del self.models[model_id]
            self.instances.pop(model_id, None)
            proc = self.processes.pop(model_id, None)
        if proc is not None:
            proc.terminate()
            proc.wait(10)
        return True

    def upstream(self, name: str) -> int | None:
        """The port of the running instance serving ``name`` (None: no ready replica)."""
        with self.lock:
            for inst in self.instances.values():
                if inst["model_name"] == name and inst["state"] == "running":
                    return int(inst["port"])
        return None

    def close(self) -> None:
        for model_id in list(self.models):
            self.delete(model_id)


def _handler(standin: StandIn) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt: str, *args: object) -> None:
            pass

        def _json(self, code: int, data: Any) -> None:
            raw = json.dumps(data).encode()
            self.send_response(code)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def _authed(self) -> bool:
            if self.headers.get("authorization") == f"Bearer {standin.key}":
                return True
            self._json(401, {"message": "Invalid API key"})
            return False

        def _body(self) -> bytes:
            return self.rfile.read(int(self.headers.get("content-length") or 0))

        def do_GET(self) -> None:
            if not self._authed():
                return
            url = urlsplit(self.path)
            query = {k: v[0] for k, v in parse_qs(url.query).items()}
            standin.requests.append(("GET", url.path, query))
            if url.path == "/v2/model-instances":
                items = [i for i in standin.instances.values() if str(i["model_id"]) == query.get("model_id")]
                return self._json(
                    200,
                    {"items": items, "pagination": {"page": 1, "perPage": 100, "total": len(items), "totalPage": 1}},
                )
            if url.path == "/v2/models":
                items = [m for m in standin.models.values() if query.get("search", "") in m["name"]]
                return self._json(
                    200,
                    {"items": items, "pagination": {"page": 1, "perPage": 100, "total": len(items), "totalPage": 1}},
                )
            if url.path == "/v2/clusters":
                cluster = {"id": 1, "name": "default", "is_default": True, "state": "ready"}
                return self._json(
                    200, {"items": [cluster], "pagination": {"page": 1, "perPage": 100, "total": 1, "totalPage": 1}}
                )
            if url.path == "/v2/inference-backends/list":
                versions = [{"version": v, "is_deprecated": False} for v in standin.versions]
                return self._json(200, {"items": [{"backend_name": standin.backend, "versions": versions}]})
            if url.path.startswith("/v2/workers/"):
                return self._json(
                    200, {"id": 1, "name": "worker-1", "status": {"gpu_devices": [{"name": GPU, "index": 0}]}}
                )
            if url.path == "/v1/models":
                running = [i["model_name"] for i in standin.instances.values() if i["state"] == "running"]
                return self._json(200, {"object": "list", "data": [{"id": n, "object": "model"} for n in running]})
            self._json(404, {"message": "not found"})

        def do_DELETE(self) -> None:
            if not self._authed():
                return
            standin.requests.append(("DELETE", self.path, None))
            if self.path.startswith("/v2/models/") and standin.delete(int(self.path.rsplit("/", 1)[1])):
                return self._json(200, {})
            self._json(404, {"message": "Model not found"})

        def do_POST(self) -> None:
            if not self._authed():
                return
            raw = self._body()
            if self.path == "/v2/models":
                body = json.loads(raw)
                standin.requests.append(("POST", self.path, body))
                return self._json(*standin.create(body))
            if self.path.startswith("/v1/"):
                return self._proxy(raw)
            self._json(404, {"message": "not found"})

        def _proxy(self, raw: bytes) -> None:
            try:
                name = json.loads(raw).get("model", "")
            except ValueError:
                return self._json(400, {"error": {"message": "bad json"}})
            port = standin.upstream(name)
            if port is None:
                code = 503 if any(m["name"] == name for m in standin.models.values()) else 404
                return self._json(code, {"error": {"message": f"no route for model {name}", "code": code}})
            headers = {"content-type": self.headers.get("content-type", "application/json")}
            with (
                httpx.Client(timeout=120) as c,
                c.stream("POST", f"http://127.0.0.1:{port}{self.path}", content=raw, headers=headers) as up,
            ):
                self.send_response(up.status_code)
                self.send_header("content-type", up.headers.get("content-type", "application/json"))
                self.send_header("transfer-encoding", "chunked")
                self.end_headers()
                for chunk in up.iter_raw():
                    self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                    self.wfile.flush()
                self.wfile.write(b"0\r\n\r\n")

    return Handler


@contextmanager
def running(key: str, versions: Mapping[str, str], backend: str = "vLLM") -> Iterator[StandIn]:
    standin = StandIn(key=key, backend=backend, versions=dict(versions))
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(standin))
    standin.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield standin
    finally:
        server.shutdown()
        server.server_close()
        standin.close()
