"""A release mirror on 127.0.0.1 laid out like GitHub releases, for download tests.

/gpustack/llama-box/releases/download/<version>/<asset>.zip  and  .../sha256sum.txt
"""

from __future__ import annotations

import functools
import hashlib
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, fmt: str, *args: object) -> None:
        pass


def publish(root: Path, version: str, assets: Mapping[str, bytes], *, sums: Mapping[str, str] | None = None) -> Path:
    """Lay out one release; ``sums`` overrides hashes in sha256sum.txt (to plant a mismatch)."""
    rel = root / "gpustack" / "llama-box" / "releases" / "download" / version
    rel.mkdir(parents=True, exist_ok=True)
    lines = []
    for name, data in assets.items():
        (rel / name).write_bytes(data)
        lines.append(f"{(sums or {}).get(name, hashlib.sha256(data).hexdigest())}  {name}")
    (rel / "sha256sum.txt").write_text("\n".join(lines) + "\n")
    return rel


@contextmanager
def serve(root: Path) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
