"""A local HTTP server on 127.0.0.1 for network tests: routes answer with fixture responses and
every request is recorded (path, query parameters, time), so tests can check what a client sent."""

from __future__ import annotations

import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from ingest.http import HttpClient

Answer = tuple[int, bytes, dict[str, str]]  # status, body, headers


class Server:
    """Routes a path to a function of the query parameters; records every request."""

    def __init__(self) -> None:
        self.routes: dict[str, Callable[[dict[str, str]], Answer]] = {}
        self.requests: list[tuple[float, str, dict[str, str]]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                parts = urllib.parse.urlsplit(self.path)
                params = dict(urllib.parse.parse_qsl(parts.query))
                server.requests.append((time.monotonic(), parts.path, params))
                route = server.routes.get(parts.path)
                status, body, headers = route(params) if route else (404, b"not found", {})
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def paths(self, path: str) -> list[dict[str, str]]:
        return [params for _, p, params in self.requests if p == path]


@pytest.fixture(name="server")
def local_server() -> Iterator[Server]:
    """A started ``Server``, shut down after the test (import this into a test module to use it)."""
    server = Server()
    yield server
    server.httpd.shutdown()
    server.httpd.server_close()


def fast_client(rate: float = 1000.0) -> HttpClient:
    return HttpClient(rate=rate, retries=3, backoff_s=0.01, timeout_s=5)
