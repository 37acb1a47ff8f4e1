"""SQLite metadata store: one row per indexed article, keyed by the integer PMID.

The PMID doubles as the FAISS vector id, so a hit maps back to its row without any side table.
``text_hash`` identifies the row's current text and ``indexed_hash`` the text whose vector is in
FAISS (NULL: none yet). A row needs embedding exactly when the two differ, so a record that
changes and changes back within one run is not embedded again.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator
from pathlib import Path

from ingest.records import Article, Section

ARTICLES_TABLE = """
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
    indexed_hash TEXT
);
"""
_SCHEMA = ARTICLES_TABLE + "CREATE TEMP TABLE IF NOT EXISTS touched (pmid INTEGER PRIMARY KEY, prior_hash TEXT);\n"


class MetadataStore:
    table = "articles"  # where rows are written (index/meta_segments.py: the new segment's own table)

    def __init__(self, path: Path, *, read_only: bool = False) -> None:
        uri = Path(path).resolve().as_uri() + ("?mode=ro" if read_only else "")  # as_uri escapes '#', '?'
        self.db = sqlite3.connect(uri, uri=True, check_same_thread=False)
        if not read_only:
            self.db.executescript(_SCHEMA)

    def close(self) -> None:
        self.db.close()

    def count(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM articles").fetchone()[0]

    def state(self, pmid: str) -> tuple[str, str | None] | None:
        """(text_hash, indexed_hash) of a stored PMID, or None."""
        row = self.db.execute("SELECT text_hash, indexed_hash FROM articles WHERE pmid = ?", (int(pmid),)).fetchone()
        return (row[0], row[1]) if row else None

    def upsert(self, article: Article, *, indexed_hash: str | None) -> None:
        self.db.execute(
            f"INSERT OR REPLACE INTO {self.table} VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
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
                indexed_hash,
            ),
        )

    def touch(self, pmid: str) -> None:
        """Remember a PMID's text before this run first changed it (temporary, never committed)."""
        self.db.execute(
            "INSERT OR IGNORE INTO touched SELECT ?, (SELECT text_hash FROM articles WHERE pmid = ?)",
            (int(pmid), int(pmid)),
        )

    def changes(self) -> dict[str, int]:
        """Net effect of this run per PMID: added, replaced, unchanged, deleted."""
        row = self.db.execute(
            """SELECT
                 COUNT(*) FILTER (WHERE t.prior_hash IS NULL AND a.pmid IS NOT NULL),
                 COUNT(*) FILTER (WHERE t.prior_hash IS NOT NULL AND a.text_hash != t.prior_hash),
                 COUNT(*) FILTER (WHERE t.prior_hash IS NOT NULL AND a.text_hash = t.prior_hash),
                 COUNT(*) FILTER (WHERE t.prior_hash IS NOT NULL AND a.pmid IS NULL)
               FROM touched t LEFT JOIN articles a ON a.pmid = t.pmid"""
        ).fetchone()
        return dict(zip(("added", "replaced", "unchanged", "deleted"), row, strict=True))

    def delete(self, pmid: str) -> bool:
        return self.db.execute(f"DELETE FROM {self.table} WHERE pmid = ?", (int(pmid),)).rowcount > 0

    def pending(self) -> list[tuple[int, bool]]:
        """(PMID, has an outdated vector) for every row whose vector must be (re)computed."""
        rows = self.db.execute(
            f"SELECT pmid, indexed_hash IS NOT NULL FROM {self.table} "
            "WHERE indexed_hash IS NULL OR indexed_hash != text_hash ORDER BY pmid"
        )
        return [(pmid, bool(outdated)) for pmid, outdated in rows]

    def pending_hashes(self) -> list[tuple[int, str, bool]]:
        """(PMID, text hash, has an outdated vector) for every row to (re)embed, in PMID order."""
        rows = self.db.execute(
            f"SELECT pmid, text_hash, indexed_hash IS NOT NULL FROM {self.table} "
            "WHERE indexed_hash IS NULL OR indexed_hash != text_hash ORDER BY pmid"
        )
        return [(pmid, text_hash, bool(outdated)) for pmid, text_hash, outdated in rows]

    def indexed_hashes(self) -> set[str]:
        """The hashes of every text that has its vector in FAISS (a distributed ingest skips them)."""
        rows = self.db.execute("SELECT DISTINCT indexed_hash FROM articles WHERE indexed_hash IS NOT NULL")
        return {text_hash for (text_hash,) in rows}

    def mark_indexed(self, pmids: Iterable[int]) -> None:
        self.db.executemany(f"UPDATE {self.table} SET indexed_hash = text_hash WHERE pmid = ?", ((p,) for p in pmids))

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
    pmid, version, title, sections, journal, year, authors, types, mesh, doi, _hash, _indexed_hash = row
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
