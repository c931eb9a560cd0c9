"""The probe plans: one per model kind, ordered probe functions; a probe is added with one line, and a base
model (completion) sends no chat request at all. The server is an httpx.MockTransport."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import httpx
import pytest

from harness.cell import Plan, Probing, RunContext, plan_for, text
from harness.cell import load as cell_load
from harness.errors import HarnessError
from harness.install import InstallPaths
from harness.results import CellResult, Check
from harness.slots import Slot
from harness.spec import ModelSpec, parse_matrix
from harness.words import ModelKind

HERE = Path(__file__).resolve()


def _probing(tmp_path: Path, kind: ModelKind, handler: httpx.MockTransport | None = None) -> Probing:
    matrix = parse_matrix(
        {
            "backend": "vllm",
            "platforms": {
                "cpu": {
                    "versions": ["0.31.0"],
                    "reference": "0.31.0",
                    "models": [{"name": "m", "source": f"file://{HERE}"}],
                }
            },
        },
        "m.toml",
    )
    ctx = RunContext(
        matrix=matrix,
        platform="cpu",
        paths=InstallPaths(data_dir=tmp_path, bin_dir=tmp_path / "bin", pipx=("pipx",)),
        run_dir=tmp_path / "run",
        slot=Slot(platform="cpu"),
    )
    result = CellResult(cell_id="c", backend="vllm", version="0.32.0", model="m", platform="cpu", is_reference=False)
    model = ModelSpec(name="m", source=f"file://{HERE}", kind=kind)
    return Probing(ctx=ctx, result=result, model=model, base_url="http://test", transport=handler)


def _openai(seen: list[str]) -> httpx.MockTransport:
    """Answers every OpenAI request with a small well-formed body, and remembers the paths asked."""

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        if request.url.path == "/v1/models":
            return httpx.Response(200, json={"object": "list", "data": [{"id": "m", "object": "model"}]})
        try:
            body = json.loads(request.content or b"{}")
        except ValueError:  # the malformed-JSON error check
            return httpx.Response(400, json={"error": {"message": "bad json"}})
        usage = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
        if request.url.path == "/v1/chat/completions":
            message = {"role": "assistant", "content": "4"}
            choice = {"index": 0, "message": message, "finish_reason": "length"}
            return httpx.Response(
                200, json={"id": "x", "object": "chat.completion", "choices": [choice], "usage": usage}
            )
        if body.get("stream"):
            return httpx.Response(200, text='data: {"choices": [{"index": 0, "text": "ab"}]}\n\ndata: [DONE]\n\n')
        choice = {"index": 0, "text": "ab", "finish_reason": "length"}
        return httpx.Response(200, json={"id": "x", "object": "text_completion", "choices": [choice], "usage": usage})

    return httpx.MockTransport(handle)


def test_every_model_kind_has_a_plan() -> None:
    for kind in ModelKind:
        plan = plan_for(kind)
        assert plan.kind is kind and plan.probes, kind
    assert plan_for(ModelKind.CHAT).names == [
        "start_partner",  # the paired rounds' partner boots while the probes before them run
        "api_conformance",
        "server_version",
        "greedy_samples",
        "task_accuracy",
        "served_metrics",
        "store_outputs",
        "greedy_agreement",
        "metric_names",
        "accuracy_gate",
        "throughput",
    ]
    assert plan_for(ModelKind.EMBEDDING).names[-1] == "embedding_agreement"  # no load for embeddings
    assert "throughput" not in plan_for(ModelKind.EMBEDDING).names


def test_an_unknown_kind_has_no_plan() -> None:
    with pytest.raises(HarnessError, match="no probe plan for model kind 'poetry'"):
        plan_for("poetry")  # type: ignore[arg-type]


def test_a_probe_is_one_function_and_one_line_in_a_plan(tmp_path: Path) -> None:
    ran: list[str] = []

    def first(p: Probing) -> None:
        ran.append("first")

    def last(p: Probing) -> None:
        ran.append("last")

    def server_says_hello(p: Probing) -> None:  # the new probe: a check with its evidence
        ran.append("hello")
        p.result.checks.append(Check(group="conformance", name="server.hello", passed=True, detail="hello"))

    plan = Plan(ModelKind.CHAT, (first, last)).with_probe(server_says_hello, before=last)
    assert plan.names == ["first", "server_says_hello", "last"]
    p = _probing(tmp_path, ModelKind.CHAT)
    plan.run(p)
    assert ran == ["first", "hello", "last"]
    assert [c.name for c in p.result.checks] == ["server.hello"]
    assert plan_for(ModelKind.CHAT).with_probe(server_says_hello).names[-1] == "server_says_hello"
    assert "server_says_hello" not in plan_for(ModelKind.CHAT).names  # the registered plan is left as it was


def test_a_base_model_gets_no_chat_request(tmp_path: Path) -> None:
    seen: list[str] = []
    p = _probing(tmp_path, ModelKind.COMPLETION, _openai(seen))
    text.api_conformance(p)
    assert seen and "/v1/chat/completions" not in seen
    assert not [c.name for c in p.result.checks if c.name.startswith("chat.")]
    assert "completion.logprobs_shape" in {c.name for c in p.result.checks}


def test_a_chat_model_gets_its_chat_checks(tmp_path: Path) -> None:
    seen: list[str] = []
    p = _probing(tmp_path, ModelKind.CHAT, _openai(seen))
    text.api_conformance(p)
    names = {c.name for c in p.result.checks}
    assert "/v1/chat/completions" in seen and {"chat.logprobs_shape"} <= names
    assert p.result.probe_s["conformance"] >= 0 and "logprobs" in p.result.conformance_s


def test_the_reference_pin_compares_with_nobody(tmp_path: Path) -> None:
    p = _probing(tmp_path, ModelKind.CHAT)
    p.result.is_reference = True
    p.outputs["samples"] = []
    text.greedy_agreement(p)
    assert p.result.agreement is not None and p.result.agreement.kind.value == "reference"
    assert [c.name for c in p.result.checks] == ["agreement.reference"]


def test_without_the_references_outputs_agreement_is_not_evaluated(tmp_path: Path) -> None:
    p = _probing(tmp_path, ModelKind.CHAT)
    p.outputs["samples"] = []
    text.greedy_agreement(p)
    (check,) = p.result.checks
    assert check.name == "agreement.greedy" and check.passed is None and "has no stored outputs" in check.detail


def test_load_stops_on_failed_requests(tmp_path: Path) -> None:
    from harness.errors import ProbeError
    from tests.support.cells import text_point

    point = text_point(1, 10.0)
    broken = type(point.run)(**{**point.run.__dict__, "failed": 1, "errors": ("HTTP 500",)})
    with pytest.raises(ProbeError, match="1 of 8 requests failed at c=1: HTTP 500"):
        cell_load._failed_requests([type(point)(**{**point.__dict__, "runs": [broken]})])


def test_a_load_points_progress_line_counts_every_request_of_every_repeat(tmp_path: Path) -> None:
    """A paired point is ten one-request waves a side: its line said "1/1 ok" (the median wave's count)."""
    from harness.load.metrics import aggregate
    from harness.results import Run

    said: list[str] = []
    p = _probing(tmp_path, ModelKind.CHAT)
    p.ctx = dataclasses.replace(p.ctx, progress=said.append)
    waves = [Run(rate=r, requests=1, completed=1, failed=0, duration_s=1.0, request_s=1.0) for r in (20, 21, 22)]
    waves.append(Run(rate=19, requests=1, completed=0, failed=1, duration_s=1.0, request_s=1.0))
    cell_load._text_point_line(p)(aggregate(waves, mode="concurrency", target=1))
    assert said and said[-1].endswith("3/4 ok"), said
