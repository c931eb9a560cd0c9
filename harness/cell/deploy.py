"""A cell on a GPUStack 2.x server: the pin deployed as a model through the API (its backend_version), waited
for until ``running`` (each state's time a startup phase), its identity checked against the pin, the plan's
probes run through the server's ``/v1`` with the API key, and the model deleted when the cell ends, however
it ends (the ledger keeps it findable if the harness is killed outright)."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import httpx

from ..errors import LaunchError, ProbeError, ReadinessTimeout
from ..gpustack import FAILED, RUNNING, Client, Instance, Ledger, api_key, deployment_name
from ..probes import served as judge
from ..results import CellResult, Check, Deployment, Served, Startup
from ..spec import GpustackTarget, ModelSpec
from ..versions import parse_pin
from ..words import ModelKind
from .context import RunContext
from .probing import Probing
from .serve import Probes, judge_checks

ROUTE_WAIT_S = 120.0  # after "running", GPUStack's /v1 answers 503 until the route has a ready replica


def model_body(target: GpustackTarget, name: str, model: ModelSpec, version: str, result: CellResult) -> dict[str, Any]:
    """ModelCreate as GPUStack 2.x takes it (gpustack/schemas/models.py)."""
    scheme, _, rest = model.source.partition("://")
    if scheme == "hf":
        repo = rest.partition("@")[0]
        source: dict[str, Any] = {"source": "huggingface", "huggingface_repo_id": repo}
    else:  # file://: a path on the GPUStack worker
        source = {"source": "local_path", "local_path": rest}
    body = {
        "name": name,
        **source,
        "backend": target.backend,
        "backend_version": version,
        "backend_parameters": list(result.backend_parameters),
        "env": dict(result.backend_env),
        "replicas": 1,
        "restart_on_error": False,  # a pin that fails to start is the finding, not something to retry
        "enable_model_route": True,
        "categories": ["embedding"] if model.kind is ModelKind.EMBEDDING else ["llm"],
    }
    if target.cluster_id is not None:
        body["cluster_id"] = target.cluster_id
    if target.worker_selector:
        body["worker_selector"] = dict(target.worker_selector)
    if target.gpu_selector:
        body["gpu_selector"] = dict(target.gpu_selector)
    return body


def deploy_and_probe(ctx: RunContext, result: CellResult, model: ModelSpec, probes: Probes) -> None:
    target = ctx.matrix.platforms[ctx.platform].gpustack
    assert target is not None
    key = api_key(target.api_key_env, target.url)
    name = deployment_name(ctx.run_dir.name, result.cell_id, model.name)
    ledger = Ledger(ctx.paths.data_dir)
    client = Client(target.url, key, verify=target.verify_tls)
    ledger.add(target.url, name)  # before the request: a kill between the two still leaves a record
    model_id: int | None = None
    try:
        ctx.progress(f"deploying {name} on {target.url} ({target.backend} {result.version})")
        body = model_body(target, name, model, result.version, result)
        body.setdefault("cluster_id", client.default_cluster())
        result.notes["gpustack deployment"] = ", ".join(f"{k}={v}" for k, v in body.items() if k != "env")
        result.deployment = Deployment(
            server=target.url,
            backend=target.backend,
            backend_version=result.version,
            backend_parameters=tuple(body["backend_parameters"]),
            env=dict(body["env"]),
            cluster_id=target.cluster_id,
        )
        model_id = client.create_model(body)
        ledger.add(target.url, name, model_id)
        instance = _wait_running(ctx, client, model_id, result)
        _identity(client, instance, result)
        _wait_route(ctx, target.url, key, name, target.verify_tls)
        p = Probing(ctx=ctx, result=result, model=model, base_url=target.url, deployed_as=name)
        p.headers = {"Authorization": f"Bearer {key}"}
        t0 = time.monotonic()
        try:
            probes(p)
        finally:
            result.phases["probes"] = time.monotonic() - t0
    finally:
        if model_id is not None:
            ctx.progress(f"deleting {name} from {target.url}")
            client.delete_model(model_id)
        ledger.remove(target.url, name)
        client.close()
    judge_checks(ctx, result, None)


def _wait_running(ctx: RunContext, client: Client, model_id: int, result: CellResult) -> Instance:
    """Until the model's instance runs; each state the first time it is seen is a startup phase."""
    target = ctx.matrix.platforms[ctx.platform].gpustack
    assert target is not None
    deadline_s = ctx.matrix.thresholds.startup_deadline_s
    t0 = time.monotonic()
    seen: dict[str, float] = {}
    ctx.progress(f"waiting for the instance to run (deadline {deadline_s:g} s)")
    while True:
        found = client.instances(model_id)
        now = time.monotonic() - t0
        for inst in found:
            if inst.worker_id is not None and not (result.deployment and result.deployment.gpu):
                _placed(client, inst, result)  # where it was scheduled, known before it runs (or fails)
            if inst.state and inst.state not in seen:
                seen[inst.state] = now
                ctx.progress(f"{inst.name}: {inst.state} after {now:.1f} s")
        failed = next((i for i in found if i.state in FAILED), None)
        if failed is not None:
            result.startup["cold"] = Startup(seconds=now, phases={f"{k}_s": round(v, 2) for k, v in seen.items()})
            raise LaunchError(
                f"GPUStack instance {failed.name} is {failed.state}: {failed.state_message or 'no message'}"
            )
        ready = next((i for i in found if i.state == RUNNING), None)
        if ready is not None:
            result.startup["cold"] = Startup(seconds=now, phases={f"{k}_s": round(v, 2) for k, v in seen.items()})
            result.phases["startup"] = now
            return ready
        if now > deadline_s:  # GPUStack's own reason, as the instance says it ("pending: No available workers")
            states = ", ".join(
                f"{i.name} {i.state}" + (f": {i.state_message}" if i.state_message else "") for i in found
            )
            states = states or "no instance"
            result.startup["cold"] = Startup(seconds=now, phases={f"{k}_s": round(v, 2) for k, v in seen.items()})
            raise ReadinessTimeout(f"GPUStack: not running after {deadline_s:g} s ({states})")
        time.sleep(target.poll_s)


def _identity(client: Client, instance: Instance, result: CellResult) -> None:
    """The version GPUStack says runs, and the one it read from the live server, against the pin."""
    pin = parse_pin(result.version)
    asked, ran, detected = result.version, instance.backend_version, instance.api_detected_backend_version
    wrong = [v for v in (ran, detected) if v and judge.same_version(v, pin, "pep440") is False]
    if wrong:
        detail = f"asked {asked}, GPUStack runs {wrong[0]}" + (
            f" (it reports {ran}, the live server {detected})" if ran and detected and ran != detected else ""
        )
        passed: bool | None = False
    elif detected:
        detail, passed = f"asked {asked}; GPUStack runs {ran or detected}, the live server reports {detected}", True
    elif ran:
        detail, passed = f"asked {asked}; GPUStack runs {ran} (the live server's own version not detected)", True
    else:
        detail, passed = "not exposed: GPUStack reports no backend version for the instance", None
    result.checks.append(Check(group=judge.GROUP, name="server.version", passed=passed, detail=detail))
    result.served = dataclasses.replace(result.served or Served(), version=detected or ran, version_matches=passed)
    if not (result.deployment and result.deployment.gpu):
        _placed(client, instance, result)


def _placed(client: Client, instance: Instance, result: CellResult) -> None:
    """The worker and GPU model the instance was scheduled on: the kind of machine verdicts and history
    compare on (``gpustack-<GPU model>``), and what pins.json says it was measured on."""
    gpus = client.worker_gpus(instance.worker_id) if instance.worker_id is not None else []
    chosen = [gpus[i] for i in instance.gpu_indexes if i < len(gpus)] or gpus[:1]
    gpu = instance.gpu_type or (chosen[0] if chosen else "")
    worker = instance.worker_name or str(instance.worker_id)
    result.notes["gpustack instance"] = f"{instance.name} on worker {worker}" + (
        f", GPU {gpu}" + (f" {list(instance.gpu_indexes)}" if instance.gpu_indexes else "") if gpu else ""
    )
    if result.deployment is not None:
        result.deployment = dataclasses.replace(result.deployment, worker=worker, gpu=gpu)
    if result.fingerprint is not None:
        result.fingerprint = dataclasses.replace(result.fingerprint, numerics=f"gpustack-{gpu or 'unknown-gpu'}")


def _wait_route(ctx: RunContext, url: str, key: str, name: str, verify: bool) -> None:
    """GPUStack's /v1 answers 503 (no ready replica) or 404 (no route yet) for a while after "running"."""
    deadline = time.monotonic() + ROUTE_WAIT_S
    last = ""
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, verify=verify, timeout=30) as c:
        while time.monotonic() < deadline:
            try:
                resp = c.get("/v1/models")
                if resp.status_code == 200 and name in resp.text:
                    return
                last = f"HTTP {resp.status_code}"
            except httpx.HTTPError as exc:
                last = type(exc).__name__
            time.sleep(0.5)
    raise ProbeError(f"GPUStack's /v1 did not route {name} within {ROUTE_WAIT_S:g} s ({last})")
