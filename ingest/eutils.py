"""``pubmed:QUERY`` sources: search PubMed with NCBI E-utilities and save the records as XML.

``esearch`` runs the query on NCBI's history server (``usehistory=y``) and returns a ``WebEnv``
and ``query_key``; ``efetch`` then pages through that result in batches (``retmode=xml``), each
saved as one PubMed XML file that the ordinary XML reader ingests. Every request carries
``tool`` and ``email`` and, when set, ``api_key``; the client keeps to NCBI's 3 requests/s
(10 with a key) and retries 429/5xx with backoff (``ingest/http.py``).

PubMed serves at most 10,000 records of one search. A larger result is split by publication
date (``datetype=pdat``, ``mindate``/``maxdate``): the date range is halved until each part is
under the limit, down to single days. Not handled: a single day with more than 10,000 records
(the first 10,000 are taken, with a warning).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

from config import Config
from ingest.http import HttpClient
from ingest.records import SourceError

log = logging.getLogger(__name__)

PREFIX = "pubmed:"
ESEARCH_LIMIT = 10_000  # PubMed returns no record past this position of one search
BATCH = 500  # records per efetch call (NCBI suggests at most a few hundred to 10,000)
TOOL = "pubmed-rag"
# Publication dates span from PubMed's oldest citations to ahead-of-print issues a little ahead.
FIRST_DAY, LAST_DAY = date(1700, 1, 1), date(date.today().year + 2, 12, 31)


@dataclass(frozen=True)
class Search:
    count: int
    webenv: str
    query_key: str
    span: tuple[date, date] | None  # publication-date range, None for the whole query


class EUtils:
    def __init__(self, config: Config, client: HttpClient | None = None, *, batch: int = BATCH) -> None:
        self.base = config.eutils_url.rstrip("/") + "/"
        self.api_key = config.ncbi_api_key
        self.email = config.ncbi_email
        self.client = client or HttpClient(rate=10.0 if self.api_key else 3.0)
        self.batch = batch

    def search(self, query: str, span: tuple[date, date] | None = None) -> Search:
        params: dict[str, object] = {"db": "pubmed", "term": query, "usehistory": "y", "retmax": 0, "retmode": "json"}
        if span is not None:
            params.update(datetype="pdat", mindate=_day(span[0]), maxdate=_day(span[1]))
        body = self.client.get(self.base + "esearch.fcgi", self._with_identity(params))
        try:
            result = json.loads(body)["esearchresult"]
            return Search(int(result["count"]), result["webenv"], result["querykey"], span)
        except (ValueError, KeyError, TypeError) as exc:
            problem = _error_text(body) or f"unexpected esearch answer ({exc})"
            raise SourceError(PREFIX + query, problem, "check the query syntax") from exc

    def searches(self, query: str) -> list[Search]:
        """Searches of at most ``ESEARCH_LIMIT`` records each that together cover the query."""
        whole = self.search(query)
        if whole.count <= ESEARCH_LIMIT:
            return [whole] if whole.count else []
        parts = self._split(query, (FIRST_DAY, LAST_DAY))
        found = sum(s.count for s in parts)
        if found != whole.count:
            log.warning(
                "%s%s: %d records by date, %d in all (records without a date are missed)",
                PREFIX,
                query,
                found,
                whole.count,
            )
        return parts

    def fetch(self, search: Search) -> Iterator[bytes]:
        """The PubMed XML of each batch of ``search``."""
        total = min(search.count, ESEARCH_LIMIT)
        for start in range(0, total, self.batch):
            params = {
                "db": "pubmed",
                "WebEnv": search.webenv,
                "query_key": search.query_key,
                "retstart": start,
                "retmax": min(self.batch, total - start),
                "retmode": "xml",
            }
            body = self.client.get(self.base + "efetch.fcgi", self._with_identity(params))
            if b"<PubmedArticleSet" not in body[:4096]:
                raise SourceError(f"efetch batch at {start}", _error_text(body) or "the answer is not PubMed XML")
            yield body

    def _split(self, query: str, span: tuple[date, date]) -> list[Search]:
        search = self.search(query, span)
        if search.count == 0:
            return []
        if search.count <= ESEARCH_LIMIT:
            return [search]
        first, last = span
        if first == last:
            log.warning(
                "%s%s: %d records on %s; only the first %d are fetched",
                PREFIX,
                query,
                search.count,
                first,
                ESEARCH_LIMIT,
            )
            return [search]
        middle = first + timedelta(days=(last - first).days // 2)
        return self._split(query, (first, middle)) + self._split(query, (middle + timedelta(days=1), last))

    def _with_identity(self, params: dict[str, object]) -> dict[str, object]:
        extra = {"tool": TOOL, "email": self.email, "api_key": self.api_key}
        return {**params, **{k: v for k, v in extra.items() if v}}


def download_query(query: str, config: Config, client: HttpClient | None = None, *, batch: int = BATCH) -> list[Path]:
    """Run ``query`` and save its records as numbered XML files; returns them in order."""
    folder = config.download_dir / "eutils" / query_folder(query)
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.xml"):
        old.unlink()  # a re-run reflects PubMed as it is now, not leftovers of an earlier answer
    eutils = EUtils(config, client, batch=batch)
    paths = []
    for search in eutils.searches(query):
        span = f"{_day(search.span[0])}-{_day(search.span[1])}".replace("/", "") if search.span else "all"
        for number, body in enumerate(eutils.fetch(search)):
            path = folder / f"{span}-{number:05d}.xml"
            part = path.with_name(path.name + ".part")
            part.write_bytes(body)
            part.replace(path)
            paths.append(path)
    log.info("%s%s: %d batch files in %s", PREFIX, query, len(paths), folder)
    return paths


def query_folder(query: str) -> str:
    """A readable, unique folder name for a query."""
    slug = re.sub(r"[^a-z0-9]+", "-", query.lower()).strip("-")[:40] or "query"
    return f"{slug}-{hashlib.sha256(query.encode()).hexdigest()[:8]}"


def _day(day: date) -> str:
    return day.strftime("%Y/%m/%d")


def _error_text(body: bytes) -> str:
    """NCBI's own error message in a JSON or XML answer, if there is one."""
    text = body[:2000].decode("utf-8", "replace")
    match = re.search(r'"error"\s*:\s*"([^"]+)"|<ERROR>([^<]+)</ERROR>', text)
    return next(filter(None, match.groups()), "") if match else ""
