"""Reader for the MEDLINE text format (PubMed's "Save > PubMed format", ``.nbib``, ``.txt``).

A record is a block of ``TAG - value`` lines separated by blank lines; a value continues on
lines indented by six spaces. Only the tags the index uses are read (PMID, TI/BTI/TT, AB, JT/TA,
DP, AU/CN, PT, MH, LID/AID ``[doi]``). A structured abstract keeps its ``LABEL:`` headings as
sections, so the same citation read from XML or MEDLINE text has the same embedded text.

Biopython's ``Bio.Medline`` parses the same format, but it returns raw tag lists that would
still need all of the mapping below; a dependency is not worth the 30 lines it would save.
A record without a numeric PMID or a title is skipped with its line number; a file whose first
line is not a MEDLINE tag is a ``SourceError``.
"""

from __future__ import annotations

import gzip
import re
from collections.abc import Iterator
from pathlib import Path

from ingest.records import Article, BadValue, Event, Section, Skipped, SourceError, pmid_of, year_of

_TAG = re.compile(r"^([A-Z][A-Z0-9]{0,3}) *- ?(.*)$")
_CONTINUATION = "      "  # six spaces
# A heading is an upper-case phrase then ": ", at the start or after a sentence ("... end. RESULTS: ...").
_HEADING = re.compile(r"(?:^|(?<=[.!?] ))([A-Z][A-Z/&,\- ]{2,40}[A-Z]): ")


def read_medline(path: Path) -> Iterator[Event]:
    """Yield one event per MEDLINE record of ``path`` (plain or gzip-compressed)."""
    name = str(path)
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8-sig") as lines:
            for start, fields in _records(lines, name):
                yield _event(fields, f"{name}:{start}")
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise SourceError(name, f"cannot be read: {exc}", "expected UTF-8 MEDLINE text") from exc


def looks_like_medline(path: Path) -> bool:
    """True when the first non-blank line is a ``PMID-`` tag (how every PubMed export starts)."""
    try:
        with open(path, encoding="utf-8-sig", errors="replace") as lines:
            first = next((line for line in lines if line.strip()), "")
    except OSError:
        return False
    return first.startswith("PMID") and bool(_TAG.match(first.rstrip("\n")))


def _records(lines, name: str) -> Iterator[tuple[int, dict[str, list[str]]]]:
    """(first line number, {tag: [values]}) per record; continuation lines are joined.

    A line that is neither a tag nor a continuation marks its record malformed (key ``!``); on
    the file's first line it means the file is not MEDLINE text at all.
    """
    fields: dict[str, list[str]] = {}
    start, tag, first = 0, "", True
    for number, raw in enumerate(lines, start=1):
        line = raw.rstrip("\r\n")
        if not line.strip():
            if fields:
                yield start, fields
                first = False
            fields, tag = {}, ""
            continue
        if not fields:
            start = number
        if line.startswith(_CONTINUATION) and tag:
            fields[tag][-1] += " " + line.strip()
        elif match := _TAG.match(line):
            tag = match.group(1)
            fields.setdefault(tag, []).append(match.group(2).strip())
        elif first and number == start:
            raise SourceError(name, f"line {number} is not a MEDLINE tag line", "expected PubMed format text")
        else:
            fields.setdefault("!", []).append(f"line {number} is not a tag line: {line.strip()[:40]!r}")
    if fields:
        yield start, fields


def _event(fields: dict[str, list[str]], where: str) -> Event:
    raw = _first(fields, "PMID")
    if "!" in fields:
        return Skipped(where, raw[:40] or "?", f"malformed record: {fields['!'][0]}")
    if not raw:
        return Skipped(where, "?", "record has no PMID")
    try:
        pmid, year = pmid_of(raw), year_of(_first(fields, "DP"))
    except BadValue as exc:
        return Skipped(where, raw[:40], str(exc))
    title = _first(fields, "TI") or _first(fields, "BTI") or _first(fields, "TT")
    if not title:
        return Skipped(where, pmid, "record has no title")
    return Article(
        pmid=pmid,
        title=title,
        sections=sections(_first(fields, "AB")),
        journal=_first(fields, "JT") or _first(fields, "TA"),
        year=year,
        authors=tuple(fields.get("AU", []) or fields.get("CN", [])),
        publication_types=tuple(fields.get("PT", [])),
        mesh=tuple(_descriptor(m) for m in fields.get("MH", [])),
        doi=_doi(fields.get("LID", []) + fields.get("AID", [])),
    )


def sections(abstract: str) -> tuple[Section, ...]:
    """Split ``BACKGROUND: ... RESULTS: ...`` into labelled sections; otherwise one unlabelled one."""
    abstract = " ".join(abstract.split())
    parts = _HEADING.split(abstract)
    if not abstract or len(parts) < 3 or parts[0].strip():
        return (Section("", abstract),) if abstract else ()
    pairs = zip(parts[1::2], parts[2::2], strict=True)
    return tuple(Section(label, text.strip()) for label, text in pairs if text.strip())


def _first(fields: dict[str, list[str]], tag: str) -> str:
    values = fields.get(tag)
    return " ".join(values[0].split()) if values else ""


def _descriptor(heading: str) -> str:
    """``Information Storage and Retrieval/*methods`` -> ``Information Storage and Retrieval``."""
    return heading.split("/", 1)[0].lstrip("*").strip()


def _doi(ids: list[str]) -> str:
    for value in ids:
        if value.endswith("[doi]"):
            return value[: -len("[doi]")].strip()
    return ""
