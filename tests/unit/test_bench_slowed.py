"""benchmarks/slowed_pin.py runs a matrix file as it is plus one slowed pin: the matrix it writes must read back
as the same matrix with that pin added (and only the platform asked for)."""

from __future__ import annotations

import sys
from pathlib import Path

import tomli_w

from benchmarks.slowed_pin import slowed_matrix
from harness.spec import parse_matrix

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]


def test_the_default_matrix_with_a_slowed_pin_reads_back_as_itself_plus_that_pin() -> None:
    source = ROOT / "matrices" / "vllm.toml"
    data = tomllib.loads(source.read_text())
    before = parse_matrix(data, str(source), source)
    written = tomli_w.dumps(slowed_matrix(data, "cpu", "0.31.0+slowed"))
    after = parse_matrix(tomllib.loads(written), "derived", source)
    cpu, was = after.platforms["cpu"], before.platforms["cpu"]
    assert list(after.platforms) == ["cpu"]
    assert [p.pin.text for p in cpu.versions] == [*(p.pin.text for p in was.versions), "0.31.0+slowed"]
    assert [p.expect for p in cpu.versions][:-1] == [p.expect for p in was.versions]
    assert cpu.reference == was.reference and cpu.variants == was.variants and cpu.models == was.models
    assert after.workload == before.workload and after.thresholds == before.thresholds
