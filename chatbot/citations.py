"""Map ``[n]`` markers in generated text to the retrieved PMIDs they number.

A marker naming no retrieved source is removed (and counted), never shown as a real citation.
Ranges and lists (``[1-3]``, ``[1, 4]``) are expanded; invalid members are dropped individually.
So citation precision is 1.0 by construction: every citation left points at a source the model
was shown. ``format_references`` writes the reference list that ends an answer.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from index.search import Hit

_MARKER = re.compile(r"\[(\s*\d+\s*(?:[,;–-]\s*\d+\s*)*)\]")


@dataclass(frozen=True)
class Citation:
    n: int
    pmid: str
    title: str
    url: str

    def as_dict(self) -> dict[str, object]:
        return {"n": self.n, "pmid": self.pmid, "title": self.title}


@dataclass(frozen=True)
class ResolvedText:
    text: str  # the answer with only valid markers left
    citations: tuple[Citation, ...]  # in order of first use
    invalid: int  # markers (or members of a list) that named no source


def resolve_citations(text: str, sources: Sequence[Hit]) -> ResolvedText:
    used: dict[int, Citation] = {}
    invalid = 0

    def replace(match: re.Match[str]) -> str:
        nonlocal invalid
        numbers = _expand(match.group(1))
        valid = [n for n in numbers if 1 <= n <= len(sources)]
        invalid += len(numbers) - len(valid)
        for n in valid:
            hit = sources[n - 1]
            used.setdefault(n, Citation(n, hit.pmid, hit.article.title, hit.url))
        return "[" + ", ".join(map(str, dict.fromkeys(valid))) + "]" if valid else ""

    cleaned = _MARKER.sub(replace, text)
    cleaned = re.sub(r"[ \t]+([.,;:])", r"\1", cleaned)  # tidy the space a removed marker leaves
    return ResolvedText(cleaned, tuple(used.values()), invalid)


def _expand(inner: str) -> list[int]:
    numbers: list[int] = []
    for part in re.split(r"[,;]", inner):
        bounds = [int(b) for b in re.split(r"[–-]", part) if b.strip()]
        if len(bounds) == 2 and 0 < bounds[1] - bounds[0] < 20:
            numbers.extend(range(bounds[0], bounds[1] + 1))
        else:
            numbers.extend(bounds)
    return numbers


MAX_AUTHORS = 3  # then "et al.", as the source cards do


def format_reference(citation: Citation, hit: Hit) -> str:
    """``[n] Authors. Title. Journal. Year. [PMID n](url)`` for one cited source."""
    article = hit.article
    authors = ", ".join(article.authors[:MAX_AUTHORS]) + (", et al" if len(article.authors) > MAX_AUTHORS else "")
    parts = [authors, article.title.rstrip("."), article.journal, str(article.year or "n.d.")]
    return f"[{citation.n}] " + ". ".join(p for p in parts if p) + f". [PMID {citation.pmid}]({citation.url})"


def format_references(citations: Sequence[Citation], sources: Sequence[Hit], heading: str) -> str:
    """The reference list of the cited sources, by number; empty when nothing is cited."""
    if not citations:
        return ""
    lines = [format_reference(c, sources[c.n - 1]) for c in sorted(citations, key=lambda c: c.n)]
    return heading + "\n\n" + "\n\n".join(lines)
