"""Starting a cell's server (or its partner) on a free port and waiting for it to be ready; a port another
process takes between our choosing it and the server binding it starts it again on another."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path

from ..backends import LaunchContext
from ..errors import ServerExited
from ..fingerprint import mask_argv, mask_env
from ..launch import HOST, Server, free_port, parse_phases
from ..results import CellResult, Startup
from ..spec import ModelSpec
from .context import RunContext

PORT_ATTEMPTS = 3  # a port taken between choosing it and the server binding it: start again, at most this often


@dataclasses.dataclass
class Launcher:
    """Starts the cell's server and waits for it to be ready, recording each start in the result."""

    ctx: RunContext
    result: CellResult
    model: ModelSpec
    model_path: Path
    exe: Path
    cache_dir: Path
    args: tuple[str, ...] | None = None  # launch arguments other than the cell's (a partner in another variant)
    env: Mapping[str, str] | None = None  # environment other than the cell's variant's

    def server(self, log: Path) -> Server:
        ctx, result = self.ctx, self.result
        flavour = ctx.matrix.flavour(ctx.platform)
        plat = ctx.matrix.platforms[ctx.platform]
        lctx = LaunchContext(
            executable=self.exe,
            model_path=self.model_path,
            served_name=self.model.name,
            host=HOST,
            port=free_port(),
            gpus=ctx.slot.gpus,
            extra_args=result.backend_parameters if self.args is None else self.args,
            cache_dir=self.cache_dir,
        )
        variant_env = plat.variant(result.variant).env if self.env is None else self.env
        ours = {**flavour.launch_env(lctx), **plat.env, **variant_env}
        argv = flavour.launch_argv(lctx)
        if result.fingerprint is not None and not result.fingerprint.launch_argv:
            # the effective launch line, secrets masked
            result.fingerprint = dataclasses.replace(
                result.fingerprint, launch_argv=mask_argv(argv), launch_env=mask_env(ours)
            )
        return Server(
            argv,
            env={**os.environ, **ours},
            log_path=log,
            base_url=f"http://{HOST}:{lctx.port}",
            readiness_path=flavour.readiness_path,
            ready_line=flavour.ready_line,
            records=ctx.paths.data_dir / "servers",
        )

    def _ready(self, srv: Server, label: str) -> Startup:
        say, deadline = self.ctx.progress, self.ctx.matrix.thresholds.startup_deadline_s
        say(f"waiting for ready ({label} start) on {srv.base_url} (deadline {deadline:g} s, log: {srv.log_path})")
        seconds = srv.wait_ready(deadline)
        patterns = self.ctx.matrix.flavour(self.ctx.platform).startup_phases
        phases = parse_phases(srv.log_path.read_text(encoding="utf-8", errors="replace"), patterns)
        say(f"ready in {seconds:.1f} s ({label})" + "".join(f", {k} {v:g}" for k, v in phases.items()))
        return Startup(seconds=seconds, log_ready_s=srv.log_ready_s, phases=phases)

    def spawn(self, log: Path) -> Server:
        """Start the server and return at once (``launch`` waits for it)."""
        srv = self.server(log)
        srv.start()
        return srv

    def launch(self, log: Path, label: str, spawned: Server | None = None) -> Server:
        """Start (or take one ``spawn``ed earlier) and wait for ready; a port another process took between our
        choosing and the server's binding is a race of this machine, not a backend failure: start again on
        another port."""
        for attempt in range(1, PORT_ATTEMPTS + 1):
            srv, spawned = spawned or self.spawn(log), None
            try:
                self.result.startup[label] = self._ready(srv, label)
                return srv
            except ServerExited:
                srv.stop()
                if attempt < PORT_ATTEMPTS and srv.port_was_taken():
                    self.ctx.progress(
                        f"{srv.base_url} was taken before the server bound it; starting again on another port"
                    )
                    continue
                raise
            except BaseException:
                srv.stop()
                raise
        raise AssertionError("unreachable")
