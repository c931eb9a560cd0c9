from __future__ import annotations

import pytest

from harness.errors import HarnessError
from harness.versions import InvalidPin, executable_name, parse_pin, pipx_suffix, requirement, split_executable_name


def test_pin_keeps_text_as_written() -> None:
    pin = parse_pin("v0.8.5")
    assert pin.text == "v0.8.5"
    assert str(pin.version) == "0.8.5"


@pytest.mark.parametrize(
    ("backend", "version", "windows", "expected"),
    [
        ("vllm", "v0.7.3", False, "vllm_v0.7.3"),
        ("vllm", "0.32.0", False, "vllm_0.32.0"),
        ("llama-box", "v0.0.140", True, "llama-box_v0.0.140.exe"),
        ("vox-box", "0.0.12", False, "vox-box_0.0.12"),
    ],
)
def test_executable_names_follow_gpustack(backend: str, version: str, windows: bool, expected: str) -> None:
    assert executable_name(backend, parse_pin(version), windows=windows) == expected


def test_pipx_suffix_and_requirement() -> None:
    pin = parse_pin("v0.8.5")
    assert pipx_suffix(pin) == "_v0.8.5"
    assert requirement("vllm", pin) == "vllm==v0.8.5"


@pytest.mark.parametrize("text", ["0.1; rm -rf /", "$(id)", "", " 0.1", "0.1 ", "latest", "../0.1"])
def test_invalid_versions_are_refused(text: str) -> None:
    with pytest.raises(InvalidPin):
        parse_pin(text)


def test_invalid_backend_name() -> None:
    with pytest.raises(HarnessError, match="invalid backend name 'vllm; id'"):
        executable_name("vllm; id", parse_pin("1.0"))


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("vllm_v0.7.3", ("vllm", "v0.7.3")),
        ("llama-box_v0.0.140.exe", ("llama-box", "v0.0.140")),
        ("llama.cpp_11434.0.0", ("llama.cpp", "11434.0.0")),
        ("vllm", None),
        ("vllm_latest", None),
        ("README_1.0.md", None),
        ("_1.0", None),
    ],
)
def test_split_executable_name(name: str, expected: tuple[str, str] | None) -> None:
    got = split_executable_name(name)
    assert (got if got is None else (got[0], got[1].text)) == expected
