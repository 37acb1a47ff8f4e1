"""A small HTTP client for NCBI: a request-rate limit, retries with backoff, atomic downloads.

NCBI allows 3 requests per second without an API key and 10 with one, and answers 429 when a
client goes faster; busy servers answer 5xx. Both are retried with exponential backoff (or after
the server's ``Retry-After``); any other HTTP error is final and becomes a ``SourceError`` naming
the URL. Downloads go to ``NAME.part`` and are renamed into place only when complete, so a file
under its real name is always whole. Standard library only (``urllib``): nothing to install.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from email.message import Message
from pathlib import Path

from ingest.records import SourceError

log = logging.getLogger(__name__)

RETRY_STATUS = (429, 500, 502, 503, 504)
USER_AGENT = "pubmed-rag/0.1 (retrieval-augmented QA over PubMed abstracts)"


class HttpClient:
    def __init__(
        self, *, rate: float, retries: int = 5, backoff_s: float = 1.0, timeout_s: float = 60.0, max_wait_s: float = 60
    ) -> None:
        self.min_interval = 1.0 / rate  # seconds between the starts of two requests
        self.retries, self.backoff_s, self.timeout_s, self.max_wait_s = retries, backoff_s, timeout_s, max_wait_s
        self.requests = 0  # requests sent, retries included
        self._lock = threading.Lock()
        self._last = 0.0

    def get(self, url: str, params: dict[str, object] | None = None) -> bytes:
        """The body of ``url`` (with ``params`` as query string)."""
        with self._open(url, params) as response:
            return response.read()

    def download(self, url: str, target: Path) -> Path:
        """Stream ``url`` to ``target`` (via ``target.part``, renamed when complete)."""
        target.parent.mkdir(parents=True, exist_ok=True)
        part = target.with_name(target.name + ".part")
        with self._open(url, None) as response, open(part, "wb") as out:
            shutil.copyfileobj(response, out, length=1 << 20)
        part.replace(target)
        return target

    def _open(self, url: str, params: dict[str, object] | None):
        full = url + ("?" + urllib.parse.urlencode(params) if params else "")
        for attempt in range(self.retries + 1):
            self._wait_turn()
            try:
                request = urllib.request.Request(full, headers={"User-Agent": USER_AGENT})
                return urllib.request.urlopen(request, timeout=self.timeout_s)
            except urllib.error.HTTPError as exc:
                if exc.code not in RETRY_STATUS or attempt == self.retries:
                    raise SourceError(_redact(full), f"HTTP {exc.code} {exc.reason}", _hint(exc.code)) from exc
                delay = self._delay(attempt, exc.headers)
                log.warning("HTTP %s from %s; retrying in %.1f s", exc.code, _redact(url), delay)
            except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
                if attempt == self.retries or _refused(exc):
                    raise SourceError(_redact(full), f"cannot connect: {exc}", "check the network and URL") from exc
                delay = self._delay(attempt, None)
                log.warning("Cannot reach %s (%s); retrying in %.1f s", _redact(url), exc, delay)
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


def _refused(exc: Exception) -> bool:
    """Nothing listens at that address: a wrong URL, not a hiccup worth retrying."""
    return isinstance(getattr(exc, "reason", exc), ConnectionRefusedError)


def _redact(url: str) -> str:
    """The URL without the API key, for messages and logs."""
    parts = urllib.parse.urlsplit(url)
    query = [(k, "***" if k == "api_key" else v) for k, v in urllib.parse.parse_qsl(parts.query)]
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query, safe="*")))


def _hint(code: int) -> str:
    if code in RETRY_STATUS:
        return "NCBI is busy or rate-limiting; try again later, or set NCBI_API_KEY for a higher limit"
    return "check the query and the base URL" if code in (400, 404) else ""
