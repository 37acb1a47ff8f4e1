"""Turn what the user typed (files, folders, globs) into readable sources, checked up front.

Checking every source before anything is written means a typo fails fast with a clear
message instead of half-way through a long ingest.
"""

from __future__ import annotations

import glob
from collections.abc import Iterator
from pathlib import Path

from ingest.jsonl import read_jsonl
from ingest.pubmed_xml import read_pubmed_xml
from ingest.records import Event, SourceError

_XML = (".xml", ".xml.gz")
_JSONL = (".jsonl", ".jsonl.gz", ".ndjson")
SUPPORTED = _XML + _JSONL


def expand_sources(specs: list[str]) -> list[Path]:
    """Files, folders (their supported files, sorted) and glob patterns, in the order given."""
    paths: list[Path] = []
    for spec in specs:
        matches = sorted(glob.glob(spec)) if glob.has_magic(spec) else [spec]
        if not matches:
            raise SourceError(spec, "no file matches this pattern")
        for match in map(Path, matches):
            if match.is_dir():
                found = sorted(p for p in match.rglob("*") if p.is_file() and _kind(p))
                if not found:
                    raise SourceError(str(match), "folder holds no supported file", _supported_hint())
                paths.extend(found)
            else:
                paths.append(_check_file(match))
    return paths


def read_source(path: Path) -> Iterator[Event]:
    """The events of one source file, by its format."""
    return read_pubmed_xml(path) if _kind(path) == "xml" else read_jsonl(path)


def _check_file(path: Path) -> Path:
    if not path.exists():
        raise SourceError(str(path), "no such file", "check the path")
    if not path.is_file():
        raise SourceError(str(path), "not a regular file")
    if not _kind(path):
        raise SourceError(str(path), "unsupported file type", _supported_hint())
    return path


def _kind(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(_XML):
        return "xml"
    return "jsonl" if name.endswith(_JSONL) else ""


def _supported_hint() -> str:
    return "supported: " + ", ".join(SUPPORTED)
