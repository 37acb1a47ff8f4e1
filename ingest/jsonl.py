"""JSON Lines reader: one object a line with ``pmid``, ``title``, ``abstract`` and optionally
``year``, ``journal``, ``mesh``, ``publication_types``, ``authors``, ``doi``.

A line that is not a JSON object, or lacks a PMID or both title and abstract, is skipped with its
line number; a file that is not JSON Lines at all (its first non-empty line fails) is a ``SourceError``.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path

from ingest.records import Article, BadValue, Event, Section, Skipped, SourceError, pmid_of, year_of

_NOT_JSON = ("invalid JSON", "line is not a JSON object")


def read_jsonl(path: Path) -> Iterator[Event]:
    name = str(path)
    opener = gzip.open if path.suffix == ".gz" else open
    seen_valid = False
    try:
        with opener(path, "rt", encoding="utf-8") as lines:
            for number, line in enumerate(lines, start=1):
                if not line.strip():
                    continue
                event = _parse_line(line, f"{name}:{number}")
                if not seen_valid and isinstance(event, Skipped) and event.reason.startswith(_NOT_JSON):
                    raise SourceError(name, f"line {number}: {event.reason}", "expected JSON Lines")
                seen_valid = True
                yield event
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise SourceError(name, f"cannot be read: {exc}") from exc


def _parse_line(line: str, where: str) -> Event:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        return Skipped(where, "?", f"invalid JSON: {exc.msg}")
    if not isinstance(record, dict):
        return Skipped(where, "?", "line is not a JSON object")
    raw = str(record.get("pmid", "")).strip()
    if not raw:
        return Skipped(where, "?", "missing pmid")
    try:
        pmid, year = pmid_of(raw), year_of(record.get("year"))
    except BadValue as exc:
        return Skipped(where, raw[:40], str(exc))
    title = str(record.get("title") or "").strip()
    if not title and not record.get("abstract"):  # an abstract alone (PubMedQA contexts) is still evidence
        return Skipped(where, pmid, "missing title")
    return Article(
        pmid=pmid,
        title=title,
        sections=(Section("", str(record["abstract"]).strip()),) if record.get("abstract") else (),
        journal=str(record.get("journal") or ""),
        year=year,
        authors=_strings(record.get("authors")),
        publication_types=_strings(record.get("publication_types")),
        mesh=_strings(record.get("mesh")),
        doi=str(record.get("doi") or ""),
    )


def _strings(value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,) if value else ()
    return tuple(str(v) for v in value) if isinstance(value, list) else ()
