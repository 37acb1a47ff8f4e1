"""A small HTTP client for NCBI: a request-rate limit, retries with backoff, atomic downloads.

NCBI allows 3 requests per second without an API key and 10 with one, and answers 429 when a
client goes faster; busy servers answer 5xx. Both are retried with exponential backoff (or after
the server's ``Retry-After``); any other HTTP error is final and becomes a ``SourceError`` naming
the URL. A request is one unit, body included: a server that stalls or drops the connection
mid-body is retried like one that never answered. Failing fast when nothing answers: a host name
that does not resolve or a refused connection fails at once; a server silent for ``TIMEOUT_S``
(30 s) gets ``SILENT_RETRIES`` (1) more try, so it fails in about a minute, saying so. Downloads
go to ``NAME.part`` and are renamed into place only when complete, so a file under its real name
is always whole. Standard library only (``urllib``): nothing to install.
"""

from __future__ import annotations

import http.client
import logging
import shutil
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from email.message import Message
from pathlib import Path
from typing import TypeVar

from ingest.records import SourceError

log = logging.getLogger(__name__)

RETRY_STATUS = (429, 500, 502, 503, 504)
TIMEOUT_S = 30.0  # without a byte from the server for this long, a request has failed
SILENT_RETRIES = 1  # more tries after such a timeout (then the run fails: 61 s in all, not minutes)
_NETWORK_HINT = "check the network and the URL"
T = TypeVar("T")
USER_AGENT = "pubmed-rag/0.1 (retrieval-augmented QA over PubMed abstracts)"


class HttpClient:
    def __init__(
        self,
        *,
        rate: float,
        retries: int = 5,
        backoff_s: float = 1.0,
        timeout_s: float = TIMEOUT_S,
        max_wait_s: float = 60,
        silent_retries: int = SILENT_RETRIES,
    ) -> None:
        self.min_interval = 1.0 / rate  # seconds between the starts of two requests
        self.retries, self.backoff_s, self.timeout_s, self.max_wait_s = retries, backoff_s, timeout_s, max_wait_s
        self.silent_retries = silent_retries  # of a request that got no answer within timeout_s
        self.requests = 0  # requests sent, retries included
        self._lock = threading.Lock()
        self._last = 0.0

    def get(self, url: str, params: dict[str, object] | None = None) -> bytes:
        """The body of ``url`` (with ``params`` as query string)."""
        return self._request(url, params, lambda response: response.read())

    def download(self, url: str, target: Path) -> Path:
        """Stream ``url`` to ``target`` (via ``target.part``, renamed when complete)."""
        target.parent.mkdir(parents=True, exist_ok=True)
        part = target.with_name(target.name + ".part")

        def save(response) -> None:
            with open(part, "wb") as out:
                shutil.copyfileobj(response, out, length=1 << 20)

        self._request(url, None, save)
        part.replace(target)
        return target

    def _request(self, url: str, params: dict[str, object] | None, consume: Callable[[object], T]) -> T:
        """``consume(response)``, the body read included, retried as a whole on a transient failure."""
        full = url + ("?" + urllib.parse.urlencode(params) if params else "")
        silent = 0  # attempts that got no answer in time
        for attempt in range(self.retries + 1):
            self._wait_turn()
            try:
                request = urllib.request.Request(full, headers={"User-Agent": USER_AGENT})
                with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                    return consume(response)
            except urllib.error.HTTPError as exc:
                if exc.code not in RETRY_STATUS or attempt == self.retries:
                    raise SourceError(_redact(full), f"HTTP {exc.code} {exc.reason}", _hint(exc.code)) from exc
                delay = self._delay(attempt, exc.headers)
                log.warning("HTTP %s from %s; retrying in %.1f s", exc.code, _redact(url), delay)
            except (urllib.error.URLError, TimeoutError, ConnectionError, http.client.HTTPException) as exc:
                silent += _timed_out(exc)
                final = _final(exc, silent > self.silent_retries, self.timeout_s)
                if final or attempt == self.retries:
                    raise SourceError(_redact(full), final or f"cannot connect: {exc}", _NETWORK_HINT) from exc
                delay = self._delay(attempt, None)
                log.warning("No answer from %s (%s); retrying in %.1f s", _redact(url), _reason(exc), delay)
            time.sleep(delay)
        raise AssertionError("unreachable")

    def _wait_turn(self) -> None:
        with self._lock:
            wait = self._last + self.min_interval - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            self._last = time.monotonic()
            self.requests += 1

    def _delay(self, attempt: int, headers: Message | None) -> float:
        retry_after = headers.get("Retry-After", "") if headers is not None else ""
        if retry_after.strip().isdigit():
            return min(float(retry_after), self.max_wait_s)
        return min(self.backoff_s * 2**attempt, self.max_wait_s)


def _reason(exc: BaseException) -> BaseException:
    """What went wrong under urllib's ``URLError`` wrapper."""
    return exc.reason if isinstance(exc, urllib.error.URLError) and isinstance(exc.reason, BaseException) else exc


def _timed_out(exc: BaseException) -> bool:
    return isinstance(_reason(exc), TimeoutError)


def _final(exc: BaseException, too_many_timeouts: bool, timeout_s: float) -> str:
    """Why retrying is pointless (a message for the user), or "" for a hiccup worth another try.

    A host name that does not resolve and a port where nothing listens are a wrong URL or no network,
    not hiccups; a server that let ``TIMEOUT_S`` pass without a byte gets ``SILENT_RETRIES`` more tries."""
    reason = _reason(exc)
    if isinstance(reason, socket.gaierror):
        return f"cannot resolve the host name ({reason.strerror or reason}): no network, or a wrong URL"
    if isinstance(reason, ConnectionRefusedError):
        return f"cannot connect: {exc}"
    if too_many_timeouts:
        return f"no answer within {timeout_s:g} s, twice or more: the server is down or cannot be reached"
    return ""


def _redact(url: str) -> str:
    """The URL without the API key, for messages and logs."""
    parts = urllib.parse.urlsplit(url)
    query = [(k, "***" if k == "api_key" else v) for k, v in urllib.parse.parse_qsl(parts.query)]
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query, safe="*")))


def _hint(code: int) -> str:
    if code in RETRY_STATUS:
        return "NCBI is busy or rate-limiting; try again later, or set NCBI_API_KEY for a higher limit"
    return "check the query and the base URL" if code in (400, 404) else ""
