"""Version sets resolved against a package index: PEP 691 JSON simple API over httpx.

``{ spec = ">=0.27,<0.33", newest = 3 }`` becomes the newest 3 releases matching the specifier, skipping
yanked releases (every file yanked) and pre-releases unless asked. The index is the one pip is
configured with (PIP_INDEX_URL, else ``pip config``), else PyPI.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass

import httpx
from packaging.specifiers import SpecifierSet
from packaging.utils import (
    InvalidSdistFilename,
    InvalidWheelFilename,
    canonicalize_name,
    parse_sdist_filename,
    parse_wheel_filename,
)
from packaging.version import Version

from .errors import HarnessError

PYPI = "https://pypi.org/simple"
JSON_ACCEPT = "application/vnd.pypi.simple.v1+json"


class IndexError_(HarnessError):
    """The index could not be asked, or had nothing that matched."""


def configured_index_url() -> str:
    if env := os.environ.get("PIP_INDEX_URL"):
        return env
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "config", "get", "global.index-url"], capture_output=True, text=True
    )
    url = proc.stdout.strip()
    return url if proc.returncode == 0 and url else PYPI


@dataclass(frozen=True)
class Release:
    version: Version
    yanked: bool


def _version_of(filename: str) -> Version | None:
    try:
        if filename.endswith(".whl"):
            return parse_wheel_filename(filename)[1]
        return parse_sdist_filename(filename)[1]
    except (InvalidWheelFilename, InvalidSdistFilename):
        return None


def releases(package: str, index_url: str, *, client: httpx.Client | None = None) -> list[Release]:
    """Every release of ``package`` on the index; a release is yanked when all of its files are."""
    url = f"{index_url.rstrip('/')}/{canonicalize_name(package)}/"
    own = client is None
    client = client or httpx.Client(timeout=30, follow_redirects=True)
    try:
        resp = client.get(url, headers={"Accept": JSON_ACCEPT})
    except httpx.HTTPError as exc:
        raise IndexError_(f"cannot list {package} on {index_url}: {type(exc).__name__}: {exc}") from exc
    finally:
        if own:
            client.close()
    if resp.status_code == 404:
        raise IndexError_(f"{package} is not on {index_url}")
    if resp.status_code != 200 or JSON_ACCEPT not in resp.headers.get("content-type", ""):
        raise IndexError_(
            f"{url}: HTTP {resp.status_code}, {resp.headers.get('content-type')!r} (a PEP 691 JSON index is needed)"
        )
    files: dict[Version, list[bool]] = {}
    for f in resp.json().get("files", []):
        v = _version_of(f.get("filename", ""))
        if v is not None:
            files.setdefault(v, []).append(bool(f.get("yanked")))
    return [Release(version=v, yanked=all(flags)) for v, flags in sorted(files.items())]


def resolve(
    package: str,
    spec: SpecifierSet,
    newest: int,
    *,
    prereleases: bool = False,
    index_url: str | None = None,
    client: httpx.Client | None = None,
) -> list[str]:
    """The newest ``newest`` non-yanked versions in ``spec``, oldest first."""
    index_url = index_url or configured_index_url()
    candidates = [r.version for r in releases(package, index_url, client=client) if not r.yanked]
    matching = sorted(spec.filter(candidates, prereleases=prereleases))
    if not matching:
        raise IndexError_(
            f"no release of {package} on {index_url} matches {spec or 'any version'}"
            + ("" if prereleases else " (pre-releases excluded)")
        )
    return [str(v) for v in matching[-newest:]]
