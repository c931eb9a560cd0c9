from __future__ import annotations

import hashlib
import io
import stat
import zipfile
from pathlib import Path

import httpx
import pytest

from harness.backends import Host
from harness.backends.llama_box import LLAMA_BOX, asset_name, release_url, releases_url
from harness.errors import InstallError
from harness.install import InstallPaths, InstallRequest, install_pin
from harness.install.download import expected_sha256, resolve_releases
from harness.versions import parse_pin

ASSET = "llama-box-linux-amd64-avx2"


@pytest.mark.parametrize(
    ("host", "toolkit", "expected"),
    [
        (Host(os="linux", arch="amd64"), "cpu", "llama-box-linux-amd64-avx2"),
        (Host(os="linux", arch="arm64"), "cpu", "llama-box-linux-arm64-neon"),
        (Host(os="linux", arch="amd64", cuda_version=(12, 4)), "cuda", "llama-box-linux-amd64-cuda-12.4"),
        (Host(os="linux", arch="amd64", cuda_version=(12, 8)), "cuda", "llama-box-linux-amd64-cuda-12.8"),
        (Host(os="linux", arch="amd64", cuda_version=(13, 0)), "cuda", "llama-box-linux-amd64-cuda-12.8"),
        (Host(os="windows", arch="amd64"), "hip", "llama-box-windows-amd64-hip-6.2"),
        (Host(os="darwin", arch="arm64"), "metal", "llama-box-darwin-arm64-metal"),
    ],
)
def test_asset_names_follow_gpustack(host: Host, toolkit: str, expected: str) -> None:
    assert asset_name(host, toolkit) == expected


def test_release_url_and_sha_lines() -> None:
    assert release_url("https://mirror.example/", "v0.0.140", "x.zip") == (
        "https://mirror.example/gpustack/llama-box/releases/download/v0.0.140/x.zip"
    )
    sums = f"{'a' * 64}  other.zip\n{'B' * 64} *{ASSET}.zip\n"
    assert expected_sha256(sums, f"{ASSET}.zip") == "b" * 64
    with pytest.raises(InstallError, match="sha256sum.txt has no entry for missing.zip"):
        expected_sha256(sums, "missing.zip")


def _zip(members: dict[str, bytes], symlink: str | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        if symlink:
            info = zipfile.ZipInfo(symlink)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, "/etc/passwd")
    return buf.getvalue()


def _mirror(files: dict[str, bytes], fail_first: int = 0) -> tuple[httpx.MockTransport, list[str]]:
    seen: list[str] = []
    failures = {"left": fail_first}

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        if failures["left"] > 0:
            failures["left"] -= 1
            return httpx.Response(503)
        name = request.url.path.rsplit("/", 1)[-1]
        return httpx.Response(200, content=files[name]) if name in files else httpx.Response(404)

    return httpx.MockTransport(handler), seen


def _files(zip_bytes: bytes, sha: str | None = None) -> dict[str, bytes]:
    sha = sha or hashlib.sha256(zip_bytes).hexdigest()
    return {f"{ASSET}.zip": zip_bytes, "sha256sum.txt": f"{sha}  {ASSET}.zip\n".encode()}


def _install(tmp_path: Path, transport: httpx.MockTransport, **kw):
    paths = InstallPaths(data_dir=tmp_path / "data", bin_dir=tmp_path / "bin", pipx=("false",))
    req = InstallRequest(
        backend=LLAMA_BOX,
        platform="cpu",
        pin=parse_pin("v0.0.140"),
        download_base_url="https://mirror.test",
        host=Host(os="linux", arch="amd64"),
        **kw,
    )
    return install_pin(req, paths, transport=transport)


def _leftovers(tmp_path: Path) -> list[str]:
    home = tmp_path / "bin" / "llama-box"
    return sorted(p.name for p in home.iterdir()) if home.exists() else []


def test_verified_download_is_unpacked_and_linked(tmp_path: Path) -> None:
    archive = _zip(
        {"dist/llama-box": b"#!/bin/sh\necho box\n", "dist/libllama.so": b"lib"}
    )  # zips carry a time: made once
    transport, seen = _mirror(_files(archive))
    got = _install(tmp_path, transport)
    assert (
        got.executable == str(tmp_path / "bin" / "llama-box_v0.0.140") and got.installed_now and got.kind == "download"
    )
    target = tmp_path / "bin" / "llama-box" / "llama-box-v0.0.140" / "dist" / "llama-box"
    assert Path(got.executable).resolve() == target.resolve() and target.stat().st_mode & stat.S_IXUSR
    zip_sha = hashlib.sha256(archive).hexdigest()
    assert (got.url, got.sha256) == (
        f"https://mirror.test/gpustack/llama-box/releases/download/v0.0.140/{ASSET}.zip",
        zip_sha,
    )
    assert seen == [
        "/gpustack/llama-box/releases/download/v0.0.140/sha256sum.txt",
        f"/gpustack/llama-box/releases/download/v0.0.140/{ASSET}.zip",
    ]
    again = _install(tmp_path, _mirror({})[0])  # nothing to download a second time
    assert (again.installed_now, again.kind, again.sha256) == (
        False,
        "download",
        zip_sha,
    )  # what was verified, remembered
    assert _leftovers(tmp_path) == ["llama-box-v0.0.140"]


def test_hash_in_the_matrix_skips_sha256sum(tmp_path: Path) -> None:
    z = _zip({"llama-box": b"x"})
    transport, seen = _mirror({f"{ASSET}.zip": z})
    _install(tmp_path, transport, sha256=hashlib.sha256(z).hexdigest())
    assert seen == [f"/gpustack/llama-box/releases/download/v0.0.140/{ASSET}.zip"]


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({}, "HTTP 404 Not Found: https://mirror.test/gpustack/llama-box/releases/download/v0.0.140/sha256sum.txt"),
        (
            _files(_zip({"llama-box": b"x"}), sha="0" * 64),
            f"sha256 mismatch for {ASSET}.zip: expected {'0' * 64}, got ",
        ),
        (
            _files(_zip({"../evil": b"x", "llama-box": b"x"})),
            "refusing archive member '../evil': it escapes the target directory",
        ),
        (
            _files(_zip({"/abs/llama-box": b"x"})),
            "refusing archive member '/abs/llama-box': it escapes the target directory",
        ),
        (_files(_zip({"llama-box": b"x"}, symlink="link")), "refusing archive member 'link': symlinks are not allowed"),
        (_files(b"not a zip at all"), f"{ASSET}.zip is not a valid zip archive"),
        (_files(_zip({"README": b"x"})), f"{ASSET}.zip holds no 'llama-box' executable"),
    ],
    ids=["404", "hash-mismatch", "zip-slip", "absolute", "symlink", "bad-zip", "no-executable"],
)
def test_faults_fail_cleanly(tmp_path: Path, files: dict[str, bytes], message: str) -> None:
    transport, _ = _mirror(files)
    with pytest.raises(InstallError) as info:
        _install(tmp_path, transport)
    assert str(info.value).startswith(message)
    assert _leftovers(tmp_path) == []  # nothing half-installed
    assert not (tmp_path / "bin" / "llama-box_v0.0.140").exists()
    assert not (tmp_path / "evil").exists() and not (tmp_path / "bin" / "evil").exists()


def test_http_mirror_needs_permission(tmp_path: Path) -> None:
    paths = InstallPaths(data_dir=tmp_path / "d", bin_dir=tmp_path / "b", pipx=("false",))
    req = InstallRequest(
        backend=LLAMA_BOX,
        platform="cpu",
        pin=parse_pin("v1"),
        download_base_url="http://mirror.test",
        host=Host(os="linux", arch="amd64"),
    )
    url = f"http://mirror.test/gpustack/llama-box/releases/download/v1/{ASSET}.zip"
    with pytest.raises(InstallError, match=f"refusing download URL '{url}': https only"):
        install_pin(req, paths)


def test_transient_errors_are_retried(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("harness.install.download.BACKOFF_S", 0.01)
    transport, seen = _mirror(_files(_zip({"llama-box": b"x"})), fail_first=2)
    assert _install(tmp_path, transport).installed_now
    assert len(seen) == 4  # two 503s, then sha256sum.txt and the zip


def test_archive_permissions_are_kept(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("llama-box", b"x")
        lib = zipfile.ZipInfo("rpc-server")
        lib.external_attr = (stat.S_IFREG | 0o4755) << 16  # setuid requested: not honoured
        zf.writestr(lib, b"y")
    _install(tmp_path, _mirror(_files(buf.getvalue()))[0])
    mode = (tmp_path / "bin" / "llama-box" / "llama-box-v0.0.140" / "rpc-server").stat().st_mode
    assert mode & 0o111 and not mode & stat.S_ISUID


def test_release_list_ranges() -> None:
    from packaging.specifiers import SpecifierSet

    releases = [
        {"tag_name": "v0.0.138", "draft": False, "prerelease": False},
        {"tag_name": "v0.0.139", "draft": False, "prerelease": False},
        {"tag_name": "v0.0.140", "draft": False, "prerelease": False},
        {"tag_name": "v0.0.141", "draft": True, "prerelease": False},  # drafts never
        {"tag_name": "v0.0.142rc1", "draft": False, "prerelease": True},
        {"tag_name": "nightly", "draft": False, "prerelease": False},  # not a version tag
    ]
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return httpx.Response(200, json=releases)

    t = httpx.MockTransport(handler)
    url = releases_url("https://mirror.test")
    assert resolve_releases(url, SpecifierSet(">=0.0.139"), 5, transport=t) == ["v0.0.139", "v0.0.140"]
    assert resolve_releases(url, SpecifierSet(">=0.0.139"), 1, prereleases=True, transport=t) == ["v0.0.142rc1"]
    assert seen[0] == "https://mirror.test/api/v3/repos/gpustack/llama-box/releases?per_page=100"
    assert releases_url("https://github.com") == "https://api.github.com/repos/gpustack/llama-box/releases?per_page=100"
    with pytest.raises(
        InstallError, match=r"no release at .*/gpustack/llama-box/releases\?per_page=100 matches >=1\.0"
    ):
        resolve_releases(url, SpecifierSet(">=1.0"), 1, transport=t)
