"""Schema version 1 (dicts, before the types): converted on load to version 2's shape, one line saying so."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from ..fingerprint import Fingerprint, Machine
from ..install.record import InstallRecord
from ..serial import dump
from .units import AUDIO_UNIT, TEXT_UNIT


def _v1_point(p: Mapping[str, Any]) -> dict[str, Any]:
    audio = "audio_s_per_s" in p or "audio_s_per_s_median" in p
    key = "audio_s_per_s" if audio else "output_tok_s"
    names = ("latency_ms", "rtf") if audio else ("ttft_ms", "tpot_ms", "itl_ms", "e2el_ms", "loop_lag_ms")

    def run(r: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "rate": r.get(key),
            "requests": r.get("requests", 0),
            "completed": r.get("completed", 0),
            "failed": r.get("failed", 0),
            "duration_s": r.get("duration_s"),
            "request_s": r.get("request_s"),
            "distributions": {n: r[n] for n in names if isinstance(r.get(n), dict)},
            "output_tokens": r.get("output_tokens", 0),
            "audio_s": r.get("audio_s", 0.0),
            "goodput_req_s": r.get("goodput_req_s"),
            "token_count_mismatches": r.get("token_count_mismatches", 0),
            "client_cpu_s": r.get("client_cpu_s", 0.0),
            "client_cpu_util": r.get("client_cpu_util", 0.0),
            "saturated": bool(r.get("saturated", False)),
            "saturation_reason": r.get("saturation_reason", ""),
            "errors": list(r.get("errors", [])),
        }

    runs = [run(r) for r in p.get("repeats") or [p]]
    ci = p.get(f"{key}_ci95")
    return {
        "label": p.get("label", ""),
        "mode": p.get("mode", "concurrency"),
        "target": p.get("target"),
        "unit": AUDIO_UNIT if audio else TEXT_UNIT,
        "runs": runs,
        "median": p.get(f"{key}_median", p.get(key)),
        "ci95": list(ci) if ci else None,
        "saturated": bool(p.get("saturated", False)),
        "saturation_reason": p.get("saturation_reason", ""),
    }


def _v1_agreement(a: Mapping[str, Any]) -> dict[str, Any] | None:
    if not a:
        return None
    if a.get("reference"):
        return {"kind": "reference", "reference_version": ""}
    if "clips" in a:
        return {
            "kind": "transcripts",
            "reference_version": a.get("reference_version", ""),
            "compared": a["clips"],
            "identical": a.get("identical", 0),
            "differ": a.get("differ", 0),
            "wer_vs_reference": a.get("wer_vs_reference"),
            "items": [
                {
                    "prompt": "",
                    "identical": False,
                    "ours_text": c.get("ours", ""),
                    "reference_text": c.get("reference", ""),
                }
                for c in a.get("per_clip", [])
            ],
        }
    if "prompts" in a:
        return {
            "kind": "greedy",
            "reference_version": a.get("reference_version", ""),
            "compared": a["prompts"],
            "identical": a.get("identical", 0),
            "close": a.get("close", 0),
            "differ": a.get("disagree", 0),
            "prompt_logprob_max_delta": a.get("prompt_logprob_max_delta"),
            "items": list(a.get("per_prompt", [])),
        }
    return {"kind": "not-compared", "reference_version": "", "note": a.get("note", "")}


def _v1_accuracy(a: Mapping[str, Any]) -> dict[str, Any] | None:
    if not a:
        return None
    if "wer" in a:
        return {
            "kind": "wer",
            "wer": a["wer"],
            "edits": a.get("edits", 0),
            "words": a.get("words", 0),
            "clips": a.get("clips", len(a.get("per_clip", []))),
            "per_clip": list(a.get("per_clip", [])),
            "reference_wer": a.get("reference_wer"),
        }
    return {
        "kind": "tasks",
        "digest": a.get("digest", ""),
        "overall": a["overall"],
        "tasks": a.get("tasks", {}),
        "misses": list(a.get("misses", [])),
    }


_KEPT = (  # schema-1 fields that schema 2 kept as they were
    "cell_id",
    "backend",
    "version",
    "model",
    "platform",
    "is_reference",
    "status",
    "failure_class",
    "reason",
    "expected_failure",
    "phases",
    "gpu_memory_peak_mib",
    "log_path",
    "log_excerpt",
    "warnings",
    "started_at",
    "finished_at",
)


def convert_v1(data: Mapping[str, Any]) -> dict[str, Any]:
    """A schema-1 cell (plain dicts) in schema 2. Its machine is unknown beyond host name and
    architecture, so its numbers never compare with a fingerprinted run's."""
    fp = data.get("fingerprint") or {}
    notes = {k: str(fp[k]) for k in ("fixed_output_length",) if k in fp}
    if "speech" in fp:
        notes["speech"] = json.dumps(fp["speech"], sort_keys=True)
    checks = [
        {k: v for k, v in c.items() if k in ("group", "name", "passed", "detail", "evidence")}
        | {"waived": c.get("waived") or ""}
        for c in data.get("checks", [])
    ]
    startup = {
        k: {"seconds": s.get("seconds"), "log_ready_s": s.get("log_ready_s"), "phases": s.get("phases") or {}}
        for k, s in (data.get("startup") or {}).items()
    }
    if not startup and data.get("startup_s") is not None:
        startup = {"cold": {"seconds": data["startup_s"]}}
    install = _v1_install(data, fp)
    return {k: data[k] for k in _KEPT if k in data} | {
        "selected_by": fp.get("selected_by", ""),
        "startup": startup,
        "install": dump(install) if install else None,
        "fingerprint": dump(_v1_fingerprint(fp)),
        "notes": notes,
        "checks": checks,
        "agreement": _v1_agreement(data.get("agreement") or {}),
        "accuracy": _v1_accuracy(data.get("accuracy") or {}),
        "throughput": [_v1_point(p) for p in data.get("throughput") or []],
    }


def _v1_install(data: Mapping[str, Any], fp: Mapping[str, Any]) -> InstallRecord | None:
    if not (data.get("executable") or fp.get("origin")):
        return None
    command = fp.get("install_command") or []
    kind = fp.get("origin") or (
        "download" if command[:1] == ["download"] else "manual" if command[:1] == ["manual"] else "pipx"
    )
    return InstallRecord(
        kind=kind,
        executable=data.get("executable", ""),
        installed_now=bool(data.get("installed_now")),
        size_bytes=int(fp.get("venv_bytes") or fp.get("install_bytes") or 0),
        command=(tuple(command),) if kind == "pipx" and command else (),
        url=command[1] if kind == "download" and len(command) > 1 else "",
        build_constraints=tuple(fp.get("build_constraints") or ()),
        note="converted from results schema 1: what ran was not recorded",
    )


def _v1_fingerprint(fp: Mapping[str, Any]) -> Fingerprint:
    machine = Machine(
        hostname=fp.get("host", ""),
        os="",
        arch=fp.get("machine", ""),
        python="",
        cpu_model="unknown",
        cores=0,
        memory_bytes=0,
        cpu_flags=(),
    )
    return Fingerprint(
        machine=machine,
        slot=fp.get("slot", "cpu"),
        package=fp.get("package", ""),
        model_source=fp.get("model_source", ""),
        model_path=fp.get("model_path", ""),
        model_sha256=fp.get("model_sha256", ""),
        numerics="unknown (schema 1)",
    )
