"""Which releases of a matrix's backend exist: the one place version ranges and bisect ask.

A pip-installed backend's releases come from the package index (PEP 691, ``index.py``); a downloaded one's
from its release list (GitHub's API layout, at the mirror); ``installed``: the ``<backend>_<version>``
pins already in the bin dir.
"""

from __future__ import annotations

from packaging.specifiers import SpecifierSet

from . import index
from .errors import InstallError
from .install import InstallPaths, list_pins
from .install.download import resolve_releases
from .spec import Matrix, VersionSet
from .versions import InvalidPin, parse_pin


def find(matrix: Matrix, platform: str, vs: VersionSet, *, paths: InstallPaths, download_base_url: str) -> list[str]:
    """The versions ``vs`` names, oldest first. Raises ``index.IndexError_`` or ``InstallError`` (one line each)."""
    backend = matrix.get_backend()
    if vs.installed:
        found = []
        for pin in list_pins(paths):
            try:
                ok = pin.backend == backend.name and (vs.spec is None or vs.spec.contains(parse_pin(pin.version).version, prereleases=True))
            except InvalidPin:
                continue
            if ok:
                found.append(pin.version)
        return sorted(found, key=lambda text: parse_pin(text).version)
    spec = vs.spec if vs.spec is not None else SpecifierSet()
    if backend.installer == "download":  # a release list, not a package index
        url = backend.flavour(platform).releases_url(download_base_url)
        if url is None:
            raise InstallError(f"{vs.describe()}: {backend.name} downloads from a URL with no release list; name its versions")
        return resolve_releases(url, spec, vs.newest, prereleases=vs.prereleases)
    return index.resolve(matrix.platforms[platform].package, spec, vs.newest, prereleases=vs.prereleases)
