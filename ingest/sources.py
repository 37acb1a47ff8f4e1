"""Turn what the user typed (files, folders, globs) into readable sources, checked up front.

Checking every source before anything is written means a typo fails fast with a clear
message instead of half-way through a long ingest. The format is chosen by file name, except
``.txt``, which is read as MEDLINE text only when it starts like one (a PubMed export does).
"""

from __future__ import annotations

import glob
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from ingest.csv_table import read_csv
from ingest.jsonl import read_jsonl
from ingest.medline import looks_like_medline, read_medline
from ingest.pubmed_xml import read_pubmed_xml
from ingest.records import Event, IngestFailed, IngestSummary, Skipped, SourceError

_SUFFIXES = {
    "xml": (".xml", ".xml.gz"),
    "jsonl": (".jsonl", ".jsonl.gz", ".ndjson"),
    "medline": (".nbib", ".medline", ".nbib.gz", ".medline.gz"),
    "csv": (".csv", ".tsv", ".csv.gz", ".tsv.gz"),
}
EventReader = Callable[[Path], Iterable[Event]]
_READERS: dict[str, Callable[[Path], Iterator[Event]]] = {
    "xml": read_pubmed_xml,
    "jsonl": read_jsonl,
    "medline": read_medline,
    "csv": read_csv,
}
SUPPORTED = (*(s for suffixes in _SUFFIXES.values() for s in suffixes), ".txt (MEDLINE)")


def expand_sources(specs: list[str], *, read: EventReader | None = None, strict: bool = False) -> list[Path]:
    """Files, folders (their supported files, sorted) and glob patterns, in the order given."""
    return [path for paths in expand_each(specs, read=read, strict=strict) for path in paths]


def expand_each(specs: list[str], *, read: EventReader | None = None, strict: bool = False) -> list[list[Path]]:
    """The files of each spec, in order. A path that exists is taken literally, even with ``[ ] * ?``.

    Every spec is checked. If any is missing or unsupported, the files of the others are read with
    ``read`` (when given; ``strict``: a malformed record fails its file) and ``IngestFailed`` lists
    every failure at once, in the order given.
    """
    expanded: list[list[Path] | SourceError] = []
    for spec in specs:
        try:
            expanded.append(_expand(spec))
        except SourceError as exc:
            expanded.append(exc)
    if not any(isinstance(item, SourceError) for item in expanded):
        return expanded  # type: ignore[return-value]
    errors: list[SourceError] = []
    for item in expanded:
        if isinstance(item, SourceError):
            errors.append(item)
        elif read is not None:
            errors += [error for path in item if (error := _read_error(path, read, strict)) is not None]
    raise IngestFailed(errors, IngestSummary(failed=len(errors)))


def _expand(spec: str) -> list[Path]:
    literal = Path(spec).exists() or not glob.has_magic(spec)
    matches = [spec] if literal else sorted(glob.glob(spec))
    if not matches:
        raise SourceError(spec, "no file matches this pattern")
    paths: list[Path] = []
    for match in map(Path, matches):
        if match.is_dir():
            found = sorted(p for p in match.rglob("*") if p.is_file() and kind(p))
            if not found:
                raise SourceError(str(match), "folder holds no supported file", _supported_hint())
            paths.extend(found)
        else:
            paths.append(_check_file(match))
    return paths


def _read_error(path: Path, read: EventReader, strict: bool) -> SourceError | None:
    """Why ``path`` cannot be ingested (as ``ingest_files`` would say), or None; nothing is written."""
    try:
        for event in read(path):
            if strict and isinstance(event, Skipped):
                return event.error()
    except SourceError as exc:
        return exc
    return None


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
