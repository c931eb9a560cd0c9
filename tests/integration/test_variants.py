"""Launch variants on the scripted backend: cells are pin x variant x model, each variant's cells are compared
with the reference pin in the same variant, and the recommendation names the pin and its parameters."""

from __future__ import annotations

import json
from pathlib import Path

from tests.integration.test_plugin import _run
from tests.support.scripted_backend import install_manual_pin


def pins_verdicts(run_dir: Path) -> list[dict[str, object]]:
    return json.loads((run_dir / "pins.json").read_text())["verdicts"]


def _variant_matrix(tmp_path: Path, model: Path, extra: str = "") -> Path:
    path = tmp_path / "scripted.toml"
    path.write_text(f"""
backend = "scripted"
[platforms.cpu]
package = "scripted-server"
versions = ["1.0.0", "2.0.0"]
reference = "1.0.0"
[[platforms.cpu.variants]]
name = "slow"
serve_args = ["--token-delay", "0.02"]
[[platforms.cpu.variants]]
name = "fast"
serve_args = ["--token-delay", "0.001"]
env = {{ SCRIPTED_NOTE = "fast" }}
{extra}
[[platforms.cpu.models]]
name = "tiny"
source = "file://{model}"
[workload]
output_tokens = 6
concurrency = [1, 2]
requests_per_level = 8
agreement_prompts = 3
agreement_max_tokens = 4
[thresholds]
startup_deadline_s = 20
throughput_noise = 0.2
""")
    return path


def test_variants_are_a_dimension_compared_like_with_like_and_recommended_with_parameters(
    tmp_path: Path, gguf_model: Path
) -> None:
    for version in ("1.0.0", "2.0.0"):
        install_manual_pin(tmp_path / "bin", version)
    proc = _run(tmp_path, _variant_matrix(tmp_path, gguf_model), "--run-id", "v1")
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    assert "4 passed" in out
    for cid in (f"scripted_{v}-tiny-cpu-{n}" for v in ("1.0.0", "2.0.0") for n in ("slow", "fast")):
        assert f"[{cid}] done: PASSED" in out
    # the reference pin of each variant runs before the other pin of that variant
    assert out.index("[scripted_1.0.0-tiny-cpu-fast] done") < out.index("[scripted_2.0.0-tiny-cpu-fast] done")
    assert "recommended pin for tiny on cpu: scripted 2.0.0 [fast] with --token-delay 0.001" in out

    run_dir = tmp_path / "reports" / "scripted" / "v1"
    cells = {c["cell_id"]: c for c in json.loads((run_dir / "results.json").read_text())["cells"]}
    fast2 = cells["scripted_2.0.0-tiny-cpu-fast"]
    assert (fast2["variant"], fast2["baseline_variant"], fast2["deployed_variant"]) == ("fast", "fast", "slow")
    assert fast2["backend_parameters"] == ["--token-delay", "0.001"] and fast2["backend_env"] == {
        "SCRIPTED_NOTE": "fast"
    }
    greedy = next(c for c in fast2["checks"] if c["name"] == "agreement.greedy")
    assert (
        greedy["passed"] and "vs 1.0.0 [fast]" in greedy["detail"]
    )  # like with like: the reference pin in the same variant
    assert "--token-delay" in cells["scripted_1.0.0-tiny-cpu-fast"]["fingerprint"]["launch_argv"]
    # paired rounds (workload.paired = "auto") against whom the verdicts weigh each cell: the deployed launch against
    # a twin of itself, the reference pin in another launch against the deployed launch, a pin against its
    # variant's reference pin
    partners = {cid: c["pairing"].split(" (both servers")[0] for cid, c in cells.items()}
    assert partners == {
        "scripted_1.0.0-tiny-cpu-slow": "paired with 1.0.0 [slow]",
        "scripted_1.0.0-tiny-cpu-fast": "paired with 1.0.0 [slow]",
        "scripted_2.0.0-tiny-cpu-slow": "paired with 1.0.0 [slow]",
        "scripted_2.0.0-tiny-cpu-fast": "paired with 1.0.0 [fast]",
    }, partners
    assert all(v.get("rounds", 0) >= 6 for v in pins_verdicts(run_dir))  # workload.rounds by default
    # where the time went, per group of conformance checks, inside the conformance probe's own time
    timings = fast2["conformance_s"]
    assert {"models", "chat", "completion", "stop", "n", "seed", "stream", "logprobs", "errors"} == set(timings)
    assert sum(timings.values()) <= fast2["probe_s"]["conformance"] + 0.01

    pins = json.loads((run_dir / "pins.json").read_text())
    (rec,) = pins["models"]
    assert (rec["backend_version"], rec["variant"], rec["backend_parameters"], rec["env"]) == (
        "2.0.0",
        "fast",
        ["--token-delay", "0.001"],
        {"SCRIPTED_NOTE": "fast"},
    )
    assert any("not the deployed 'slow'" in r for r in rec["reasons"])
    lines = [v for v in pins["verdicts"] if v["metric"] == "output tok/s"]
    # the fast variant's reference pin against the deployed launch (same pin, other parameters): faster
    assert any(
        v["version"] == "1.0.0 [fast]" and v["reference"] == "1.0.0 [slow]" and v["verdict"] == "faster" for v in lines
    ), lines
    # pins within one variant: against that variant's reference pin
    assert any(v["version"] == "2.0.0 [fast]" and v["reference"] == "1.0.0 [fast]" for v in lines), lines
    assert not any(v["version"] == "2.0.0 [fast]" and v["reference"] == "1.0.0 [slow]" for v in lines)
    md = (run_dir / "report.md").read_text()
    assert "**2.0.0 [fast] with --token-delay 0.001**" in md and "2.0.0 [slow]" in md


def test_a_variant_compared_with_another_variants_reference(tmp_path: Path, gguf_model: Path) -> None:
    """reference_variant: a launch whose outputs should equal the deployed launch's is checked against it."""
    for version in ("1.0.0", "2.0.0"):
        install_manual_pin(tmp_path / "bin", version)
    extra = (
        '[[platforms.cpu.variants]]\nname = "fast-vs-slow"\n'
        'serve_args = ["--token-delay", "0.001"]\nreference_variant = "slow"'
    )
    proc = _run(tmp_path, _variant_matrix(tmp_path, gguf_model, extra), "--run-id", "v2", "-k", "slow")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    run_dir = tmp_path / "reports" / "scripted" / "v2"
    cells = {c["cell_id"]: c for c in json.loads((run_dir / "results.json").read_text())["cells"]}
    ref_in_variant = cells["scripted_1.0.0-tiny-cpu-fast-vs-slow"]
    greedy = next(c for c in ref_in_variant["checks"] if c["name"] == "agreement.greedy")
    assert (
        greedy["passed"] and "vs 1.0.0 [slow]" in greedy["detail"]
    )  # the reference pin itself, compared with the other launch


def test_a_variant_for_other_cpus_is_skipped_with_the_reason_and_not_counted_missing(
    tmp_path: Path, gguf_model: Path
) -> None:
    from harness.fingerprint import Machine

    if "avx2" not in Machine.detect().cpu_flags:
        import pytest

        pytest.skip("needs a CPU with avx2 (the variant is for CPUs without it)")
    for version in ("1.0.0", "2.0.0"):
        install_manual_pin(tmp_path / "bin", version)
    extra = (
        '[[platforms.cpu.variants]]\nname = "no-avx2"\nserve_args = ["--token-delay", "0.001"]\ncpu_lacks = ["avx2"]'
    )
    proc = _run(
        tmp_path, _variant_matrix(tmp_path, gguf_model, extra), "--run-id", "v3", "-k", "slow or no-avx2", "-rs"
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2 passed, 2 skipped" in proc.stdout
    assert "launch variant 'no-avx2' is for CPUs without avx2; this one has avx2" in proc.stdout
    md = (tmp_path / "reports" / "scripted" / "v3" / "report.md").read_text()
    assert "Partial run" not in md  # cells this machine cannot run are not missing from its run
