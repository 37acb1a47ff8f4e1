"""The NCBI HTTP client against a local server: retries with backoff on 429/5xx, no retry on other
errors, errors that name the URL (never the API key), and the request-rate limit."""

from __future__ import annotations

import pytest

from ingest import SourceError
from ingest.http import HttpClient
from tests.local_server import Server, fast_client, local_server  # noqa: F401 (the server fixture)


def test_retries_429_and_5xx_with_backoff_then_succeeds(server):
    answers = iter(
        [(429, b"slow down", {"Retry-After": "0"}), (503, b"busy", {}), (500, b"oops", {}), (200, b"ok", {})]
    )
    server.routes["/x"] = lambda p: next(answers)
    client = fast_client()
    assert client.get(server.url + "x") == b"ok"
    assert len(server.paths("/x")) == 4 and client.requests == 4
    times = [t for t, path, _ in server.requests]
    assert times[2] - times[1] >= 0.01 and times[3] - times[2] >= 0.02  # exponential backoff


def test_gives_up_after_retries_with_an_error_naming_the_url_without_the_key(server):
    server.routes["/x"] = lambda p: (503, b"busy", {})
    with pytest.raises(SourceError, match="HTTP 503") as info:
        fast_client().get(server.url + "x", {"term": "a", "api_key": "SECRET"})
    assert "SECRET" not in str(info.value) and "/x?" in str(info.value)
    assert len(server.paths("/x")) == 4


def test_client_errors_are_not_retried(server):
    server.routes["/x"] = lambda p: (400, b"bad request", {})
    with pytest.raises(SourceError, match="HTTP 400"):
        fast_client().get(server.url + "x")
    assert len(server.paths("/x")) == 1


def test_unreachable_server_is_a_source_error():
    client = HttpClient(rate=1000, retries=1, backoff_s=0.01, timeout_s=2)
    with pytest.raises(SourceError, match="cannot connect"):
        client.get("http://127.0.0.1:9/nothing")  # the discard port: nothing listens


@pytest.mark.parametrize("rate", [3.0, 10.0])
def test_requests_per_second_stay_under_the_rate(server, rate):
    server.routes["/x"] = lambda p: (200, b"ok", {})
    client = HttpClient(rate=rate, retries=0)
    for _ in range(4):
        client.get(server.url + "x")
    times = [t for t, _, _ in server.requests]
    assert times[-1] - times[0] >= 3 / rate * 0.95  # 4 requests: at least 3 intervals
