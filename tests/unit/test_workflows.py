"""The CI workflows: valid GitHub Actions workflows (check-jsonschema's vendored schema, no network), running
the README's test command and the nightly's fan-out, merge and gate."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))


def test_the_workflows_are_valid_github_actions_workflows() -> None:
    assert [p.name for p in WORKFLOWS] == ["nightly-gpu.yml", "tests.yml"]
    exe = shutil.which("check-jsonschema") or str(Path(sys.executable).with_name("check-jsonschema"))
    proc = subprocess.run(
        [exe, "--builtin-schema", "vendor.github-workflows", *map(str, WORKFLOWS)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_a_broken_workflow_is_caught(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yml"
    bad.write_text("name: bad\non: push\njobs:\n  x:\n    runs-on: ubuntu-latest\n    stepz: []\n")
    exe = shutil.which("check-jsonschema") or str(Path(sys.executable).with_name("check-jsonschema"))
    proc = subprocess.run(
        [exe, "--builtin-schema", "vendor.github-workflows", str(bad)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode != 0


def test_the_workflows_run_what_the_readme_and_the_harness_say() -> None:
    readme = (ROOT / "README.md").read_text()
    tests = (ROOT / ".github" / "workflows" / "tests.yml").read_text()
    assert "pip install nox && nox -s tests" in readme and "run: pip install nox && nox -s tests" in tests
    nightly = (ROOT / ".github" / "workflows" / "nightly-gpu.yml").read_text()
    for needed in (
        '--shard "${{ matrix.shard }}/${{ strategy.job-total }}"',
        "fail-fast: false",
        "if: always()",
        "python -m harness report shards/shard-*",
        "--fail-on-regression",
        "[self-hosted, gpu]",
        "workflow_dispatch",
    ):
        assert needed in nightly, needed


def test_ci_checks_the_format_before_the_tests() -> None:
    """The formatter runs: CI fails on code `ruff format` would change (and no skip markers to hide behind)."""
    noxfile = (ROOT / "noxfile.py").read_text()
    assert '"ruff", "format", "--check"' in noxfile
    for ci in (ROOT / ".ci" / "run", ROOT / ".github" / "workflows" / "tests.yml"):
        text = ci.read_text()
        assert text.index("nox -s lint") < text.index("nox -s tests"), ci
    sources = [*ROOT.glob("harness/**/*.py"), *ROOT.glob("tests/**/*.py"), *ROOT.glob("benchmarks/**/*.py")]
    assert not [p for p in sources if "fmt: " + "skip" in p.read_text()]
