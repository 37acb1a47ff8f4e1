"""Records that ingestion produces: one normalised ``Article`` per PubMed citation.

Readers yield a stream of events in file order: an ``Article`` (add, or replace the same PMID),
a ``Deletion`` (NCBI's ``DeleteCitation``) or a ``Skipped`` record that could not be used.
The index applies them in that order, so "the later record wins" falls out naturally.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field


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
        """What gets embedded: title and abstract together."""
        return f"{self.title}\n{self.abstract}".strip()

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


@dataclass(frozen=True)
class Deletion:
    pmids: tuple[str, ...]


@dataclass(frozen=True)
class Skipped:
    source: str  # "file:line" where the record starts (just "file" when the line is unknown)
    pmid: str  # "?" when even the PMID could not be read
    reason: str


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
