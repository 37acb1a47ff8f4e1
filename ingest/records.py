"""Records that ingestion produces: one normalised ``Article`` per PubMed citation.

Readers yield a stream of events in file order: an ``Article`` (add, or replace the same PMID),
a ``Deletion`` (NCBI's ``DeleteCitation``) or a ``Skipped`` record that could not be used.
The index applies them in that order, so "the later record wins" falls out naturally.
"""

from __future__ import annotations

import hashlib
import itertools
import re
from dataclasses import dataclass, field
from datetime import date

# PubMed ids are 1 to 8 ASCII digits (PMIDs are now in the 40 millions). Anything else, Unicode
# digits included (int() reads "٨٤٥٤٢٧٩" as 8454279), is not a PMID and its record is skipped.
PMID_DIGITS = 8
# Publication years: well before PubMed's oldest citations, up to ahead-of-print issues a little ahead.
YEAR_MIN, YEAR_MAX = 1500, date.today().year + 2
VERSION_MAX = 999  # PMID versions are small counters (almost always 1)
# Title and abstract characters embedded per record (about 2,500 tokens; real abstracts stay well
# under it). The stored text is kept whole; only the vector reads this much, so one huge record
# cannot hold the single-writer lock for minutes, nor a question that retrieves it cost more.
EMBED_CHARS = 10_000
_ASCII_DIGITS = re.compile(r"[0-9]+")


@dataclass(frozen=True)
class Section:
    label: str  # e.g. "BACKGROUND"; empty for an unstructured abstract
    text: str


_CONCLUSION_LABELS = ("CONCLUSION", "INTERPRETATION", "SIGNIFICANCE", "IMPLICATIONS")


@dataclass(frozen=True)
class Article:
    pmid: str
    title: str
    sections: tuple[Section, ...]
    journal: str = ""
    year: int | None = None
    authors: tuple[str, ...] = ()
    publication_types: tuple[str, ...] = ()
    mesh: tuple[str, ...] = ()
    doi: str = ""
    version: int = 1

    @property
    def abstract(self) -> str:
        """The abstract as readers see it, structured sections labelled."""
        return "\n".join(f"{s.label}: {s.text}" if s.label else s.text for s in self.sections)

    @property
    def text(self) -> str:
        """What gets embedded: title and abstract together, the first ``EMBED_CHARS`` of them."""
        return f"{self.title}\n{self.abstract}".strip()[:EMBED_CHARS]

    @property
    def conclusion(self) -> str:
        """The answer-bearing part: the labelled conclusions, else the abstract's last two sentences."""
        labelled = [s.text for s in self.sections if s.label.upper().startswith(_CONCLUSION_LABELS)]
        if labelled:
            return " ".join(labelled)
        sentences = re.split(r"(?<=[.!?])\s+(?=[A-Z])", " ".join(s.text for s in self.sections))
        return " ".join(sentences[-2:])

    @property
    def text_hash(self) -> str:
        """Identifies the embedded text, so an unchanged abstract is never re-embedded."""
        return text_hash(self.text)


def text_hash(text: str) -> str:
    """``Article.text_hash`` of an article whose ``text`` this is (also the key of precomputed vectors)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


class BadValue(ValueError):
    """A PMID, year or version that is not what PubMed would write; the message shows the value."""


def pmid_of(value: object) -> str:
    """``value`` as a PMID in canonical form (no leading zeros); ``BadValue`` unless 1-8 ASCII digits, not 0."""
    text = str(value).strip()
    if not _ASCII_DIGITS.fullmatch(text) or len(text.lstrip("0")) > PMID_DIGITS or int(text) == 0:
        raise BadValue(f"PMID {shown(text)} is not a PubMed id (1 to {PMID_DIGITS} ASCII digits)")
    return str(int(text))


def year_of(value: object) -> int | None:
    """The year a date starts with ("2021", "1998 Dec-1999 Jan", "20210315"); None when it starts with
    no digit ("Winter", ""); ``BadValue`` for other digits (not ASCII, out of range, too many)."""
    text = str(value if value is not None else "").strip()
    head = "".join(itertools.takewhile(str.isdigit, text))  # str.isdigit: "²⁰²⁰" is reported, not ignored
    if not head:
        return None
    if not _ASCII_DIGITS.fullmatch(head) or len(head) not in (4, 8) or not YEAR_MIN <= int(head[:4]) <= YEAR_MAX:
        raise BadValue(f"year {shown(text)} is not a year from {YEAR_MIN} to {YEAR_MAX}")
    return int(head[:4])


def version_of(value: object) -> int:
    """A PMID's ``Version`` attribute; ``BadValue`` unless ASCII digits from 1 to ``VERSION_MAX``."""
    text = str(value).strip()
    if not _ASCII_DIGITS.fullmatch(text) or len(text.lstrip("0")) > len(str(VERSION_MAX)) or int(text) == 0:
        raise BadValue(f"PMID version {shown(text)} is not a number from 1 to {VERSION_MAX}")
    return int(text)


def shown(value: str, limit: int = 40) -> str:
    """A value quoted for a message, cut to ``limit`` characters."""
    return repr(value[:limit] + ("…" if len(value) > limit else ""))


@dataclass(frozen=True)
class Deletion:
    pmids: tuple[str, ...]


@dataclass(frozen=True)
class Skipped:
    source: str  # "file:line" where the record starts (just "file" when the line is unknown)
    pmid: str  # "?" when even the PMID could not be read
    reason: str

    def error(self) -> SourceError:
        """This record as the failure of its source (``--strict``)."""
        return SourceError(
            self.source, f"malformed record (PMID {self.pmid}): {self.reason}", "fix it or drop --strict"
        )


Event = Article | Deletion | Skipped


class SourceError(Exception):
    """A whole source cannot be read (missing, not the expected format, truncated)."""

    def __init__(self, source: str, problem: str, hint: str = "") -> None:
        self.source = source
        message = f"{source}: {problem}"
        super().__init__(message + (f" ({hint})" if hint else ""))


class IngestFailed(SourceError):
    """One or more sources could not be read, so nothing was committed; every failure is listed."""

    def __init__(self, errors: list[SourceError], summary: IngestSummary) -> None:
        self.errors = errors
        self.summary = summary
        count = f"{len(errors)} source{'s' if len(errors) > 1 else ''}"
        lines = "\n".join(f"  {e}" for e in errors)
        Exception.__init__(self, f"{count} could not be read; nothing was written, the index is as it was:\n{lines}")
        self.source = errors[0].source


@dataclass
class IngestSummary:
    """What one ingest run did; printed at the end and returned to Python callers.

    added / replaced / unchanged / deleted count PMIDs by their net effect on the index, so a
    PMID that an update file revises three times is one "replaced" (or one "added" if new).
    """

    added: int = 0
    replaced: int = 0
    unchanged: int = 0
    deleted: int = 0
    skipped: int = 0
    without_abstract: int = 0
    embedded: int = 0
    failed: int = 0  # sources that could not be read (the run then commits nothing)
    resumed: int = 0  # vectors taken from an interrupted run of the same ingest instead of re-embedded
    sources: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return dict(vars(self))
