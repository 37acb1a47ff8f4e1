"""Search filters: publication year range, publication type, journal, MeSH term.

A filter is applied *before* ranking, not to the top-k afterwards: the metadata store (SQLite)
yields the PMIDs that pass, the vector search only considers those (a FAISS ``IDSelector``) and
BM25 zeroes the others, so a narrow filter still returns k hits when k articles pass it.

Semantics, the same in Python (``Filters.matches``) and SQL (``Filters.where``): facets combine
with AND; the values within one facet with OR. Years are inclusive, and an article without a
year fails any year bound. Publication types and MeSH descriptors match whole names,
case-insensitively ("randomized controlled trial", "asthma"), and a type also matches its
comma-qualified forms ("Clinical Trial" matches "Clinical Trial, Phase III"); ``exclude_types``
removes articles of any listed type (e.g. "Retracted Publication"); a journal matches when the given
text occurs in its name, case-insensitively ("lancet" matches "Lancet (London, England)").
Deliberately not handled: MeSH tree expansion (a descriptor does not match its narrower terms),
qualifiers, boolean expressions.
"""

from __future__ import annotations

import argparse
import sqlite3
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from ingest.records import Article


@dataclass(frozen=True)
class Filters:
    year_from: int | None = None  # earliest publication year, inclusive
    year_to: int | None = None  # latest publication year, inclusive
    publication_types: tuple[str, ...] = ()  # e.g. ("Randomized Controlled Trial", "Meta-Analysis")
    journals: tuple[str, ...] = ()  # parts of journal names
    mesh: tuple[str, ...] = ()  # MeSH descriptor names, e.g. ("Asthma",)
    exclude_types: tuple[str, ...] = ()  # publication types to leave out, e.g. ("Retracted Publication",)

    def __post_init__(self) -> None:
        for name in ("publication_types", "journals", "mesh", "exclude_types"):  # a string is one value, not letters
            value = getattr(self, name)
            values = (value,) if isinstance(value, str) else tuple(value or ())
            object.__setattr__(self, name, tuple(v.strip() for v in values if v and v.strip()))
        if self.year_from is not None and self.year_to is not None and self.year_from > self.year_to:
            raise ValueError(f"year range {self.year_from}-{self.year_to} is empty")

    def __bool__(self) -> bool:
        """True when anything is restricted."""
        return any(v not in (None, ()) for v in asdict(self).values())

    def matches(self, article: Article) -> bool:
        if self.year_from is not None and (article.year is None or article.year < self.year_from):
            return False
        if self.year_to is not None and (article.year is None or article.year > self.year_to):
            return False
        if self.publication_types and not _any_type(self.publication_types, article.publication_types):
            return False
        if self.exclude_types and _any_type(self.exclude_types, article.publication_types):
            return False
        if self.mesh and not _any_equal(self.mesh, article.mesh):
            return False
        journal = article.journal.lower()
        return not self.journals or any(j.lower() in journal for j in self.journals)

    def where(self) -> tuple[str, list[object]]:
        """An SQL condition on the ``articles`` table of ``index/store.py`` and its parameters."""
        clauses: list[str] = []
        params: list[object] = []
        if self.year_from is not None:
            clauses.append("year >= ?")
            params.append(self.year_from)
        if self.year_to is not None:
            clauses.append("year <= ?")
            params.append(self.year_to)
        for negate, values in ((False, self.publication_types), (True, self.exclude_types)):
            if values:
                tests = " OR ".join("lower(value) = ? OR lower(value) LIKE ? ESCAPE '\\'" for _ in values)
                exists = f"EXISTS (SELECT 1 FROM json_each(publication_types) WHERE {tests})"
                clauses.append(f"NOT {exists}" if negate else exists)
                params.extend(p for v in values for p in (v.lower(), _like_prefix(v.lower()) + ", %"))
        if self.mesh:
            marks = ",".join("?" * len(self.mesh))
            clauses.append(f"EXISTS (SELECT 1 FROM json_each(mesh) WHERE lower(value) IN ({marks}))")
            params.extend(v.lower() for v in self.mesh)
        if self.journals:
            clauses.append("(" + " OR ".join("instr(lower(journal), ?) > 0" for _ in self.journals) + ")")
            params.extend(j.lower() for j in self.journals)
        return " AND ".join(clauses) or "1", params

    def allowed_pmids(self, db: sqlite3.Connection) -> np.ndarray:
        """The PMIDs (ascending int64) of the stored articles that pass."""
        condition, params = self.where()
        rows = db.execute(f"SELECT pmid FROM articles WHERE {condition} ORDER BY pmid", params)
        return np.fromiter((pmid for (pmid,) in rows), dtype=np.int64)

    def as_dict(self) -> dict[str, object]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items() if v not in (None, ())}


def _any_type(wanted: Sequence[str], present: Sequence[str]) -> bool:
    """A wanted type matches a present one exactly or as its "Type, qualifier" form."""
    have = {p.lower() for p in present} | {p.split(",")[0].lower() for p in present}
    return any(w.lower() in have for w in wanted)


def _like_prefix(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _any_equal(wanted: Sequence[str], present: Sequence[str]) -> bool:
    have = {p.lower() for p in present}
    return any(w.lower() in have for w in wanted)


def add_filter_flags(parser: argparse.ArgumentParser) -> None:
    """``--year-from``, ``--year-to`` and the repeatable ``--publication-type``, ``--exclude-type``,
    ``--journal`` and ``--mesh``."""
    group = parser.add_argument_group("filters (facets combine with AND, repeated values with OR)")
    group.add_argument("--year-from", type=int, default=None, help="earliest publication year (inclusive)")
    group.add_argument("--year-to", type=int, default=None, help="latest publication year (inclusive)")
    group.add_argument(
        "--publication-type", action="append", default=[], help='e.g. "Randomized Controlled Trial" (repeatable)'
    )
    group.add_argument("--exclude-type", action="append", default=[], help='e.g. "Retracted Publication" (repeatable)')
    group.add_argument("--journal", action="append", default=[], help="part of a journal name (repeatable)")
    group.add_argument("--mesh", action="append", default=[], help='MeSH descriptor, e.g. "Asthma" (repeatable)')


def filters_from_args(args: argparse.Namespace) -> Filters:
    return Filters(
        year_from=args.year_from,
        year_to=args.year_to,
        publication_types=tuple(args.publication_type),
        journals=tuple(args.journal),
        mesh=tuple(args.mesh),
        exclude_types=tuple(args.exclude_type),
    )


def facets(db: sqlite3.Connection, *, top: int = 50) -> dict[str, object]:
    """What a filter UI can offer: the year range and the most frequent publication types,
    journals and MeSH descriptors, each as (value, articles) pairs, most frequent first."""
    low, high = db.execute("SELECT MIN(year), MAX(year) FROM articles").fetchone()

    def counts(column: str) -> list[tuple[str, int]]:
        rows = db.execute(
            f"SELECT value, COUNT(*) AS n FROM articles, json_each(articles.{column}) "
            "GROUP BY value ORDER BY n DESC, value LIMIT ?",
            (top,),
        )
        return [(value, n) for value, n in rows]

    journals = db.execute(
        "SELECT journal, COUNT(*) AS n FROM articles WHERE journal != '' GROUP BY journal ORDER BY n DESC, journal "
        "LIMIT ?",
        (top,),
    ).fetchall()
    return {
        "years": (low, high),
        "publication_types": counts("publication_types"),
        "journals": [(j, n) for j, n in journals],
        "mesh": counts("mesh"),
    }
