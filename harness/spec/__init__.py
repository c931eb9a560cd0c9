"""Matrix files: TOML in, frozen dataclasses out, every error reported at once with its path.

An error names the file, the dotted path and the value: ``matrices/vllm.toml:
platforms.cpu.models[0].source: unknown scheme 'hff' (expected one of: file, hf, pypi)``.

    types.py     the dataclasses, each default written once
    table.py     typed getters over a TOML table (defaults from a dataclass), errors with their paths
    platform.py  a platform table: pins, version sets, models, launch variants
    read.py      the file: one reader per top-level table; load_matrix, parse_matrix
"""

from __future__ import annotations

from ..errors import SpecError
from .platform import MODEL_SCHEMES, check_model_source
from .read import load_matrix, parse_matrix
from .types import (
    CHECK_GROUPS,
    EXPECTABLE,
    STARTUPS,
    TIE_BREAKS,
    Accuracy,
    GpustackTarget,
    Matrix,
    ModelSpec,
    PinSpec,
    PlatformSpec,
    Policy,
    SloSpec,
    Thresholds,
    VariantSpec,
    VersionSet,
    Workload,
)

__all__ = [
    "CHECK_GROUPS",
    "EXPECTABLE",
    "MODEL_SCHEMES",
    "STARTUPS",
    "TIE_BREAKS",
    "Accuracy",
    "GpustackTarget",
    "Matrix",
    "ModelSpec",
    "PinSpec",
    "PlatformSpec",
    "Policy",
    "SloSpec",
    "SpecError",
    "Thresholds",
    "VariantSpec",
    "VersionSet",
    "Workload",
    "check_model_source",
    "load_matrix",
    "parse_matrix",
]
