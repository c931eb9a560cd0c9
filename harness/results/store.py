"""Where results live: ``results.jsonl`` appended (and fsynced) as each cell ends, and ``run.json`` beside it."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock

from ..serial import LoadError, dump, load_record
from .records import CellResult

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class RunInfo:
    """What a run's reports need besides its cells, kept as ``run.json`` beside ``results.jsonl``: a run
    directory rebuilds its reports, merges with other shards and feeds history without its matrix file."""

    backend: str
    matrix: str  # the matrix file, as given
    run_id: str
    references: Mapping[str, str]  # platform -> the reference (deployed) pin
    required_checks: tuple[str, ...]
    tie_break: str
    noise: float  # thresholds.throughput_noise
    drift: float  # thresholds.machine_drift
    sequential_noise: float = 0.15  # thresholds.sequential_noise: the margin of verdicts from cells measured alone
    seed: int
    workload: str  # digest of the settings that shape measured numbers: runs compare only when equal
    expected: tuple[str, ...] = ()  # the cell ids the run was asked to run
    sources: tuple[str, ...] = ()  # merged from these run ids

    @classmethod
    def read(cls, run_dir: Path) -> RunInfo:
        path = run_dir / "run.json"
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise LoadError(f"{path}: missing (an older run: give its matrix with --matrix)") from None
        except (OSError, ValueError) as exc:
            raise LoadError(f"{path}: cannot read: {exc}") from exc
        if not isinstance(data, dict):
            raise LoadError(f"{path}: expected an object")
        try:
            return load_record(cls, data)
        except LoadError as exc:
            raise LoadError(f"{path}: {exc}") from exc

    def write(self, run_dir: Path) -> None:
        run_dir.mkdir(parents=True, exist_ok=True)
        tmp = run_dir / f".run.json.{os.getpid()}"  # xdist workers may write it at once: each its own tmp
        tmp.write_text(json.dumps(dump(self), indent=1, sort_keys=True) + "\n", encoding="utf-8")
        os.replace(tmp, run_dir / "run.json")


def _is_json(line: str) -> bool:
    try:
        json.loads(line)
    except ValueError:
        return False
    return True


def append_line(path: Path, line: str) -> None:
    """One JSON line, on disk when this returns (the caller holds the file's lock)."""
    with path.open("a+b") as fh:
        fh.seek(0, 2)
        if fh.tell():  # a line torn by a killed run: the next one still starts on its own line
            fh.seek(-1, 2)
            torn = fh.read(1) != b"\n"
            fh.seek(0, 2)
            if torn:
                fh.write(b"\n")
        fh.write(line.encode("utf-8") + b"\n")
        fh.flush()
        os.fsync(fh.fileno())


class ResultStore:
    """Append-only JSONL, safe across pytest-xdist workers (file lock around each append)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = FileLock(str(path) + ".lock")
        self.notes: list[str] = []  # e.g. lines converted from an older schema

    def append(self, result: CellResult) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock:
            append_line(self.path, json.dumps(result.to_dict(), sort_keys=True, allow_nan=False))

    def load(self) -> list[CellResult]:
        """Every stored result; a later line for the same cell replaces an earlier one (re-runs)."""
        if not self.path.exists():
            return []
        by_cell: dict[str, CellResult] = {}
        converted = 0
        text = self.path.read_text(encoding="utf-8", errors="replace")
        lines = text.splitlines()
        for n, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            if not _is_json(line):  # torn: a run killed while writing it (later runs append after it)
                self.notes.append(
                    f"{self.path}:{n}: a torn line (the run was killed while writing it) was skipped; "
                    "that cell runs again on resume"
                )
                log.warning(self.notes[-1])
                continue
            try:
                data = json.loads(line)
                if not isinstance(data, dict):
                    raise LoadError(f"expected an object, got {type(data).__name__}")
                converted += data.get("schema_version") == 1
                result = CellResult.from_dict(data)
            except (ValueError, KeyError, TypeError) as exc:
                raise ValueError(f"{self.path}:{n}: {exc}") from exc
            by_cell[result.cell_id] = result
        if converted:
            self.notes.append(
                f"{self.path}: {converted} line(s) converted from results schema 1 (machine facts unknown)"
            )
            log.warning(self.notes[-1])
        return list(by_cell.values())
