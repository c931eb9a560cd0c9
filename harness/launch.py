"""A backend server's life: spawn in its own process group, wait for ready, stop in stages.

Output goes to a log file (never an unread pipe). Readiness is a poll every ``POLL_S`` under one
deadline that also checks the process is alive, so a crash at start fails in well under a second.

A server never outlives its harness: on Linux it gets SIGKILL when the harness dies (PR_SET_PDEATHSIG set by setpriv,
even when the harness itself is SIGKILLed), and every server group is recorded in ``<data-dir>/servers/``
while it runs, so the next run reaps a group a killed run left (its engine workers included).
"""

from __future__ import annotations

import contextlib
import functools
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from .errors import ReadinessTimeout, ServerExited

HOST = "127.0.0.1"  # servers under test are never reachable from outside this machine
POLL_S = 0.1
# Staged shutdown: SIGINT lets vLLM close its engine processes cleanly; SIGTERM then SIGKILL
# for whatever is left of the group.
INTERRUPT_TIMEOUT_S = 10.0
TERMINATE_TIMEOUT_S = 5.0


def free_port(host: str = HOST) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


_PORT_TAKEN = re.compile(r"address already in use|EADDRINUSE|\[Errno 98\]|bind\(\) failed", re.I)
_OUT_OF_MEMORY = re.compile(
    r"out of memory|OutOfMemoryError|\bMemoryError\b|Cannot allocate memory|\bOOM\b|std::bad_alloc"
)
_ERROR_LINE = re.compile(r"^([A-Za-z_][\w.]*(Error|Exception|Exit)\b.*|.*\b(ERROR|FATAL|CRITICAL)\b.*)$")


def decisive_line(path: Path) -> str:
    """The last line of a server log that reads like the reason it died (an exception, an ERROR)."""
    tail = log_tail(path, lines=200, max_chars=100_000).splitlines()
    for line in reversed(tail):
        if _ERROR_LINE.match(line.strip()):
            return line.strip()[:300]
    return next((ln.strip()[:300] for ln in reversed(tail) if ln.strip()), "")


def out_of_memory(reason: str, log: Path | None) -> bool:
    """A server death that was running out of memory: its log says so, or it got SIGKILL from outside
    (the kernel's OOM killer sends SIGKILL; the harness itself only sends it after SIGINT and SIGTERM)."""
    if "signal 9 (SIGKILL)" in reason or _OUT_OF_MEMORY.search(reason):
        return True
    return log is not None and _OUT_OF_MEMORY.search(log_tail(log, lines=200, max_chars=100_000)) is not None


def parse_phases(log_text: str, patterns: Mapping[str, str]) -> dict[str, float]:
    """Phase durations a backend prints about itself (first group of each pattern, in seconds)."""
    out = {}
    for name, pattern in patterns.items():
        match = re.search(pattern, log_text)
        if match:
            out[name] = float(match.group(1))
    return out


def log_tail(path: Path, lines: int = 20, max_chars: int = 4000) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])[-max_chars:]


def _status(base_url: str, path: str, timeout: float = 2.0) -> int | None:
    """One readiness poll on a fresh connection. Plain http.client: no connection pool whose lock a Ctrl-C
    could leave held (the harness must always get to stopping the server)."""
    parts = urllib.parse.urlsplit(base_url)
    conn = http.client.HTTPConnection(parts.hostname or HOST, parts.port, timeout=timeout)
    try:
        conn.request("GET", path)
        return conn.getresponse().status
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


class Server:
    """Context manager: ``with Server(...) as s: s.wait_ready()``; the group is always stopped on exit."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str],
        log_path: Path,
        base_url: str,
        readiness_path: str,
        ready_line: str | None = None,
        records: Path | None = None,
    ) -> None:
        self.argv, self.env, self.log_path = list(argv), dict(env), log_path
        self.base_url, self.readiness_path = base_url.rstrip("/"), readiness_path
        self.ready_line = re.compile(ready_line) if ready_line else None
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0
        self.startup_s: float | None = None
        # When the server's own "ready" line showed up in its log, seen at the same 0.1 s polls:
        # a cross-check of startup_s that does not depend on our HTTP probe.
        self.log_ready_s: float | None = None
        self._log_offset = self.log_start = 0
        self.records = records  # where the running group is recorded for the reaper of a later run

    def __enter__(self) -> Server:
        self.start()
        return self

    def __exit__(self, *exc: tuple[type[BaseException] | None, BaseException | None, TracebackType | None]) -> None:
        self.stop()

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            log.write(f"$ {' '.join(self.argv)}\n".encode())
            log.flush()
            self._log_offset = self.log_start = log.tell()
            self.started_at = time.monotonic()
            self.proc = subprocess.Popen(
                [*_DIE_WITH_PARENT, *_default_signals(), *self.argv],
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # own process group: one signal reaches every engine worker
            )
        if self.records is not None:
            record_server(self.records, self.proc.pid, self.argv)

    def wait_ready(self, deadline_s: float) -> float:
        """Seconds from spawn to the first successful readiness response."""
        assert self.proc is not None, "start() first"
        end = self.started_at + deadline_s
        while True:
            code = self.proc.poll()
            if code is not None:
                why = decisive_line(self.log_path)
                raise ServerExited(f"server exited with code {code} before it was ready: {why}", self.log_path)
            self._scan_log()
            if _status(self.base_url, self.readiness_path) == 200:
                self.startup_s = time.monotonic() - self.started_at
                self._scan_log()
                return self.startup_s
            if time.monotonic() >= end:
                raise ReadinessTimeout(f"server not ready after {deadline_s:g} s", self.log_path)
            time.sleep(POLL_S)

    def _scan_log(self) -> None:
        if self.ready_line is None or self.log_ready_s is not None:
            return
        try:
            with self.log_path.open("rb") as fh:
                fh.seek(self._log_offset)
                chunk = fh.read()
        except OSError:
            return
        # Only whole lines are consumed, so a line half-written at this poll is read whole at the next.
        cut = chunk.rfind(b"\n") + 1
        self._log_offset += cut
        if self.ready_line.search(chunk[:cut].decode("utf-8", "replace")):
            self.log_ready_s = time.monotonic() - self.started_at

    def port_was_taken(self) -> bool:
        """Whether this start's log says the port was already in use (a race with another process)."""
        try:
            with self.log_path.open("rb") as fh:
                fh.seek(self.log_start)
                text = fh.read().decode("utf-8", "replace")
        except OSError:
            return False
        return _PORT_TAKEN.search(text) is not None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def exit_description(self) -> str | None:
        """How the server ended ("exited with code 1", "exited on signal 9 (SIGKILL)"), or None while it runs."""
        code = self.proc.poll() if self.proc is not None else None
        if code is None:
            return None
        if code < 0:
            with contextlib.suppress(ValueError):
                return f"exited on signal {-code} ({signal.Signals(-code).name})"
            return f"exited on signal {-code}"
        return f"exited with code {code}"

    def usage(self) -> Usage | None:
        """What the server's whole process group (the server and its engine workers) holds and has used now;
        None where /proc cannot tell (not Linux) or the server is not running."""
        return group_usage(self.proc.pid) if self.proc is not None else None

    def stop(self) -> None:
        proc = self.proc
        if proc is None:
            return
        pgid = proc.pid  # start_new_session: the leader's pid is the group id
        for sig, timeout in ((signal.SIGINT, INTERRUPT_TIMEOUT_S), (signal.SIGTERM, TERMINATE_TIMEOUT_S)):
            if not _group_alive(pgid):
                break
            _killpg(pgid, sig)
            if _wait_group(proc, pgid, timeout):
                break
        else:
            _killpg(pgid, signal.SIGKILL)
        _killpg(pgid, signal.SIGKILL)  # orphans of a leader that already exited
        with contextlib.suppress(subprocess.TimeoutExpired):  # SIGKILL cannot be ignored; a D-state process can
            proc.wait(timeout=TERMINATE_TIMEOUT_S)
        if self.records is not None:
            (self.records / f"{pgid}.json").unlink(missing_ok=True)
        self.proc = None


# SIGKILL the server when the harness dies (PR_SET_PDEATHSIG, kept across exec): util-linux's setpriv sets it
# and execs the server in place (same pid, same group). A preexec_fn would do it in-process, but code between
# fork and exec is unsafe in a process with threads (pytest-xdist workers have them). Without setpriv the
# reaper of the next run is what stops a group a killed run left.
_SETPRIV = shutil.which("setpriv") if sys.platform.startswith("linux") else None
_DIE_WITH_PARENT: tuple[str, ...] = (_SETPRIV, "--pdeathsig", "KILL", "--") if _SETPRIV else ()


@functools.cache
def _default_signals() -> tuple[str, ...]:
    """A harness started as a background job (``cmd &`` in a script, some CI runners) inherits SIGINT ignored,
    and so would its servers: the staged shutdown's SIGINT would then wait out its timeout every time.
    coreutils' ``env --default-signal`` (8.31+) execs the server with SIGINT and SIGTERM at their defaults."""
    env = shutil.which("env")
    if env is None:
        return ()
    try:
        ok = subprocess.run([env, "--default-signal=INT,TERM", "true"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        ok = False
    return (env, "--default-signal=INT,TERM") if ok else ()


def _start_ticks(pid: int) -> int | None:
    """A process's start time (clock ticks since boot): tells a live server from a reused pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


def record_server(records: Path, pgid: int, argv: Sequence[str]) -> None:
    records.mkdir(parents=True, exist_ok=True)
    data = {
        "pgid": pgid,
        "start_ticks": _start_ticks(pgid),
        "argv0": argv[0] if argv else "",
        "harness_pid": os.getpid(),
    }
    (records / f"{pgid}.json").write_text(json.dumps(data) + "\n", encoding="utf-8")


def reap_leftovers(records: Path) -> list[int]:
    """Kill the server groups a killed run left (their records outlived the run); the groups killed."""
    reaped = []
    for path in sorted(records.glob("*.json")) if records.is_dir() else []:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            pgid, ticks, harness = int(data["pgid"]), data.get("start_ticks"), int(data.get("harness_pid", 0))
        except (OSError, ValueError, KeyError, TypeError):
            path.unlink(missing_ok=True)
            continue
        if harness and harness != os.getpid() and _start_ticks(harness) is not None and _group_alive(pgid):
            continue  # its harness still runs (another run on this data dir): not left behind
        leader = _start_ticks(pgid)
        if _group_alive(pgid) and (leader is None or leader == ticks):  # a live leader with other ticks: a reused pid
            _killpg(pgid, signal.SIGKILL)
            reaped.append(pgid)
        path.unlink(missing_ok=True)
    return reaped


def _killpg(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


@dataclass(frozen=True)
class Usage:
    """A process group's resident memory and CPU time so far (all its processes together)."""

    rss_bytes: int
    cpu_s: float


_TICK_S = 1 / os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 0.01


def group_usage(pgid: int) -> Usage | None:
    """Sum /proc over the processes of group ``pgid`` (None without /proc)."""
    if not os.path.isdir("/proc"):
        return None
    rss = ticks = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            if int(stat[2]) != pgid:
                continue
            ticks += int(stat[11]) + int(stat[12])  # utime + stime
            status = Path(f"/proc/{entry}/status").read_text()
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
        rss += next((int(ln.split()[1]) * 1024 for ln in status.splitlines() if ln.startswith("VmRSS:")), 0)
    return Usage(rss_bytes=rss, cpu_s=ticks * _TICK_S)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def _wait_group(proc: subprocess.Popen[bytes], pgid: int, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        proc.poll()  # reap the leader so it does not linger as a zombie member
        if not _group_alive(pgid):
            return True
        time.sleep(0.05)
    return False
