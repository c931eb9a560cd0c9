"""Probes of what the server says about itself: the version that really runs (``server.version``), its
token counters around requests nothing else overlapped (``metrics.token_accounting``), and the metric
families it exposes against the reference pin's (``metrics.names``)."""

from __future__ import annotations

import asyncio
import dataclasses
import statistics
import time

import httpx

from ..backends import ServedMetrics
from ..errors import ProbeError
from ..load import text as loadgen
from ..load.metrics import RequestRecord
from ..probes import served as judge
from ..results import Check, Served
from ..versions import parse_pin
from .probing import Probing

ACCOUNTING_REQUESTS = 4  # sent two at a time between the scrapes: enough to see batching, seconds on a CPU
SETTLE_S = 3.0  # counters a server updates just after the response: read again until they stop moving


def _served(p: Probing) -> ServedMetrics:
    return p.ctx.matrix.flavour(p.ctx.platform).served


def _record(p: Probing, **changes: object) -> None:
    p.result.served = dataclasses.replace(p.result.served or Served(), **changes)  # type: ignore[arg-type]


def server_version(p: Probing) -> None:
    """The version the server reports, against the pin (a bin-dir executable may run another one)."""
    if any(c.name == "server.version" for c in p.result.checks):
        return  # already known from where the pin was deployed (GPUStack's instance)
    served = _served(p)
    p.say(f"asking the server its version ({served.version_path or 'not exposed'})")
    with p.client() as client:
        reported, ex, why_not = judge.fetch_version(client, served)
    check = judge.version_check(reported, why_not, parse_pin(p.result.version), served.version_scheme, ex)
    p.result.checks.append(check)
    _record(p, version=reported or "", version_matches=check.passed)


def served_metrics(p: Probing) -> None:
    """Token counters around a few requests against the usage they returned; the families exposed (stored,
    so other pins compare theirs with the reference pin's)."""
    served = _served(p)
    if not served.metrics_path:
        detail = "not exposed: this backend serves no metrics the harness knows how to read"
        p.result.checks.append(Check(group=judge.GROUP, name="metrics.token_accounting", passed=None, detail=detail))
        return
    p.say(f"reading {served.metrics_path} around {ACCOUNTING_REQUESTS} requests (token accounting)")
    with p.client() as client:
        before = judge.scrape(client, served.metrics_path)
        records = asyncio.run(_send(p))
        after = _settled(client, served, before, records)
    p.outputs["metric_families"] = after.backend_families
    _record(p, families=tuple(after.backend_families))
    if not served.counts_tokens:
        detail = "not exposed: this backend has no token counters the harness knows"
        p.result.checks.append(Check(group=judge.GROUP, name="metrics.token_accounting", passed=None, detail=detail))
        return
    prompt, output = sum(r.prompt_tokens for r in records), sum(r.output_tokens for r in records)
    check = judge.accounting_check(before, after, served, prompt, output, len(records))
    ttfts = [r.chunk_times[0] - r.sent for r in records if r.chunk_times]
    client_ttft = statistics.median(ttfts) * 1000 if ttfts else None
    server_ttft = judge.histogram_median_s(before, after, served.ttft_histogram) if served.ttft_histogram else None
    if server_ttft is not None and client_ttft is not None:
        check = dataclasses.replace(
            check,
            detail=check.detail + f"; TTFT p50 {server_ttft * 1000:.0f} ms by the server's histogram, "
            f"{client_ttft:.0f} ms by the client",
        )
    p.result.checks.append(check)
    _record(
        p,
        tokens_match=check.passed,
        client_ttft_p50_ms=client_ttft,
        server_ttft_p50_ms=None if server_ttft is None else server_ttft * 1000,
    )


async def _send(p: Probing) -> list[RequestRecord]:
    w = p.workload
    flavour = p.ctx.matrix.flavour(p.ctx.platform)
    extra = {"ignore_eos": True} if w.ignore_eos and flavour.supports_ignore_eos else {}
    prompts = loadgen.make_prompts(ACCOUNTING_REQUESTS, w.input_tokens, w.seed + 7)
    gate = asyncio.Semaphore(2)
    timeout = httpx.Timeout(p.thresholds.request_timeout_s)
    async with httpx.AsyncClient(base_url=p.base_url, timeout=timeout, headers=dict(p.headers)) as client:

        async def one(prompt: str) -> RequestRecord:
            async with gate:
                return await loadgen.stream_completion(client, p.served_name, prompt, w.output_tokens, extra)

        records = await asyncio.gather(*(one(x) for x in prompts))
    failed = [r.error for r in records if r.error]
    if failed:
        raise ProbeError(f"{len(failed)} of {len(records)} token-accounting requests failed: {failed[0]}")
    return list(records)


def _settled(
    client: httpx.Client, served: ServedMetrics, before: judge.Scrape, records: list[RequestRecord]
) -> judge.Scrape:
    """The metrics once the token counters stop moving (or match), read for at most ``SETTLE_S``."""
    want = sum(r.output_tokens for r in records)
    deadline = time.monotonic() + SETTLE_S
    after = judge.scrape(client, served.metrics_path)
    while served.counts_tokens and time.monotonic() < deadline:
        moved = after.samples.get(served.generation_counter, 0.0) - before.samples.get(served.generation_counter, 0.0)
        if moved >= want:
            break
        time.sleep(0.1)
        after = judge.scrape(client, served.metrics_path)
    return after


def metric_names(p: Probing) -> None:
    """The families this pin exposes against the reference pin's; the platform's required ones present."""
    ours = p.outputs.get("metric_families")
    if ours is None:
        return  # no metrics endpoint: served_metrics said so
    required = p.ctx.matrix.platforms[p.ctx.platform].required_metrics
    label = p.store.ref_label
    if p.result.is_baseline:
        theirs: list[str] | None = list(ours)
    else:
        stored = p.reference.get("metric_families") if p.reference else None
        theirs = list(stored) if isinstance(stored, list) else None
    check, added, removed = judge.names_check(ours, theirs, label, required)
    if p.result.is_baseline:
        check = dataclasses.replace(check, detail=f"{len(ours)} families (this is the reference pin)")
    p.result.checks.append(check)
    if theirs is not None and not p.result.is_baseline:
        _record(p, compared_with=label, added=added, removed=removed)
