"""Prebuilt-archive pins (llama-box, custom download backends), downloaded the way GPUStack does, and verified.

The backend's flavour says where the archive is (a ``DownloadPlan``; llama-box's release layout lives in
its backend module). The archive must match the ``sha256sum.txt`` published beside it (or a sha256 given
in the matrix) — GPUStack does not check, we do. Retries with backoff on transport errors and 5xx. The
zip is unpacked into a temp dir beside the target (members escaping it, absolute or symlinks are
refused), then renamed into place as ``<bin_dir>/<backend>/<backend>-<version>/`` and linked as
``<bin_dir>/<backend>_<version>``: a failure at any step leaves nothing half-installed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import tempfile
import time
import zipfile
from pathlib import Path, PurePosixPath

import httpx
from filelock import FileLock
from packaging.specifiers import SpecifierSet

from ..backends import DownloadPlan
from ..errors import InstallError
from ..versions import InvalidPin, Pin, executable_name, parse_pin
from .layout import InstallPaths, Progress, download_home, link, origin_of, tree_size
from .record import InstallRecord

DEFAULT_BASE_URL = "https://github.com"
RETRIES = 3
BACKOFF_S = 0.5  # doubled after each failed try


def resolve_releases(
    url: str,
    spec: SpecifierSet,
    newest: int,
    *,
    prereleases: bool = False,
    transport: httpx.BaseTransport | None = None,
) -> list[str]:
    """The newest ``newest`` release tags in ``spec`` from a release list in GitHub's API layout at ``url``
    (tags kept as written: "v0.0.140"), oldest first; drafts always skipped, pre-releases unless asked."""
    try:
        with httpx.Client(transport=transport, timeout=30, follow_redirects=True) as client:
            resp = client.get(url, headers={"Accept": "application/vnd.github+json"})
    except httpx.HTTPError as exc:
        raise InstallError(f"cannot list releases at {url}: {type(exc).__name__}: {exc}") from exc
    if resp.status_code != 200:
        raise InstallError(f"cannot list releases at {url}: HTTP {resp.status_code}")
    found: list[Pin] = []
    for rel in resp.json():
        if not isinstance(rel, dict) or rel.get("draft") or (rel.get("prerelease") and not prereleases):
            continue
        try:
            pin = parse_pin(str(rel.get("tag_name", "")))
        except InvalidPin:
            continue  # not a version tag
        if spec.contains(pin.version, prereleases=prereleases):
            found.append(pin)
    found.sort(key=lambda p: p.version)
    if not found:
        raise InstallError(f"no release at {url} matches {spec or 'any version'}")
    return [p.text for p in found[-newest:]]


def _get(client: httpx.Client, url: str, dest: Path | None, progress: Progress) -> tuple[bytes, str]:
    """GET with retries; streams to ``dest`` when given. Returns (body or b"", sha256 hex)."""
    delay = BACKOFF_S
    for attempt in range(1, RETRIES + 1):
        try:
            with client.stream("GET", url) as resp:
                if resp.status_code == 404:
                    raise InstallError(f"HTTP 404 Not Found: {url}")
                if resp.status_code >= 500 and attempt < RETRIES:
                    raise httpx.HTTPStatusError(f"HTTP {resp.status_code}", request=resp.request, response=resp)
                if resp.status_code != 200:
                    raise InstallError(f"HTTP {resp.status_code}: {url}")
                digest = hashlib.sha256()
                if dest is None:
                    body = resp.read()
                    digest.update(body)
                    return body, digest.hexdigest()
                with dest.open("wb") as out:
                    for block in resp.iter_bytes(1 << 20):
                        digest.update(block)
                        out.write(block)
                return b"", digest.hexdigest()
        except (httpx.TransportError, httpx.HTTPStatusError) as exc:
            if attempt == RETRIES:
                raise InstallError(
                    f"download failed after {RETRIES} tries: {url}: {type(exc).__name__}: {exc}"
                ) from exc
            progress(f"retrying in {delay:g} s ({type(exc).__name__}: {exc})")
            time.sleep(delay)
            delay *= 2
    raise AssertionError("unreachable")


def expected_sha256(sums: str, filename: str) -> str:
    """The hash of ``filename`` in a ``sha256sum.txt`` (``<hex>  [*]<name>`` lines)."""
    for line in sums.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("*").rsplit("/", 1)[-1] == filename:
            return parts[0].lower()
    raise InstallError(f"sha256sum.txt has no entry for {filename}")


def safe_extract(archive: Path, dest: Path) -> None:
    """Unzip refusing absolute members, members that escape ``dest`` and symlinks."""
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            member = PurePosixPath(info.filename)
            if member.is_absolute() or ".." in member.parts or info.filename.startswith("\\\\"):
                raise InstallError(f"refusing archive member {info.filename!r}: it escapes the target directory")
            if stat.S_ISLNK(info.external_attr >> 16):
                raise InstallError(f"refusing archive member {info.filename!r}: symlinks are not allowed")
        zf.extractall(dest)  # safe: every member was checked above
        for info in zf.infolist():  # zipfile drops permissions; keep the archive's rwx bits (never setuid/setgid)
            mode = (info.external_attr >> 16) & 0o777
            if mode and not info.is_dir():
                (dest / info.filename).chmod(mode | stat.S_IRUSR | stat.S_IWUSR)


def _already_there(
    exe: Path, paths: InstallPaths, backend: str, plan: DownloadPlan, marker: Path, target: Path, started: float
) -> InstallRecord:
    """A pin already in the bin dir: a download of ours (with the URL and hash it was verified against), or,
    by GPUStack's manual-install rule, an executable used as is."""
    if origin_of(exe, paths, backend) != "download":
        return InstallRecord(kind="manual", executable=str(exe))
    try:
        fetched = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        fetched = {}
    return InstallRecord(
        kind="download",
        executable=str(exe),
        url=str(fetched.get("url", plan.url)),
        sha256=str(fetched.get("sha256", "")),
        size_bytes=tree_size(target) if target.exists() else 0,
        seconds=time.monotonic() - started,
    )


def _unpack(tmp: Path, plan: DownloadPlan, target: Path) -> Path:
    """The verified archive in ``tmp`` unpacked safely and moved into ``target`` whole (atomically); returns
    the executable's path inside it."""
    unpacked = tmp / "unpacked"
    try:
        safe_extract(tmp / "asset.zip", unpacked)
    except zipfile.BadZipFile as exc:
        raise InstallError(f"{plan.filename} is not a valid zip archive: {exc}") from exc
    name = plan.executable
    found = [p for p in unpacked.rglob("*") if p.name in (name, name + ".exe") and p.is_file()]
    if not found:
        raise InstallError(f"{plan.filename} holds no {name!r} executable")
    found[0].chmod(found[0].stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    if target.exists():
        shutil.rmtree(target)
    inside = found[0].relative_to(unpacked)
    os.replace(unpacked, target)  # atomic: the version dir appears whole or not at all
    return inside


def install_archive(
    backend: str,
    pin: Pin,
    paths: InstallPaths,
    plan: DownloadPlan,
    *,
    allow_http: bool = False,
    sha256: str | None = None,
    transport: httpx.BaseTransport | None = None,
    progress: Progress = lambda _: None,
) -> InstallRecord:
    """Download, verify (sha256), unpack safely and atomically into ``<bin>/<backend>/<backend>-<version>/``,
    and link ``<bin>/<backend>_<version>`` to the executable inside; nothing is left behind on failure."""
    exe = paths.bin_dir / executable_name(backend, pin)
    home = download_home(paths, backend)
    target = home / f"{backend}-{pin.text}"
    marker = paths.data_dir / "downloads" / f"{exe.name}.json"  # what was fetched: url and verified sha256
    for d in (home, paths.lock_dir, paths.log_dir):
        d.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with FileLock(str(paths.lock_dir / f"{exe.name}.lock")):
        if exe.is_symlink() and not exe.exists():
            progress(f"removing broken link {exe}")
            exe.unlink()
        if exe.exists():
            return _already_there(exe, paths, backend, plan, marker, target, started)
        for url in (plan.url, plan.sums_url):
            scheme = url.split("://", 1)[0].lower()
            if scheme != "https" and not (scheme == "http" and allow_http):
                raise InstallError(f"refusing download URL {url!r}: https only (allow an http mirror explicitly)")
        timeout = httpx.Timeout(60.0, connect=10.0)
        with httpx.Client(transport=transport, timeout=timeout, follow_redirects=True) as client:
            if sha256 is None:
                progress(f"fetching {plan.sums_url}")
                sums, _ = _get(client, plan.sums_url, None, progress)
                sha256 = expected_sha256(sums.decode("utf-8", "replace"), plan.filename)
            tmp = Path(tempfile.mkdtemp(prefix=".partial-", dir=home))
            try:
                progress(f"downloading {plan.url}")
                _, got = _get(client, plan.url, tmp / "asset.zip", progress)
                if got != sha256.lower():
                    raise InstallError(f"sha256 mismatch for {plan.filename}: expected {sha256.lower()}, got {got}")
                inside = _unpack(tmp, plan, target)
                marker.parent.mkdir(parents=True, exist_ok=True)
                marker.write_text(json.dumps({"url": plan.url, "sha256": got}) + "\n", encoding="utf-8")
                link(exe, target / inside)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    return InstallRecord(
        kind="download",
        executable=str(exe),
        installed_now=True,
        seconds=time.monotonic() - started,
        size_bytes=tree_size(target),
        url=plan.url,
        sha256=got,
    )
