"""What a plan's probes share while one server is up: the cell's result to fill, the server, and the outputs
this pin gave (stored for the others) next to the reference pin's."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

import httpx

from ..errors import HarnessError
from ..probes import accuracy as task_sets
from ..probes import speech
from ..results import CellResult, TextAccuracy
from ..spec import Accuracy, ModelSpec, Thresholds, Workload
from .context import RunContext
from .reference import ReferenceStore

Alive = Callable[[str], None]  # raises ProbeError when the server has died (the argument says during what)


@dataclass(frozen=True)
class Together:
    """The partner's server, up beside this cell's."""

    url: str
    # Each side's server's CPU time so far ("ours", "theirs"): a side is measured once the other has gone quiet.
    # None where it cannot be read (not Linux); then the sides follow each other without waiting.
    cpu_s: Callable[[str], float | None] = lambda _side: None


# Starts the partner's server beside this one (the deployed pin, or a twin of this pin) and yields it; raises
# NotTogether when the two do not fit on this machine at once.
Partner = Callable[[], AbstractContextManager[Together]]


class NotTogether(Exception):
    """The partner's server cannot be up beside this one here (memory, GPU memory): say why, measure alone."""


@dataclass(kw_only=True)
class Probing:
    """One cell's probes against one running server. A probe is a function of this (``harness.cell.plans``)."""

    ctx: RunContext
    result: CellResult
    model: ModelSpec
    base_url: str
    alive: Alive = lambda _: None
    outputs: dict[str, Any] = field(default_factory=dict)  # what this pin answered, stored for the other pins
    clips: list[speech.Clip] = field(default_factory=list)  # stt: the speech every pin hears
    scored: TextAccuracy | None = None  # task accuracy, gated once the reference's is known
    transport: httpx.BaseTransport | None = None  # tests: an httpx.MockTransport in place of the server
    headers: Mapping[str, str] = field(default_factory=dict)  # a GPUStack API key: sent, never stored or shown
    deployed_as: str = ""  # the name the server serves the model under, when not the matrix's (GPUStack)
    partner: Partner | None = None  # for paired rounds (None: this cell's load points are measured alone)
    partner_label: str = ""  # the partner's pin label, as verdicts name it
    not_paired: str = ""  # why there is no partner, when there is none
    # Spawns the partner's server now, so that it boots while the correctness probes run (``partner`` then only
    # waits for it to be ready): the time of a second server start, saved from every paired cell
    head_start: Callable[[], None] | None = None
    closers: list[Callable[[], None]] = field(default_factory=list)  # run once the probes end, however they end

    @property
    def served_name(self) -> str:
        """The model name requests carry."""
        return self.deployed_as or self.model.name

    @property
    def workload(self) -> Workload:
        return self.ctx.matrix.workload

    @property
    def thresholds(self) -> Thresholds:
        return self.ctx.matrix.thresholds

    @property
    def accuracy(self) -> Accuracy:
        return self.ctx.matrix.accuracy

    def say(self, message: str) -> None:
        self.ctx.progress(message)

    def client(self, timeout: float | None = None) -> httpx.Client:
        timeout = timeout or self.thresholds.request_timeout_s
        return httpx.Client(
            base_url=self.base_url, timeout=timeout, transport=self.transport, headers=dict(self.headers)
        )

    @functools.cached_property
    def items(self) -> list[task_sets.Item]:
        """The task-accuracy items (text models): built-in seeded sets and the matrix's JSONL files."""
        if not self.model.kind.generates_text:
            return []
        acc, seed = self.accuracy, self.workload.seed
        items = [i for task in acc.tasks for i in task_sets.builtin_items(task, acc.items_per_task, seed)]
        for path in acc.files:
            try:
                items += task_sets.load_jsonl(path)
            except (OSError, ValueError) as exc:
                raise HarnessError(f"accuracy file: {exc}") from exc
        return items

    @functools.cached_property
    def store(self) -> ReferenceStore:
        """Keyed by what shapes the outputs: the accuracy items, the speech clips, this machine's numerics."""
        fp = self.result.fingerprint
        return ReferenceStore(
            self.ctx,
            self.model,
            self.items,
            extra=[c.path.name for c in self.clips] or None,
            numerics=fp.numerics if fp is not None else "unknown",
            variant=self.result.variant,
        )

    @functools.cached_property
    def reference(self) -> dict[str, Any] | None:
        """The reference pin's stored outputs (None for the reference pin itself, or when it has none yet)."""
        return None if self.result.is_baseline else self.store.load()

    def save_outputs(self) -> None:
        self.store.save(self.result.version, self.outputs)
