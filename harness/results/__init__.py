"""Outcomes as data: one typed ``CellResult`` per cell, appended to ``results.jsonl`` the moment the cell ends.

Every part is a frozen dataclass that other runs, other machines and later versions of the harness read
back: ``Check``, ``LoadPoint`` (its ``Run`` per repeat, the unit explicit, sample counts in every
``Distribution``), ``Agreement``, ``TextAccuracy`` / ``SpeechAccuracy``, ``Startup``, the install record
and the ``Fingerprint``. JSON goes through ``harness.serial`` and is described by the JSON Schema shipped
as ``harness/schema/results-v2.json``. Schema version 1 files (dicts, before the types) are converted
on load, with one line saying so.
"""

from __future__ import annotations

from .records import (
    SCHEMA_FILE,
    SCHEMA_VERSION,
    Agreement,
    CellResult,
    Check,
    ClipScore,
    Deployment,
    FailureClass,
    ItemAgreement,
    LoadPoint,
    Miss,
    PairedPoint,
    Round,
    Run,
    Served,
    SpeechAccuracy,
    Startup,
    Status,
    TaskScore,
    TextAccuracy,
    results_schema,
)
from .store import ResultStore, RunInfo, append_line
from .units import AUDIO_UNIT, TEXT_UNIT

__all__ = [
    "AUDIO_UNIT",
    "SCHEMA_FILE",
    "SCHEMA_VERSION",
    "TEXT_UNIT",
    "Agreement",
    "CellResult",
    "Check",
    "ClipScore",
    "Deployment",
    "FailureClass",
    "ItemAgreement",
    "LoadPoint",
    "Miss",
    "PairedPoint",
    "Round",
    "ResultStore",
    "Run",
    "RunInfo",
    "Served",
    "SpeechAccuracy",
    "Startup",
    "Status",
    "TaskScore",
    "TextAccuracy",
    "append_line",
    "results_schema",
]
