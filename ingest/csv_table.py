"""CSV / TSV reader: one citation per row, columns named in a header row.

Columns (header names are case-insensitive; order does not matter):

=====================  =========  ==================================================================
column                 required   value
=====================  =========  ==================================================================
``pmid``               yes        the PubMed id (digits)
``title``              yes        article title
``abstract``           no         abstract text; a row without one is counted but not indexed
``year``               no         publication year (the first four digits are used)
``journal``            no         journal name (PubMed's own CSV export calls it ``Journal/Book``)
``authors``            no         ``;``-separated (or PubMed's ``Smith J, Doe A.``)
``mesh``               no         ``;``-separated MeSH descriptors
``publication_types``  no         ``;``-separated
``doi``                no         DOI without the ``https://doi.org/`` prefix
=====================  =========  ==================================================================

``.tsv`` files are tab-separated; ``.csv`` files use commas with standard CSV quoting. A row
that lacks a numeric PMID or a title is skipped with its line number; a file without a ``pmid``
and ``title`` header is a ``SourceError``.
"""

from __future__ import annotations

import csv
import gzip
import sys
from collections.abc import Iterator
from pathlib import Path

from ingest.records import Article, Event, Section, Skipped, SourceError

COLUMNS = ("pmid", "title", "abstract", "year", "journal", "authors", "mesh", "publication_types", "doi")
_ALIASES = {"journal/book": "journal", "publication year": "year", "publication type": "publication_types"}


def read_csv(path: Path) -> Iterator[Event]:
    """Yield one event per data row of ``path`` (``.csv``, ``.tsv``, optionally ``.gz``)."""
    name = str(path)
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    delimiter = "\t" if ".tsv" in path.name.lower() else ","
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # long abstracts exceed the 128 KiB default
    try:
        with opener(path, "rt", encoding="utf-8-sig", newline="") as handle:
            rows = csv.reader(handle, delimiter=delimiter)
            header = _header(next(rows, []), name)
            start = rows.line_num + 1
            for row in rows:
                if any(cell.strip() for cell in row):
                    yield _event(dict(zip(header, row, strict=False)), f"{name}:{start}")
                start = rows.line_num + 1  # a quoted field may span lines: report where the row began
    except (OSError, EOFError, UnicodeDecodeError, csv.Error) as exc:
        raise SourceError(name, f"cannot be read: {exc}", "expected UTF-8 CSV") from exc


def _header(cells: list[str], name: str) -> list[str]:
    header = [_ALIASES.get(c.strip().lower(), c.strip().lower().replace(" ", "_")) for c in cells]
    missing = [c for c in ("pmid", "title") if c not in header]
    if missing:
        raise SourceError(
            name,
            f"header has no {' or '.join(missing)} column",
            "the first row must name the columns: " + ",".join(COLUMNS),
        )
    return header


def _event(row: dict[str, str], where: str) -> Event:
    pmid = row.get("pmid", "").strip()
    if not pmid.isdigit():
        return Skipped(where, pmid or "?", "missing or non-numeric pmid")
    title = " ".join(row.get("title", "").split())
    if not title:
        return Skipped(where, pmid, "missing title")
    abstract = " ".join(row.get("abstract", "").split())
    year = row.get("year", "").strip()[:4]
    return Article(
        pmid=pmid,
        title=title,
        sections=(Section("", abstract),) if abstract else (),
        journal=row.get("journal", "").strip(),
        year=int(year) if year.isdigit() else None,
        authors=_authors(row.get("authors", "")),
        publication_types=_list(row.get("publication_types", "")),
        mesh=_list(row.get("mesh", "")),
        doi=row.get("doi", "").strip(),
    )


def _list(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(";") if part.strip())


def _authors(value: str) -> tuple[str, ...]:
    """``A; B`` or PubMed's export style ``Smith J, Doe A.``"""
    if ";" in value:
        return _list(value)
    return tuple(part.strip().rstrip(".") for part in value.split(",") if part.strip().rstrip("."))
