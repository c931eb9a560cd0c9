"""Each pin's probe outputs, stored so other pins (in this run or a later one) compare with the reference pin's."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from ..probes import accuracy, agreement
from ..spec import ModelSpec, VariantSpec
from ..versions import path_safe
from .context import RunContext


class ReferenceStore:
    """Each pin's probe outputs, keyed by everything that shapes them; the reference pin's are what
    other pins compare against, so a run without the reference pin still has something to compare to.

    The key includes what changes greedy numerics on this machine (the CPU's ISA, or the GPU model), so
    a data dir restored on another kind of machine never compares outputs across machines."""

    def __init__(
        self,
        ctx: RunContext,
        model: ModelSpec,
        items: list[accuracy.Item],
        extra: list[str] | None = None,
        numerics: str = "unknown",
        variant: str = "",
    ) -> None:
        w, t = ctx.matrix.workload, ctx.matrix.thresholds
        plat = ctx.matrix.platforms[ctx.platform]

        def digest(launch: VariantSpec) -> str:  # a variant's own launch arguments shape its outputs too
            shaped = [list(launch.serve_args), sorted(launch.env.items())] if launch.serve_args or launch.env else []
            key = json.dumps(
                [
                    model.source,
                    model.kind.value,
                    list(agreement.PROMPTS[: w.agreement_prompts]),
                    w.agreement_max_tokens,
                    t.top_logprobs,
                    list(model.serve_args),
                    accuracy.items_digest(items) if items else None,
                    numerics,
                ]
                + ([extra] if extra else [])
                + shaped
            )
            return hashlib.sha256(key.encode()).hexdigest()[:12]

        mine = plat.variant(variant)
        baseline = plat.variant(mine.baseline)
        self.digest, self.baseline_digest = digest(mine), digest(baseline)
        self.dir = ctx.paths.data_dir / "references" / ctx.matrix.backend / ctx.platform / model.name
        self.ref_version = plat.reference.text
        # what the checks say they compared with
        self.ref_label = self.ref_version + (f" [{baseline.name}]" if baseline.name else "")

    def _path(self, version: str, digest: str) -> Path:
        return self.dir / f"{path_safe(version)}-{digest}.json"

    def save(self, version: str, outputs: dict[str, Any]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self._path(version, self.digest)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(outputs), encoding="utf-8")
        os.replace(tmp, path)

    def load(self) -> dict[str, Any] | None:
        """The reference pin's outputs in the baseline variant."""
        path = self._path(self.ref_version, self.baseline_digest)
        data = json.loads(path.read_text(encoding="utf-8")) if path.exists() else None
        return data if isinstance(data, dict) else None
