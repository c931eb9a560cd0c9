"""End to end on real vox-box (PyPI, installed with pipx the GPUStack way, ~2 min and 7.4 GiB the first
time) transcribing real espeak-ng speech with faster-whisper-base from PyPI wheels. One pin, a small
workload: the full two-pin comparison is `nox -s matrix -- vox-box`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from harness.spec import load_matrix

ROOT = Path(__file__).resolve().parents[2]
PIN = "0.0.21"


def test_vox_box_transcribes_and_reports_its_deviations(tmp_path: Path) -> None:
    shipped = load_matrix(ROOT / "matrices" / "vox-box.toml")
    model = shipped.platforms["cpu"].models[0]
    waivers = ", ".join(f'"{k}" = "{v}"' for k, v in shipped.policy.waived_checks.items())
    matrix = tmp_path / "vox-box.toml"
    matrix.write_text(f"""
backend = "vox-box"
[platforms.cpu]
versions = ["{PIN}"]
reference = "{PIN}"
[[platforms.cpu.models]]
name = "{model.name}"
kind = "stt"
source = "{model.source}"
[workload]
speech_clips = 4
concurrency = [1, 2]
requests_per_level = 4
[thresholds]
startup_deadline_s = 120
max_wer = 0.5
[policy]
waived_checks = {{ {waivers} }}
""")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "-W",
            "default",
            str(matrix),
            "--platform",
            "cpu",
            "--reports-dir",
            str(tmp_path / "reports"),
            "--run-id",
            "e2e",
            "--no-history",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    print(proc.stdout[-5000:])
    assert proc.returncode == 0, proc.stdout[-3000:]
    (cell,) = [
        json.loads(ln) for ln in (tmp_path / "reports" / "vox-box" / "e2e" / "results.jsonl").read_text().splitlines()
    ]
    assert cell["status"] == "passed" and 0 < cell["startup"]["cold"]["seconds"] < 60
    assert cell["install"]["executable"].endswith(f"vox-box_{PIN}") and cell["install"]["build_constraints"] == [
        "setuptools<81"
    ]
    checks = {c["name"]: c for c in cell["checks"]}
    assert (
        checks["stt.json"]["passed"]
        and checks["stt.deterministic"]["passed"]
        and checks["stt.response_format.verbose_json"]["passed"]
    )
    # vox-box's errors-as-200: found, reported, waived (not silently passed)
    assert checks["stt.error.missing_file"]["passed"] is False and checks["stt.error.missing_file"]["waived"]
    assert cell["accuracy"]["clips"] == 4 and 0 <= cell["accuracy"]["wer"] <= 0.5
    for p in cell["throughput"]:
        (run,) = p["runs"]
        assert (
            run["completed"] == 4
            and run["distributions"]["latency_ms"]["p50"] > 0
            and run["distributions"]["rtf"]["p50"] > 0
        )
    report = (tmp_path / "reports" / "vox-box" / "e2e" / "report.md").read_text()
    assert f"**{PIN}**" in report and "WER" in report and "FAIL (waived)" in report


def test_a_model_vox_box_does_not_support_is_a_startup_failure_despite_exit_code_0(tmp_path: Path) -> None:
    # vox-box logs "Model isn't supported" and exits 0: readiness comes from /health, never the exit code.
    from harness.cell import RunContext, run_cell
    from harness.install import InstallPaths, default_data_dir, pipx_command
    from harness.results import FailureClass
    from harness.slots import Slot
    from harness.spec import parse_matrix

    model = tmp_path / "not-a-speech-model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    matrix = parse_matrix(
        {
            "backend": "vox-box",
            "platforms": {
                "cpu": {
                    "versions": [PIN],
                    "reference": PIN,
                    "models": [{"name": "nope", "source": f"file://{model}", "kind": "stt"}],
                }
            },
            "thresholds": {"startup_deadline_s": 60},
        },
        "nope.toml",
    )
    data = default_data_dir()
    ctx = RunContext(
        matrix=matrix,
        platform="cpu",
        paths=InstallPaths(data_dir=data, bin_dir=data / "bin", pipx=pipx_command(None)),
        run_dir=tmp_path / "run",
        slot=Slot(platform="cpu"),
    )
    plat = matrix.platforms["cpu"]
    result = run_cell(ctx, plat.versions[0], plat.models[0])
    assert result.failure_class is FailureClass.STARTUP_FAILED
    assert (
        result.reason.startswith("server exited with code 0 before it was ready")
        and "Model isn't supported" in result.reason
    )
