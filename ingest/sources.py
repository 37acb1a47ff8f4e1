"""Turn what the user typed (files, folders, globs) into readable sources, checked up front.

Checking every source before anything is written means a typo fails fast with a clear
message instead of half-way through a long ingest. The format is chosen by file name, except
``.txt``, which is read as MEDLINE text only when it starts like one (a PubMed export does).
"""

from __future__ import annotations

import glob
from collections.abc import Callable, Iterator
from pathlib import Path

from ingest.csv_table import read_csv
from ingest.jsonl import read_jsonl
from ingest.medline import looks_like_medline, read_medline
from ingest.pubmed_xml import read_pubmed_xml
from ingest.records import Event, SourceError

_SUFFIXES = {
    "xml": (".xml", ".xml.gz"),
    "jsonl": (".jsonl", ".jsonl.gz", ".ndjson"),
    "medline": (".nbib", ".medline", ".nbib.gz", ".medline.gz"),
    "csv": (".csv", ".tsv", ".csv.gz", ".tsv.gz"),
}
_READERS: dict[str, Callable[[Path], Iterator[Event]]] = {
    "xml": read_pubmed_xml,
    "jsonl": read_jsonl,
    "medline": read_medline,
    "csv": read_csv,
}
SUPPORTED = (*(s for suffixes in _SUFFIXES.values() for s in suffixes), ".txt (MEDLINE)")


def expand_sources(specs: list[str]) -> list[Path]:
    """Files, folders (their supported files, sorted) and glob patterns, in the order given."""
    paths: list[Path] = []
    for spec in specs:
        matches = sorted(glob.glob(spec)) if glob.has_magic(spec) else [spec]
        if not matches:
            raise SourceError(spec, "no file matches this pattern")
        for match in map(Path, matches):
            if match.is_dir():
                found = sorted(p for p in match.rglob("*") if p.is_file() and kind(p))
                if not found:
                    raise SourceError(str(match), "folder holds no supported file", _supported_hint())
                paths.extend(found)
            else:
                paths.append(_check_file(match))
    return paths


def read_source(path: Path) -> Iterator[Event]:
    """The events of one source file, by its format."""
    reader = _READERS.get(kind(path))
    if reader is None:
        raise SourceError(str(path), "unsupported file type", _supported_hint())
    return reader(path)


def kind(path: Path) -> str:
    """``xml``, ``jsonl``, ``medline`` or ``csv``; empty for a file no reader takes."""
    name = path.name.lower()
    for format_, suffixes in _SUFFIXES.items():
        if name.endswith(suffixes):
            return format_
    return "medline" if name.endswith(".txt") and looks_like_medline(path) else ""


def _check_file(path: Path) -> Path:
    if not path.exists():
        raise SourceError(str(path), "no such file", "check the path")
    if not path.is_file():
        raise SourceError(str(path), "not a regular file")
    if not kind(path):
        raise SourceError(str(path), "unsupported file type", _supported_hint())
    return path


def _supported_hint() -> str:
    return "supported: " + ", ".join(SUPPORTED)
