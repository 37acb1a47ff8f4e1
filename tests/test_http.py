"""The NCBI HTTP client against a local server: retries with backoff on 429/5xx, no retry on other
errors, errors that name the URL (never the API key), the request-rate limit, and failing fast
(with a reason) when a server stalls, never answers, or its name does not resolve."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

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


# --- failing fast when nothing answers (issue #14) -------------------------------------------------


class _Stalling(BaseHTTPRequestHandler):
    """Sends the headers and the first bytes of a body, then nothing (the first ``stalls`` times)."""

    stalls = 99
    served = 0

    def do_GET(self) -> None:
        type(self).served += 1
        body = b"<PubmedArticleSet>" + b" " * 1000 + b"</PubmedArticleSet>"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if type(self).served <= self.stalls:
            self.wfile.write(body[:20])
            self.wfile.flush()
            time.sleep(3)
            return
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def stalling() -> Iterator[type[_Stalling]]:
    handler = type("Handler", (_Stalling,), {"served": 0})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    handler.url = f"http://127.0.0.1:{httpd.server_address[1]}/x"
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield handler
    httpd.shutdown()
    httpd.server_close()


def test_a_body_that_stalls_midway_is_retried_like_a_request(stalling):
    stalling.stalls = 1
    client = HttpClient(rate=1000, retries=3, backoff_s=0.01, timeout_s=0.5)
    assert client.get(stalling.url).endswith(b"</PubmedArticleSet>")
    assert stalling.served == 2


def test_a_download_that_stalls_midway_leaves_no_file_and_says_so(stalling, tmp_path):
    client = HttpClient(rate=1000, retries=5, backoff_s=0.01, timeout_s=0.5)
    target = tmp_path / "pubmed.xml.gz"
    with pytest.raises(SourceError, match=r"no answer within 0\.5 s") as info:
        client.download(stalling.url, target)
    assert stalling.url in str(info.value) and stalling.served == 2  # one more try, not five
    assert not target.exists()


def test_a_server_that_never_answers_fails_after_one_more_try():
    with socket.socket() as listener:  # accepts connections (the backlog) and never says a word
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/esearch.fcgi"
        client = HttpClient(rate=1000, retries=5, backoff_s=0.01, timeout_s=0.5)
        start = time.monotonic()
        with pytest.raises(SourceError, match=r"no answer within 0\.5 s") as info:
            client.get(url)
    assert time.monotonic() - start < 2.0 and client.requests == 2
    assert "esearch.fcgi" in str(info.value) and "server is down" in str(info.value)


def test_a_host_name_that_does_not_resolve_fails_at_once(monkeypatch):
    def no_dns(*args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    client = HttpClient(rate=1000, retries=5, backoff_s=1.0)
    start = time.monotonic()
    with pytest.raises(SourceError, match="cannot resolve the host name") as info:
        client.get("https://eutils.example.invalid/entrez/eutils/esearch.fcgi")
    assert client.requests == 1 and time.monotonic() - start < 5.0  # retrying would take 31 s
    assert "eutils.example.invalid" in str(info.value) and "network" in str(info.value)


def test_the_default_client_gives_a_silent_server_one_more_try_of_30_s():
    client = HttpClient(rate=3.0)
    assert (client.timeout_s, client.silent_retries) == (30.0, 1)
