"""``run_cell``: one cell from install to CellResult, and the one place where exceptions become outcomes.

Each phase's HarnessError maps to a failure class, anything else is a HARNESS-ERROR with its traceback
logged; KeyboardInterrupt is re-raised (as ``CellInterrupted``, carrying the partial result) after the
server is stopped.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

from ..errors import HarnessError, InstallError, LaunchError, MachineBusy, ModelError, ProbeError, ServerExited
from ..fingerprint import Fingerprint, distributions, gpu_facts, mask_env
from ..install import install_pin
from ..install.layout import venv_and_origin
from ..launch import log_tail, out_of_memory
from ..models import LocalModel
from ..models import prepare as prepare_model
from ..results import CellResult, FailureClass, Status
from ..spec import ModelSpec, PinSpec, VariantSpec
from .context import RunContext, cell_id, install_request, now, this_machine
from .deploy import deploy_and_probe
from .image import against_gpustack_image
from .plans import plan_for
from .serve import serve_and_probe

log = logging.getLogger(__name__)


class CellInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM mid-cell: carries the cell's partial result so it is recorded before the run stops."""

    def __init__(self, result: CellResult) -> None:
        super().__init__(result.reason)
        self.result = result


def new_result(ctx: RunContext, pin_spec: PinSpec, model: ModelSpec, variant: VariantSpec) -> CellResult:
    plat, backend, pin = ctx.matrix.platforms[ctx.platform], ctx.matrix.get_backend(), pin_spec.pin
    result = CellResult(
        cell_id=cell_id(backend.name, pin.text, model.name, ctx.platform, variant.name),
        backend=backend.name,
        version=pin.text,
        model=model.name,
        platform=ctx.platform,
        is_reference=pin.text == plat.reference.text,
        expected_failure=pin_spec.expect,
        started_at=now(),
        selected_by=pin_spec.why if pin_spec.expect is None else "",
        variant=variant.name,
        baseline_variant=variant.baseline,
        deployed_variant=plat.variants[0].name,
        backend_parameters=plat.serve_args + model.serve_args + variant.serve_args,
        backend_env=mask_env({**plat.env, **variant.env}),
    )
    result.fingerprint = Fingerprint(
        machine=this_machine(),
        gpus=gpu_facts(ctx.slot.gpus),
        slot=ctx.slot.label,
        package=plat.package,
        model_source=model.source,
    )
    return result


def run_cell(ctx: RunContext, pin_spec: PinSpec, model: ModelSpec, variant: VariantSpec | None = None) -> CellResult:
    """``variant``: the launch variant (default: the platform's first)."""
    variant = variant or ctx.matrix.platforms[ctx.platform].variants[0]
    result = new_result(ctx, pin_spec, model, variant)
    phase = "install"
    t0 = began = time.monotonic()
    try:
        if ctx.matrix.platforms[ctx.platform].gpustack is not None:  # the server installs, fetches and launches
            phase = "startup"
            deploy_and_probe(ctx, result, model, plan_for(model.kind).run)
            return _finish(result, began)
        exe = _install(ctx, result, pin_spec)
        phase, t0 = "model", time.monotonic()
        local = _prepare(ctx, result, model)
        phase, t0 = "startup", time.monotonic()
        serve_and_probe(ctx, result, model, local.path, exe, plan_for(model.kind).run)
    except MachineBusy as exc:
        fail(result, FailureClass.INFRASTRUCTURE, str(exc), None)
    except InstallError as exc:
        fail(result, FailureClass.INSTALL_FAILED, exc.reason, exc.log)
        result.phases["install"] = time.monotonic() - t0
    except ModelError as exc:
        fail(result, FailureClass.MODEL_FAILED, str(exc), None)
        result.phases["model"] = time.monotonic() - t0
    except LaunchError as exc:
        oom = isinstance(exc, ServerExited) and out_of_memory(str(exc), exc.log)
        fail(result, FailureClass.OUT_OF_MEMORY if oom else FailureClass.STARTUP_FAILED, str(exc), exc.log)
    except ProbeError as exc:  # the server stopped answering: its log says why
        log_file = Path(result.log_path) if result.log_path else None
        oom = str(exc).startswith("server ") and out_of_memory(str(exc), log_file)  # it died: of what?
        fail(result, FailureClass.OUT_OF_MEMORY if oom else FailureClass.PROBE_FAILED, str(exc), log_file)
    except HarnessError as exc:
        fail(result, FailureClass.HARNESS_ERROR, f"{phase}: {exc}", None)
    except KeyboardInterrupt as exc:
        fail(result, FailureClass.INTERRUPTED, f"interrupted during {phase}", None)
        result.status = Status.SKIPPED
        result.finished_at = now()
        raise CellInterrupted(result) from exc
    except Exception as exc:  # a harness bug: record it with the traceback, keep the run going
        log.exception("cell %s crashed in %s", result.cell_id, phase)
        fail(result, FailureClass.HARNESS_ERROR, f"{phase}: {type(exc).__name__}: {exc}", None)
    return _finish(result, began)


def _finish(result: CellResult, began: float) -> CellResult:
    result.finished_at = now()
    result.wall_s = time.monotonic() - began
    return result


def _install(ctx: RunContext, result: CellResult, pin_spec: PinSpec) -> Path:
    say = ctx.progress
    say("installing")
    inst = result.install = install_pin(install_request(ctx, pin_spec), ctx.paths, progress=say)
    if inst.executable in ctx.prepared:
        result.notes["install"] = ctx.prepared[inst.executable]
    result.phases["install"] = inst.seconds
    result.warnings += list(inst.warnings)
    found = venv_and_origin(Path(inst.executable), ctx.paths)
    if found is not None and result.fingerprint is not None:
        # what the pin's venv holds: torch and its build, the backend, everything else
        dists = distributions(found[0] / "bin" / "python")
        result.fingerprint = dataclasses.replace(result.fingerprint, distributions=dists)
        against_gpustack_image(ctx, result)
    say(("installed" if inst.installed_now else "already installed") + f": {inst.executable} ({inst.kind})")
    return Path(inst.executable)


def _prepare(ctx: RunContext, result: CellResult, model: ModelSpec) -> LocalModel:
    t0 = time.monotonic()
    ctx.progress(f"preparing model {model.name}")
    fmt = ctx.matrix.flavour(ctx.platform).model_format
    local = prepare_model(model.source, fmt, ctx.paths.data_dir, progress=ctx.progress, sha256=model.sha256)
    result.phases["model"] = time.monotonic() - t0
    if result.fingerprint is not None:
        result.fingerprint = dataclasses.replace(
            result.fingerprint, model_path=str(local.path), model_sha256=local.sha256
        )
    return local


def fail(result: CellResult, cls: FailureClass, reason: str, log_path: Path | None) -> None:
    result.status = Status.FAILED if cls is FailureClass.CHECK_FAILED else Status.ERROR
    result.failure_class = cls
    result.reason = reason.strip().splitlines()[0] if reason.strip() else cls.value
    if log_path is not None:
        result.log_path = str(log_path)
        result.log_excerpt = log_tail(log_path, lines=25)
