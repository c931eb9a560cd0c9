"""A matrix file as a pytest collector, and each cell as a pytest item whose outcome is its recorded result."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _pytest._code.code import TerminalRepr

from .. import gpustack, releases
from ..cell import CellInterrupted, RunContext, cell_id, run_cell, this_machine
from ..errors import SpecError
from ..install import remove_pin
from ..launch import reap_leftovers
from ..results import CellResult, ResultStore, Status
from ..safe import terminal
from ..slots import GpuDiscoveryError, default_platform, discover_gpus, slot_for_worker
from ..spec import Matrix, ModelSpec, PinSpec, PlatformSpec, VariantSpec, load_matrix
from ..versions import Pin
from ..words import ModelKind
from .ahead import Job, prepare_ahead
from .options import MATRICES, PREPARED, REAPED, data_dir, install_paths, run_dir
from .schedule import minutes, slot_lock, wait_for_reference


class MatrixFile(pytest.File):
    def collect(self) -> Iterator[pytest.Item]:
        matrix = load_matrix(self.path)
        self.config.stash[MATRICES][matrix.backend] = matrix
        try:
            gpus = discover_gpus()
        except GpuDiscoveryError as exc:
            raise SpecError(str(self.path), [f"GPUs: {exc} (PINMATRIX_GPUS=0,1 chooses them by hand)"]) from exc
        platform = self.config.option.pm_platform or default_platform(gpus)
        if not self.config.option.pm_platform and platform not in matrix.platforms:
            remote = [name for name, p in matrix.platforms.items() if p.gpustack is not None]
            platform = remote[0] if len(remote) == 1 and len(matrix.platforms) == 1 else platform
        if platform not in matrix.platforms:
            has = ", ".join(matrix.platforms)
            raise SpecError(str(self.path), [f"platforms: no '{platform}' platform in this matrix (has: {has})"])
        self._reap_leftovers()
        matrix = self._gpustack(matrix, platform)
        self._check_before_installing(matrix)
        paths = install_paths(self.config, resolve=False)
        matrix = releases.resolve(matrix, platform, paths=paths, download_base_url=self.config.option.pm_download_base)
        self.config.stash[MATRICES][matrix.backend] = matrix
        plat = matrix.platforms[platform]
        too_few = platform != "cpu" and plat.gpus_per_cell > len(gpus)
        for model, pin, variant in cell_order(plat, pin_by_pin=self.config.option.pm_remove_venvs):
            # "cell[...]": pytest treats the bracket as a parameter id and leaves its dots alone.
            name = f"cell[{cell_id(matrix.backend, pin.pin.text, model.name, platform, variant.name)}]"
            item = CellItem.from_parent(
                self, name=name, matrix=matrix, platform=platform, pin=pin, model=model, gpus=gpus, variant=variant
            )
            if too_few:
                item.skip_reason = f"needs {plat.gpus_per_cell} GPU(s) per cell; this machine has {len(gpus)}"
            elif why := variant.unsuited(this_machine().cpu_flags):
                item.skip_reason = why
            yield item

    def _reap_leftovers(self) -> None:
        """Servers a killed run left behind hold ports, memory, GPUs: stopped once per run."""
        if self.config.stash.get(REAPED, False):
            return
        self.config.stash[REAPED] = True
        for pgid in reap_leftovers(data_dir(self.config) / "servers"):
            self.config.get_terminal_writer().line(
                f"pinmatrix: stopped server group {pgid}, left running by a killed run"
            )

    def _gpustack(self, matrix: Matrix, platform: str) -> Matrix:
        """A GPUStack platform: --gpustack-url applied, the key's variable checked, a plain-http key said, and
        the models a killed run left on that server deleted (only those the ledger recorded)."""
        plat = matrix.platforms[platform]
        if plat.gpustack is None:
            return matrix
        target = plat.gpustack
        if url := self.config.option.pm_gpustack_url:
            target = dataclasses.replace(target, url=url.rstrip("/"))
            plat = dataclasses.replace(plat, gpustack=target)
            matrix = dataclasses.replace(matrix, platforms={**matrix.platforms, platform: plat})
        say = self.config.get_terminal_writer().line
        try:
            key = gpustack.api_key(target.api_key_env, target.url)
        except gpustack.GpustackError as exc:
            raise SpecError(str(self.path), [f"platforms.{platform}.gpustack.api_key_env: {exc}"]) from exc
        if warning := gpustack.plain_http_warning(target.url):
            say(f"pinmatrix: warning: {warning}", yellow=True)
        client = gpustack.Client(target.url, key, verify=target.verify_tls)
        try:
            ledger = gpustack.Ledger(data_dir(self.config))
            alive = {int(e["pid"]) for e in ledger.entries() if _alive(e.get("pid"))}
            for what in gpustack.cleanup(ledger, client, alive=alive):
                say(f"pinmatrix: deleted {what} from {target.url}, left by a killed run")
        except gpustack.GpustackError as exc:
            raise SpecError(str(self.path), [f"platforms.{platform}.gpustack: {exc}"]) from exc
        finally:
            client.close()
        return matrix

    def _check_before_installing(self, matrix: Matrix) -> None:
        """What a run would only find out after installing every pin: checked now, one line each."""
        opt = self.config.option
        problems = [
            f"{where}: plain http needs --allow-http-mirror, got {url!r}"
            for where, url in matrix.plain_http_urls()
            if not opt.pm_allow_http
        ]
        reports = Path(opt.pm_reports_dir).resolve()
        if (why := _unwritable(run_dir(self.config, matrix.backend))) is not None:
            problems.append(f"--reports-dir {reports}: cannot write reports there ({why})")
        if problems:
            raise SpecError(str(self.path), problems)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str | TerminalRepr:
        if isinstance(excinfo.value, SpecError):
            return str(excinfo.value)
        return super().repr_failure(excinfo)


def _alive(pid: object) -> bool:
    """A process still running (its deployments are its own to delete); not this one, which starts now."""
    if not isinstance(pid, int) or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def cell_order(plat: PlatformSpec, *, pin_by_pin: bool) -> list[tuple[ModelSpec, PinSpec, VariantSpec]]:
    """Model by model, reference pin first; pin by pin when venvs are removed after their cells, so each is
    installed once. Launch variants: baselines (a variant's reference pin) before the cells compared with them."""
    pins = sorted(plat.versions, key=lambda p: p.pin.text != plat.reference.text)
    variants = sorted(plat.variants, key=lambda v: v.baseline != v.name)
    if pin_by_pin:
        return [(m, p, v) for p in pins for m in plat.models for v in variants]
    order = [(m, p, v) for m in plat.models for v in variants for p in pins]
    # a variant compared with another variant's reference pin: after that pin's cell
    order.sort(
        key=lambda c: (plat.models.index(c[0]), c[1].pin.text != plat.reference.text or c[2].baseline != c[2].name)
    )
    return order


def _unwritable(directory: Path) -> str | None:
    """Why reports cannot be written under ``directory`` (None: they can), without creating anything."""
    existing = directory
    while not existing.exists() and existing != existing.parent:
        if existing.is_symlink():
            return f"{existing} is a broken link"
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} is not a directory"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{existing} is not writable"
    return None


def summary(result: CellResult) -> str:
    return result.status.value.upper() + (
        f" [{result.failure_class.value}] {result.reason}" if result.failure_class else ""
    )


class CellFailed(Exception):
    """A cell's outcome was not 'passed' (carried to pytest's report)."""


class CellItem(pytest.Item):
    def __init__(
        self,
        *,
        matrix: Matrix,
        platform: str,
        pin: PinSpec,
        model: ModelSpec,
        gpus: list[int],
        variant: VariantSpec | None = None,
        **kw: Any,
    ) -> None:
        super().__init__(**kw)
        self.matrix, self.platform, self.pin, self.model, self.gpus = matrix, platform, pin, model, gpus
        self.variant = variant or matrix.platforms[platform].variants[0]
        self.reference = matrix.platforms[platform].reference
        self.skip_reason = ""  # why this machine cannot run the cell at all (too few GPUs)
        self.estimate_s: float | None = None  # from history on this kind of machine
        self.add_marker(pytest.mark.pinmatrix)
        self.result: CellResult | None = None
        self.cell_id = cell_id(matrix.get_backend().name, pin.pin.text, model.name, platform, self.variant.name)

    def ctx(self) -> RunContext:
        worker = getattr(self.config, "workerinput", None)
        index = int(worker["workerid"].removeprefix("gw")) if worker else 0
        per_cell = self.matrix.platforms[self.platform].gpus_per_cell
        opt = self.config.option
        prepared: dict[str, str] = self.config.stash.get(PREPARED, {})
        return RunContext(
            matrix=self.matrix,
            platform=self.platform,
            paths=install_paths(self.config),
            run_dir=run_dir(self.config, self.matrix.backend),
            slot=slot_for_worker(self.platform, self.gpus, per_cell, index),
            progress=self._progress,
            download_base_url=opt.pm_download_base,
            allow_http_mirror=opt.pm_allow_http,
            prepared=prepared,
        )

    def _progress(self, message: str) -> None:
        """Progress reaches the user live, even while pytest captures the cell's output; server text in a
        message has its escapes shown, never obeyed."""
        tw = self.config.get_terminal_writer()
        line = f"[{self.name.removeprefix('cell[')} {terminal(message)}"
        capman = self.config.pluginmanager.getplugin("capturemanager")
        if capman is None:
            tw.line(line)
            return
        with capman.global_and_fixture_disabled():
            tw.line(line)
            tw.flush()

    def runtest(self) -> None:
        if self.skip_reason:
            pytest.skip(self.skip_reason)
        ctx = self.ctx()
        ctx.progress("")  # start on a fresh line after pytest's item name
        store = ResultStore(ctx.run_dir / "results.jsonl")
        if PREPARED not in self.config.stash:
            prepared = self.config.stash[PREPARED] = self._prepare_ahead(store)
            ctx = dataclasses.replace(ctx, prepared=prepared)
        earlier = next((r for r in store.load() if r.cell_id == self.cell_id and r.final), None)
        if earlier is not None:  # the same run id again: resume, never run (or record) a finished cell twice
            ctx.progress(f"already recorded in this run: {earlier.status.value.upper()}")
            self.result = earlier
            self._outcome(earlier)
            return
        if self.estimate_s:
            ctx.progress(f"expected to take ~{minutes(self.estimate_s)} (its last runs on this kind of machine)")
        self._wait_for_reference(store, ctx)
        try:
            with slot_lock(ctx):
                self.result = result = run_cell(ctx, self.pin, self.model, self.variant)
        except CellInterrupted as exc:  # recorded as interrupted, so the report can say what did not run
            store.append(exc.result)
            raise
        store.append(result)
        self._remove_venv(result, store, ctx)
        ctx.progress("done: " + summary(result))
        self._outcome(result)

    def _prepare_ahead(self, store: ResultStore) -> dict[str, str]:
        if self.config.option.pm_remove_venvs:
            return {}  # pin by pin on purpose: disk is short
        done = {r.cell_id for r in store.load() if r.final}
        todo = [
            i
            for i in self._cells()
            if not i.skip_reason and i.cell_id not in done and i.matrix.platforms[i.platform].gpustack is None
        ]
        return prepare_ahead([Job(ctx=i.ctx(), pin=i.pin, model=i.model) for i in todo], self.ctx().progress)

    def _cells(self) -> list[CellItem]:
        return [i for i in self.session.items if isinstance(i, CellItem)]

    def _remove_venv(self, result: CellResult, store: ResultStore, ctx: RunContext) -> None:
        """--remove-venvs: a pin's venv goes once every cell that needs it has a final result (decided on the
        shared results file: xdist workers each see only their own queue). The deployed pin's server is every
        text cell's partner in paired rounds, so its venv stays until the last of those."""
        if not self.config.option.pm_remove_venvs:
            return
        final = {r.cell_id: r for r in store.load() if r.final}
        plat = self.matrix.platforms[self.platform]
        for pin in dict.fromkeys((self.pin.pin, plat.reference)):
            users = self._needing(pin)
            own = [final[c].executable for c in users if c in final and final[c].version == pin.text]
            if not users <= final.keys() or not any(own):
                continue
            exe = Path(next(e for e in own if e))
            freed = remove_pin(exe, ctx.paths)
            if freed:
                ctx.progress(f"removed {exe.name}'s venv ({freed / 2**30:.2f} GiB freed; --remove-venvs)")

    def _needing(self, pin: Pin) -> set[str]:
        """The cells of this run that need ``pin``'s venv: its own, and every text cell it is the partner of."""
        plat = self.matrix.platforms[self.platform]
        partner = pin == plat.reference and self.matrix.workload.paired != "never"
        return {
            i.cell_id
            for i in self._cells()
            if i.matrix.backend == self.matrix.backend
            and (
                i.pin.pin == pin
                or (partner and i.platform == self.platform and i.model.kind in (ModelKind.CHAT, ModelKind.COMPLETION))
            )
        }

    def _outcome(self, result: CellResult) -> None:
        """The pytest outcome of a cell's result (an expected failure is an xfail)."""
        expect = self.pin.expect
        if expect is not None:
            if result.failure_class is expect:
                pytest.xfail(f"expected {expect.value}: {result.reason}")
            raise CellFailed(f"expected {expect.value} ({self.pin.why or 'see matrix'}), got {summary(result)}")
        if result.status is not Status.PASSED:
            raise CellFailed(summary(result) + (f"\nlog: {result.log_path}" if result.log_path else ""))

    def _wait_for_reference(self, store: ResultStore, ctx: RunContext) -> None:
        if getattr(self.config, "workerinput", None) is None:
            return  # one process: collection order already puts the reference first
        ref = next(
            (
                i
                for i in self._cells()
                if i.matrix.backend == self.matrix.backend
                and i.model.name == self.model.name
                and i.platform == self.platform
                and i.pin.pin == i.reference
                and i.variant.name == self.variant.baseline
            ),
            None,
        )
        if ref is not None and ref is not self:
            limit_s = 2 * self.matrix.thresholds.startup_deadline_s + 3600
            wait_for_reference(ref.cell_id, store, ctx, limit_s=limit_s)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str | TerminalRepr:
        if isinstance(excinfo.value, CellFailed):
            return "\n".join(terminal(line) for line in str(excinfo.value).splitlines())
        return super().repr_failure(excinfo)

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return self.path, None, self.name
