"""Speech probes through run_cell against the scripted server: STT (real espeak-ng speech, transcripts
scripted by the audio's hash) and TTS (WAVs that carry their text, heard back by a second server).

Each planted fault fails exactly its check, and a well-behaved server passes them all.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from harness.cell import RunContext, run_cell
from harness.install import InstallPaths
from harness.launch import free_port
from harness.probes import speech
from harness.results import FailureClass, SpeechAccuracy, Status
from harness.slots import Slot
from harness.spec import parse_matrix
from tests.support.scripted_backend import SERVER, install_manual_pin, run_second_pin

SEED = 11
CLIPS = 4
FORMAT_CHECKS = {"stt.response_format.text", "stt.response_format.srt", "stt.response_format.vtt"}
ERROR_CHECKS = {"stt.error.unknown_response_format", "stt.error.not_audio", "stt.error.missing_file"}


def _matrix(model: Path, kind: str = "stt", **model_fields: str):
    return parse_matrix(
        {
            "backend": "scripted-speech",
            "platforms": {
                "cpu": {
                    "package": "scripted-server",
                    "versions": ["1.0.0", "2.0.0"],
                    "reference": "1.0.0",
                    "models": [{"name": "whisper", "source": f"file://{model}", "kind": kind, **model_fields}],
                }
            },
            "workload": {
                "seed": SEED,
                "speech_clips": CLIPS,
                "concurrency": [1, 2],
                "requests_per_level": 4,
                "repeats": 2,
            },
            "thresholds": {"startup_deadline_s": 20, "max_wer": 0.3, "wer_tolerance": 0.05},
        },
        "speech.toml",
    )


@pytest.fixture(scope="module")
def stt_reference(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("stt")
    model = tmp / "whisper"
    model.mkdir()
    data = tmp / "data"
    # The clips the cells will make (same seed, same cache): the server "hears" them by their hash.
    clips = speech.make_clips(CLIPS, SEED, data / "audio" / "espeak")
    transcripts = tmp / "transcripts.json"
    transcripts.write_text(json.dumps({hashlib.sha256(c.audio).hexdigest(): c.text for c in clips}))
    install_manual_pin(tmp / "bin", "1.0.0", "--transcripts", str(transcripts), backend="scripted-speech")
    matrix = _matrix(model)
    ctx = RunContext(
        matrix=matrix,
        platform="cpu",
        paths=InstallPaths(data_dir=data, bin_dir=tmp / "bin", pipx=("false",)),
        run_dir=tmp / "run",
        slot=Slot(platform="cpu"),
    )
    plat = matrix.platforms["cpu"]
    ref = run_cell(ctx, plat.versions[0], plat.models[0])
    assert ref.status is Status.PASSED, (ref.reason, [c for c in ref.checks if c.passed is not True])
    return ctx, transcripts, ref


def test_reference_stt_cell_records_wer_latency_and_rtf(stt_reference) -> None:
    _, _, ref = stt_reference
    assert isinstance(ref.accuracy, SpeechAccuracy)
    assert ref.accuracy.wer == 0.0 and ref.accuracy.clips == CLIPS and ref.accuracy.words > 0
    assert [p.label for p in ref.throughput] == ["c=1", "c=2"]
    for p in ref.throughput:
        assert p.run.completed == 4 and len(p.runs) == 2 and p.ci95 is not None and p.unit == "audio s/s"
        lat, rtf = p.dist("latency_ms"), p.dist("rtf")
        assert lat is not None and rtf is not None and lat.p50 > 0 and 0 < rtf.p50 < 1 and lat.n == 4
    assert ref.peak_rate() and ref.rate_unit == "audio s/s"
    assert ref.notes["speech"].startswith("eSpeak NG")


@pytest.mark.parametrize(
    ("mode", "expected_failures"),
    [
        ("ok", set()),
        ("text-as-json", FORMAT_CHECKS),
        ("error-200", ERROR_CHECKS),
        ("mishear", {"accuracy.wer", "agreement.transcripts"}),
    ],
)
def test_planted_speech_fault_fails_exactly_its_check(stt_reference, mode: str, expected_failures: set[str]) -> None:
    ctx, transcripts, _ = stt_reference
    result, failed = run_second_pin(ctx, "--transcripts", str(transcripts), "--mode", mode, backend="scripted-speech")
    assert failed == expected_failures, [c for c in result.checks if c.passed is not True]
    if not expected_failures:
        assert result.status is Status.PASSED, result.reason
        assert result.agreement is not None and result.agreement.identical == CLIPS
        return
    assert (result.status, result.failure_class) == (Status.FAILED, FailureClass.CHECK_FAILED)
    if mode == "error-200":
        check = next(c for c in result.checks if c.name == "stt.error.missing_file")
        assert check.detail == "error returned as HTTP 200 with status_code 400 in the body (expected an HTTP 4xx)"
        assert check.evidence["actual"]["status_code"] == 400
    if mode == "mishear":
        assert (
            isinstance(result.accuracy, SpeechAccuracy)
            and result.accuracy.wer > 0
            and result.accuracy.reference_wer == 0.0
        )
        assert result.agreement is not None and result.agreement.differ >= 1


@pytest.fixture
def stt_server(tmp_path: Path):
    """A second scripted server on its own port: the STT end of the TTS round trip."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, str(SERVER), "--host", "127.0.0.1", "--port", str(port)], stderr=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/health").status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.05)
    yield url
    proc.terminate()
    proc.wait(5)


@pytest.mark.parametrize(("mode", "passes"), [("ok", True), ("tts-garbled", False)])
def test_tts_cell_checks_audio_duration_and_round_trip(
    tmp_path: Path, stt_server: str, mode: str, passes: bool
) -> None:
    model = tmp_path / "voice"
    model.mkdir()
    matrix = _matrix(model, kind="tts", voice="alloy", stt_url=stt_server, stt_model="scripted")
    install_manual_pin(tmp_path / "bin", "1.0.0", "--mode", mode, backend="scripted-speech")
    ctx = RunContext(
        matrix=matrix,
        platform="cpu",
        paths=InstallPaths(data_dir=tmp_path / "data", bin_dir=tmp_path / "bin", pipx=("false",)),
        run_dir=tmp_path / "run",
        slot=Slot(platform="cpu"),
    )
    plat = matrix.platforms["cpu"]
    result = run_cell(ctx, plat.versions[0], plat.models[0])
    verdicts = {c.name: c.passed for c in result.checks}
    if passes:
        assert result.status is Status.PASSED, result.reason
        assert all(verdicts[f"tts.audio[{i}]"] and verdicts[f"tts.duration[{i}]"] for i in range(CLIPS))
        assert verdicts["tts.round_trip_wer"] is True and verdicts["tts.error.empty_input"] is True
        assert isinstance(result.accuracy, SpeechAccuracy) and result.accuracy.wer == 0.0
        assert result.rate_unit == "audio s/s" and all(
            (p.dist("rtf") or pytest.fail("no rtf")).p50 < 1 for p in result.throughput
        )
    else:
        # not audio: every synthesis fails its check, and the load run cannot measure a thing
        assert all(verdicts[f"tts.audio[{i}]"] is False for i in range(CLIPS))
        assert result.status is Status.ERROR and result.failure_class is FailureClass.PROBE_FAILED
        assert "not a WAV file" in result.reason
