"""A matrix cut into shards for a fleet: each machine runs ``--shard i/n`` and ``harness report`` merges them.

The harness stays a cell runner; GitHub Actions matrices, Slurm arrays and Kubernetes Indexed Jobs fan the
shards out. Assignment is deterministic (the same matrix, shard count and history give the same shards on
every machine) and balanced by expected cost: a cell's wall time from history when it has one, else 1,
placed largest first on the least-loaded shard. A model's reference cell runs in every shard that has
other cells of that model (agreement compares against its outputs, which another machine cannot share);
merging keeps one of them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .errors import HarnessError
from .spec import Matrix

_SHARD = re.compile(r"^(\d+)/(\d+)$")


@dataclass(frozen=True, kw_only=True)
class PlannedCell:
    cell_id: str
    version: str
    model: str
    platform: str
    reference: bool  # the cell others of its model and variant are compared with
    gpus: int  # GPUs the cell needs (0: CPU)
    shards: tuple[int, ...]  # 1-based shards that run it (a reference cell: every shard with its model)
    cost: float  # expected seconds (1.0 when history has nothing)
    variant: str = ""

    def to_dict(self) -> dict[str, object]:
        return {
            "cell_id": self.cell_id,
            "version": self.version,
            "model": self.model,
            "platform": self.platform,
            **({"variant": self.variant} if self.variant else {}),
            "reference": self.reference,
            "gpus": self.gpus,
            "shards": list(self.shards),
            "expected_s": self.cost,
        }


def parse_shard(text: str) -> tuple[int, int]:
    m = _SHARD.match(text.strip())
    if not m or not 1 <= int(m.group(1)) <= int(m.group(2)):
        raise HarnessError(f"--shard {text!r}: expected i/n with 1 <= i <= n (e.g. 1/4)")
    return int(m.group(1)), int(m.group(2))


Key = tuple[str, str, str]  # (version, model, variant)


def plan(
    matrix: Matrix,
    platform: str,
    cell_ids: Mapping[Key, str],
    *,
    shards: int = 1,
    costs: Mapping[str, float] | None = None,
) -> list[PlannedCell]:
    """Every cell of ``platform`` and the shards that run it. ``cell_ids``: (version, model, variant) -> cell id."""
    plat = matrix.platforms[platform]
    costs = costs or {}
    cells = [(p.pin.text, m.name, v.name) for m in plat.models for v in plat.variants for p in plat.versions]
    ref = plat.reference.text

    def baseline(c: Key) -> bool:  # the reference pin of a variant compared with itself
        return c[0] == ref and plat.variant(c[2]).baseline == c[2]

    others = sorted((c for c in cells if not baseline(c)), key=lambda c: (-costs.get(cell_ids[c], 1.0), cell_ids[c]))
    load = [0.0] * shards
    where: dict[Key, tuple[int, ...]] = {}
    for c in others:
        k = min(range(shards), key=lambda i: (load[i], i))
        load[k] += costs.get(cell_ids[c], 1.0)
        where[c] = (k + 1,)
    for c in cells:
        if baseline(c):  # every shard with a cell compared against it
            with_model = sorted(
                {k for o, ks in where.items() if o[1] == c[1] and plat.variant(o[2]).baseline == c[2] for k in ks}
            )
            where[c] = tuple(with_model) or (1,)  # a model with only its reference pin: the first shard runs it
    return [
        PlannedCell(
            cell_id=cell_ids[c],
            version=c[0],
            model=c[1],
            platform=platform,
            reference=baseline(c),
            variant=c[2],
            gpus=plat.gpus_per_cell,
            shards=where[c],
            cost=costs.get(cell_ids[c], 1.0),
        )
        for c in cells
    ]


def selected(planned: Sequence[PlannedCell], shard: int) -> set[str]:
    return {p.cell_id for p in planned if shard in p.shards}
