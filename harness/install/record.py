"""What an install did: the pin's executable, how it got there and how to do it again on another machine."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

KINDS = ("pipx", "uv", "download", "manual")


@dataclass(frozen=True, kw_only=True)
class InstallRecord:
    """One pin in a bin dir.

    ``ran``: the argv lists that installed it here (empty when it was already there and nobody recorded
    them, or for manual pins). ``command``: what installs it on a fresh machine, as printed (pipx/uv
    argv, with the configured extra indexes even where this machine could not reach them), with ``env``.
    """

    kind: str  # pipx | uv | download | manual
    executable: str
    installed_now: bool = False
    seconds: float = 0.0
    size_bytes: int = 0
    log: str = ""
    warnings: tuple[str, ...] = ()
    ran: tuple[tuple[str, ...], ...] = ()
    command: tuple[tuple[str, ...], ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    build_constraints: tuple[str, ...] = ()
    url: str = ""  # download: the archive
    sha256: str = ""  # download: the archive's verified sha256
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "executable": self.executable,
            "installed_now": self.installed_now,
            "seconds": self.seconds,
            "size_bytes": self.size_bytes,
            "log": self.log,
            "warnings": list(self.warnings),
            "ran": [list(a) for a in self.ran],
            "command": [list(a) for a in self.command],
            "env": dict(self.env),
            "build_constraints": list(self.build_constraints),
            "url": self.url,
            "sha256": self.sha256,
            "note": self.note,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> InstallRecord:
        return cls(
            kind=str(d["kind"]),
            executable=str(d.get("executable", "")),
            installed_now=bool(d.get("installed_now", False)),
            seconds=float(d.get("seconds", 0.0)),
            size_bytes=int(d.get("size_bytes", 0)),
            log=str(d.get("log", "")),
            warnings=tuple(d.get("warnings", ())),
            ran=tuple(tuple(a) for a in d.get("ran", ())),
            command=tuple(tuple(a) for a in d.get("command", ())),
            env=dict(d.get("env", {})),
            build_constraints=tuple(d.get("build_constraints", ())),
            url=str(d.get("url", "")),
            sha256=str(d.get("sha256", "")),
            note=str(d.get("note", "")),
        )

    def export(self) -> dict[str, Any]:
        """pins.json's ``install``: what an operator (or GPUStack) runs to get this pin."""
        out: dict[str, Any] = {"kind": self.kind, "executable": self.executable.rsplit("/", 1)[-1]}
        if self.kind == "manual":
            out["path"] = self.executable
        if self.command:
            out["commands"] = [list(a) for a in self.command]
            if self.env:
                out["env"] = dict(self.env)
        if self.build_constraints:
            out["build_constraints"] = list(self.build_constraints)
        if self.url:
            out["url"], out["sha256"] = self.url, self.sha256
        if self.note:
            out["note"] = self.note
        return out
