"""CSV / TSV reader: one citation per row, columns named in a header row.

Columns (header names are case-insensitive; order does not matter):

=====================  =========  ==================================================================
column                 required   value
=====================  =========  ==================================================================
``pmid``               yes        the PubMed id (digits)
``title``              yes        article title
``abstract``           no         abstract text; a row without one is counted but not indexed
``year``               no         publication year (``2021``, ``2021-03-15``: the leading four digits)
``journal``            no         journal name (PubMed's own CSV export calls it ``Journal/Book``)
``authors``            no         ``;``-separated (or PubMed's ``Smith J, Doe A.``)
``mesh``               no         ``;``-separated MeSH descriptors
``publication_types``  no         ``;``-separated
``doi``                no         DOI without the ``https://doi.org/`` prefix
=====================  =========  ==================================================================

``.tsv`` files are tab-separated; ``.csv`` files use commas with standard CSV quoting. A row
that lacks a PMID (1 to 8 ASCII digits) or a title, has a year that is not one, or breaks the
quoting (``"a"b``) is skipped with its line number; a file without a ``pmid`` and ``title``
header, or with a quoted field that is never closed, is a ``SourceError`` naming the line.
"""

from __future__ import annotations

import csv
import gzip
import sys
from collections.abc import Iterator
from pathlib import Path

from ingest.records import Article, BadValue, Event, Section, Skipped, SourceError, pmid_of, year_of

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
            rows = csv.reader(handle, delimiter=delimiter, strict=True)
            header = _header(next(rows, []), name)
            yield from _events(rows, header, name)
    except (OSError, EOFError, UnicodeDecodeError, csv.Error) as exc:
        raise SourceError(name, f"cannot be read: {exc}", "expected UTF-8 CSV") from exc


def _events(rows, header: list[str], name: str) -> Iterator[Event]:
    """One event per data row; a malformed row is skipped, a quote never closed fails the file.

    The reader is strict: without it, a quoted field that is never closed silently takes in every
    line after it, and a stray quote inside a field is dropped without a word."""
    start = rows.line_num + 1
    while True:
        try:
            row = next(rows)
        except StopIteration:
            return
        except csv.Error as exc:
            if "unexpected end of data" in str(exc):
                raise SourceError(
                    name,
                    f"line {start}: a quoted field opened in this row is never closed, so lines {start}-"
                    f"{rows.line_num} cannot be read as rows",
                    'close the quote; a quote inside a quoted field is written ""',
                ) from exc
            yield Skipped(f"{name}:{start}", "?", f"malformed CSV row: {exc}")
        else:
            if any(cell.strip() for cell in row):
                yield _event(dict(zip(header, row, strict=False)), f"{name}:{start}")
        start = rows.line_num + 1  # a quoted field may span lines: report where the row began


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
    raw = row.get("pmid", "").strip()
    if not raw:
        return Skipped(where, "?", "missing pmid")
    try:
        pmid, year = pmid_of(raw), year_of(row.get("year", ""))
    except BadValue as exc:
        return Skipped(where, raw[:40], str(exc))
    title = " ".join(row.get("title", "").split())
    if not title:
        return Skipped(where, pmid, "missing title")
    abstract = " ".join(row.get("abstract", "").split())
    return Article(
        pmid=pmid,
        title=title,
        sections=(Section("", abstract),) if abstract else (),
        journal=row.get("journal", "").strip(),
        year=year,
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
