from __future__ import annotations

from pathlib import Path

import pytest

from harness.backends import LaunchContext, known_backends
from harness.errors import SpecError
from harness.spec import parse_matrix

BASE = {
    "platforms": {
        "cpu": {
            "versions": ["11434.0.0"],
            "reference": "11434.0.0",
            "models": [{"name": "m", "source": f"file://{Path(__file__).resolve()}"}],
        }
    },
}


def test_custom_backend_argv_substitutes_placeholders_per_argument() -> None:
    m = parse_matrix(
        {
            **BASE,
            "backend": "my-llama",
            "custom": {
                "run_command": "llama-server --host {{host}} --port {{port}} --model '{{model_path}}' "
                "--alias {{ model_name }} "
                "--tag gpu-{{gpu_ids}}-of-{{gpu_count}}",
                "health_check_path": "/health",
            },
        },
        "c.toml",
    )
    flavour = m.get_backend().flavour("cpu")
    assert (flavour.readiness_path, flavour.model_format, flavour.pipx_app) == ("/health", "gguf", "llama-server")
    assert m.platforms["cpu"].package == "my-llama"  # a manual pin: no package to install
    ctx = LaunchContext(
        executable=Path("/bin/my-llama_1"),
        model_path=Path("/models/a b; rm -rf x.gguf"),
        served_name="m",
        host="127.0.0.1",
        port=8080,
        gpus=(0, 1),
        extra_args=("--x",),
        cache_dir=Path("/tmp/c"),
    )
    assert flavour.launch_argv(ctx) == [
        "/bin/my-llama_1",
        "--host",
        "127.0.0.1",
        "--port",
        "8080",
        "--model",
        "/models/a b; rm -rf x.gguf",
        "--alias",
        "m",
        "--tag",
        "gpu-0,1-of-2",
        "--x",
    ]
    assert flavour.launch_env(ctx)["CUDA_VISIBLE_DEVICES"] == "0,1"
    assert m.get_backend().installer == "manual"
    assert "my-llama" not in known_backends()  # parsing is pure: the custom backend travels on the matrix


def test_custom_backend_errors() -> None:
    with pytest.raises(SpecError) as info:
        parse_matrix({**BASE, "backend": "vllm", "custom": {"run_command": "x"}}, "c.toml")
    assert info.value.errors == ["backend: 'vllm' is a built-in backend; a custom backend needs a name of its own"]
    with pytest.raises(SpecError) as info:
        parse_matrix(
            {
                **BASE,
                "backend": "mine",
                "custom": {
                    "run_command": "srv --port {{prot}}",
                    "installer": "curl",
                    "health_check_path": "health",
                    "shell": True,
                },
            },
            "c.toml",
        )
    assert info.value.errors == [
        "custom.shell: unknown key (expected one of: run_command, "
        "health_check_path, model_format, installer, pipx_app, api_kinds, "
        "download_url, sha256sum_url, archive_executable, version_path, version_field, metrics_path, "
        "prompt_tokens_metric, generation_tokens_metric)",
        "custom.run_command: unknown placeholder {{prot}} (known: "
        "model_path, port, model_name, gpu_ids, gpu_count, host)",
        "custom.health_check_path: expected a path starting with '/', got 'health'",
        "custom.installer: unknown value 'curl' (expected one of: manual, pipx, download)",
    ]


def test_custom_backend_declares_the_model_kinds_it_serves() -> None:
    model = {"name": "w", "source": f"file://{Path(__file__).resolve()}", "kind": "stt"}
    stt = {"platforms": {"cpu": {"versions": ["1.0"], "reference": "1.0", "models": [model]}}}
    with pytest.raises(SpecError) as info:
        parse_matrix({**stt, "backend": "my-stt", "custom": {"run_command": "srv --port {{port}}"}}, "c.toml")
    assert info.value.errors == [
        "platforms.cpu.models[0].kind: my-stt does not serve 'stt' models (it serves: chat, embedding)"
    ]
    m = parse_matrix(
        {
            **stt,
            "backend": "my-stt",
            "custom": {"run_command": "srv --port {{port}}", "api_kinds": ["stt"], "model_format": "hf"},
        },
        "c.toml",
    )
    assert m.platforms["cpu"].models[0].kind == "stt"
    with pytest.raises(SpecError) as info:
        parse_matrix({**stt, "backend": "my-stt", "custom": {"run_command": "srv", "api_kinds": ["video"]}}, "c.toml")
    assert info.value.errors == [
        "custom.api_kinds: expected a non-empty list of chat, embedding, stt, tts, got ['video']"
    ]


def test_custom_download_backend_plan_and_errors() -> None:
    from harness.backends import Host

    m = parse_matrix(
        {
            **BASE,
            "backend": "my-dl",
            "custom": {
                "run_command": "bin/llama-server --port {{port}}",
                "installer": "download",
                "download_url": "https://mirror.example/llama/{{ version }}/llama-server-{{version}}.zip",
            },
        },
        "c.toml",
    )
    assert m.platforms["cpu"].package == "my-dl" and m.get_backend().installer == "download"
    plan = m.get_backend().flavour("cpu").download_plan("11434.0.0", "https://github.com", Host.detect())
    assert plan.url == "https://mirror.example/llama/11434.0.0/llama-server-11434.0.0.zip"
    assert plan.sums_url == "https://mirror.example/llama/11434.0.0/sha256sum.txt"
    assert (plan.filename, plan.executable) == ("llama-server-11434.0.0.zip", "llama-server")
    with pytest.raises(SpecError) as info:
        parse_matrix(
            {
                **BASE,
                "backend": "my-dl2",
                "custom": {
                    "run_command": "srv",
                    "installer": "download",
                    "download_url": "ftp://x/srv.zip",
                    "sha256sum_url": "https://x/{{build}}/s.txt",
                },
            },
            "c.toml",
        )
    assert info.value.errors == [
        "custom.download_url: expected an http(s) URL, got 'ftp://x/srv.zip'",
        "custom.sha256sum_url: unknown placeholder {{build}} (known: version)",
        "custom.download_url: installer 'download' needs a URL with {{version}}, got 'ftp://x/srv.zip'",
    ]
    with pytest.raises(SpecError) as info:
        parse_matrix(
            {
                **BASE,
                "backend": "my-dl3",
                "custom": {"run_command": "srv", "download_url": "https://x/{{version}}.zip"},
            },
            "c.toml",
        )
    assert info.value.errors == ["custom.download_url: only for installer = 'download' (installer is 'manual')"]


def test_custom_backend_says_where_its_version_and_token_counters_are() -> None:
    model = {"name": "m", "source": f"file://{Path(__file__).resolve()}"}
    plat = {"platforms": {"cpu": {"versions": ["1.0"], "reference": "1.0", "models": [model]}}}
    custom = {
        "run_command": "srv --port {{port}}",
        "version_path": "/v",
        "version_field": "build.version",
        "metrics_path": "/metrics",
        "prompt_tokens_metric": "srv:prompt_tokens_total",
        "generation_tokens_metric": "srv:generation_tokens_total",
    }
    m = parse_matrix({"backend": "my-srv", "custom": custom, **plat}, "c.toml")
    served = m.get_backend().flavour("cpu").served
    assert (served.version_path, served.version_field, served.counts_tokens) == ("/v", "build.version", True)
    bad = {"run_command": "srv", "version_path": "v", "prompt_tokens_metric": "srv:p_total"}
    with pytest.raises(SpecError) as info:
        parse_matrix({"backend": "my-srv", "custom": bad, **plat}, "c.toml")
    assert info.value.errors == [
        "custom.version_path: expected a path starting with '/', got 'v'",
        "custom.prompt_tokens_metric: give both token metrics, or neither",
        "custom.metrics_path: the token metrics need the path they are served at",
    ]
