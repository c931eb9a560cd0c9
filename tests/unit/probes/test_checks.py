from __future__ import annotations

import httpx
import pytest

from harness.errors import ProbeError
from harness.probes.checks import exchange
from harness.results import Check


def test_a_closed_keepalive_connection_is_retried_once() -> None:
    calls = {"n": 0}

    def handler(request: httpx.Request) -> httpx.Response:
        calls["n"] += 1
        if calls["n"] == 1:
            raise httpx.RemoteProtocolError("Server disconnected without sending a response.", request=request)
        return httpx.Response(200, json={"ok": True})

    ex = exchange(httpx.Client(base_url="http://t", transport=httpx.MockTransport(handler)), "GET", "/v1/models")
    assert (ex.status, ex.data, calls["n"]) == (200, {"ok": True}, 2)


def test_a_server_that_keeps_dropping_is_a_probe_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.RemoteProtocolError("gone", request=request)

    with pytest.raises(ProbeError, match="GET /v1/models: RemoteProtocolError: gone"):
        exchange(httpx.Client(base_url="http://t", transport=httpx.MockTransport(handler)), "GET", "/v1/models")


def test_non_json_answers_are_kept_as_text() -> None:
    client = httpx.Client(
        base_url="http://t", transport=httpx.MockTransport(lambda r: httpx.Response(500, text="boom"))
    )
    ex = exchange(client, "POST", "/v1/completions", raw="{bad")
    assert (ex.status, ex.data, ex.is_json, ex.request["body"]) == (500, "boom", False, "{bad")


def test_blocking_rule() -> None:
    req = ("conformance", "agreement")
    assert Check(group="conformance", name="c", passed=False).blocking(req)
    assert not Check(group="conformance", name="c", passed=False, waived="known").blocking(req)
    assert not Check(group="conformance", name="c", passed=None).blocking(req)
    assert not Check(group="accuracy", name="c", passed=False).blocking(req)
