"""Which releases of a matrix's backend exist: the one place version ranges and bisect ask.

A pip-installed backend's releases come from the package index (PEP 691, ``index.py``); a downloaded one's
from its release list (GitHub's API layout, at the mirror); ``installed``: the ``<backend>_<version>``
pins already in the bin dir; ``gpustack_runner``: the versions GPUStack ships images of (``catalogue.py``).
"""

from __future__ import annotations

import dataclasses

from packaging.specifiers import SpecifierSet

from . import catalogue, gpustack, index
from .errors import InstallError, SpecError
from .install import InstallPaths, list_pins
from .install.download import resolve_releases
from .spec import Matrix, PinSpec, VersionSet
from .versions import InvalidPin, parse_pin


def find(matrix: Matrix, platform: str, vs: VersionSet, *, paths: InstallPaths, download_base_url: str) -> list[str]:
    """The versions ``vs`` names, oldest first. Raises ``index.IndexError_`` or ``InstallError`` (one line each)."""
    backend = matrix.get_backend()
    target = matrix.platforms[platform].gpustack
    if vs.gpustack_backend:
        if target is None:
            raise InstallError(f"{vs.describe()}: only a GPUStack platform lists GPUStack's versions")
        client = gpustack.Client(target.url, gpustack.api_key(target.api_key_env, target.url), verify=target.verify_tls)
        try:
            return sorted(client.backend_versions(vs.gpustack_backend), key=lambda text: parse_pin(text).version)
        finally:
            client.close()
    if vs.catalogue:
        return catalogue.versions(catalogue.load(paths.data_dir), backend.name, vs.catalogue, vs.newest)
    if vs.installed:
        found = []
        for pin in list_pins(paths):
            try:
                ok = pin.backend == backend.name and (
                    vs.spec is None or vs.spec.contains(parse_pin(pin.version).version, prereleases=True)
                )
            except InvalidPin:
                continue
            if ok:
                found.append(pin.version)
        return sorted(found, key=lambda text: parse_pin(text).version)
    spec = vs.spec if vs.spec is not None else SpecifierSet()
    if backend.installer == "download":  # a release list, not a package index
        url = backend.flavour(platform).releases_url(download_base_url)
        if url is None:
            raise InstallError(
                f"{vs.describe()}: {backend.name} downloads from a URL with no release list; name its versions"
            )
        return resolve_releases(url, spec, vs.newest, prereleases=vs.prereleases)
    return index.resolve(matrix.platforms[platform].package, spec, vs.newest, prereleases=vs.prereleases)


def resolve(matrix: Matrix, platform: str, *, paths: InstallPaths, download_base_url: str) -> Matrix:
    """The matrix with ``platform``'s ranges and "installed" entries turned into concrete pins (deduplicated,
    in version order); a lookup that fails is the matrix's error, naming the platform's versions."""
    plat = matrix.platforms[platform]
    if not plat.version_sets:
        return matrix
    pins = {p.pin.text: p for p in plat.versions}
    for vs in plat.version_sets:
        try:
            found = find(matrix, platform, vs, paths=paths, download_base_url=download_base_url)
        except (index.IndexError_, InstallError, catalogue.CatalogueError, gpustack.GpustackError) as exc:
            raise SpecError(str(matrix.path), [f"platforms.{platform}.versions: {exc}"]) from exc
        for text in found:
            pins.setdefault(text, PinSpec(pin=parse_pin(text), why=vs.describe()))
    # The deployed pin is what every other is compared with: in the run even when a set has moved past it.
    pins.setdefault(plat.reference.text, PinSpec(pin=plat.reference, why="the reference (deployed) pin"))
    ordered = tuple(sorted(pins.values(), key=lambda p: p.pin.version))
    return dataclasses.replace(
        matrix, platforms={**matrix.platforms, platform: dataclasses.replace(plat, versions=ordered)}
    )
