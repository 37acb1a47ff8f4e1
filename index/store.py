"""SQLite metadata store: one row per indexed article, keyed by the integer PMID.

The PMID doubles as the FAISS vector id, so a hit maps back to its row without any side table.
``text_hash`` lets a re-ingested record skip embedding when its text did not change, and
``embedded = 0`` marks rows whose vector still has to be (re)computed.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator
from pathlib import Path

from ingest.records import Article, Section

_SCHEMA = """
CREATE TABLE IF NOT EXISTS articles (
    pmid INTEGER PRIMARY KEY,
    version INTEGER NOT NULL,
    title TEXT NOT NULL,
    sections TEXT NOT NULL,
    journal TEXT NOT NULL,
    year INTEGER,
    authors TEXT NOT NULL,
    publication_types TEXT NOT NULL,
    mesh TEXT NOT NULL,
    doi TEXT NOT NULL,
    text_hash TEXT NOT NULL,
    embedded INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS articles_pending ON articles(embedded) WHERE embedded = 0;
"""


class MetadataStore:
    def __init__(self, path: Path, *, read_only: bool = False) -> None:
        uri = f"file:{path}?mode=ro" if read_only else f"file:{path}"
        self.db = sqlite3.connect(uri, uri=True, check_same_thread=False)
        if not read_only:
            self.db.executescript(_SCHEMA)

    def close(self) -> None:
        self.db.close()

    def count(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM articles").fetchone()[0]

    def state(self, pmid: str) -> tuple[str, bool] | None:
        """(text_hash, embedded) of a stored PMID, or None."""
        row = self.db.execute("SELECT text_hash, embedded FROM articles WHERE pmid = ?", (int(pmid),)).fetchone()
        return (row[0], bool(row[1])) if row else None

    def upsert(self, article: Article, *, embedded: bool) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO articles VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                int(article.pmid),
                article.version,
                article.title,
                json.dumps([[s.label, s.text] for s in article.sections]),
                article.journal,
                article.year,
                json.dumps(article.authors),
                json.dumps(article.publication_types),
                json.dumps(article.mesh),
                article.doi,
                article.text_hash,
                int(embedded),
            ),
        )

    def delete(self, pmid: str) -> bool:
        return self.db.execute("DELETE FROM articles WHERE pmid = ?", (int(pmid),)).rowcount > 0

    def pending(self) -> list[int]:
        """PMIDs whose vectors must be computed."""
        return [r[0] for r in self.db.execute("SELECT pmid FROM articles WHERE embedded = 0 ORDER BY pmid")]

    def mark_embedded(self, pmids: Iterable[int]) -> None:
        self.db.executemany("UPDATE articles SET embedded = 1 WHERE pmid = ?", ((p,) for p in pmids))

    def get(self, pmids: Iterable[int | str]) -> dict[str, Article]:
        ids = [int(p) for p in pmids]
        rows: dict[str, Article] = {}
        for start in range(0, len(ids), 500):  # stay under SQLite's bound-parameter limit
            chunk = ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for row in self.db.execute(f"SELECT * FROM articles WHERE pmid IN ({marks})", chunk):
                article = _article(row)
                rows[article.pmid] = article
        return rows

    def iter_articles(self) -> Iterator[Article]:
        for row in self.db.execute("SELECT * FROM articles ORDER BY pmid"):
            yield _article(row)

    def commit(self) -> None:
        self.db.commit()


def _article(row: tuple) -> Article:
    pmid, version, title, sections, journal, year, authors, types, mesh, doi, _hash, _embedded = row
    return Article(
        pmid=str(pmid),
        title=title,
        sections=tuple(Section(label, text) for label, text in json.loads(sections)),
        journal=journal,
        year=year,
        authors=tuple(json.loads(authors)),
        publication_types=tuple(json.loads(types)),
        mesh=tuple(json.loads(mesh)),
        doi=doi,
        version=version,
    )
