"""Sentence-level support check: is each answer sentence backed by the abstract it cites?

Embedding similarity between an answer sentence (citation markers removed) and the sentences
of the retrieved abstracts, with the index's own encoder:

- a **cited** sentence is compared with the sentences of the abstracts it cites; below
  ``CITED_THRESHOLD``, or when another retrieved abstract matches it far better, it keeps its
  citation but is marked ``[weak support]``;
- an **uncited** sentence that closely matches some abstract (``SUPPORT_THRESHOLD``) gets that
  abstract's number, so a weak model's answer is still traceable (with ``mark_attributed``, as
  the chatbot calls it, also marked ``[source found by the check]``: the model did not cite it);
  one that matches nothing is marked ``[unsupported]``.

Marks follow the sentence they judge; nothing is hidden. Similarity shows where a claim comes
from, not that it is true: it does not understand negation ("reduced" vs "did not reduce"), so a
supported sentence can still misstate its source. Sentences under four words are not judged.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from index.encoder import Encoder
from index.search import Hit

# Cosine of sentence pairs, calibrated on MiniLM (docs/MODELS.md): paraphrases of a finding score
# 0.85-0.95, a different claim on the same clinical topic 0.5-0.6, an unrelated sentence < 0.3.
SUPPORT_THRESHOLD = 0.7  # to give an uncited sentence a citation: a paraphrase, not a shared topic
CITED_THRESHOLD = 0.65  # the model named the source: a little looser, still above same-topic claims
BETTER_SOURCE_MARGIN = 0.2  # another source this much closer means the citation points at the wrong one
UNSUPPORTED_MARK = " [unsupported]"
WEAK_MARK = " [weak support]"
ATTRIBUTED_MARK = " [source found by the check]"  # with mark_attributed: the model did not cite it
MIN_WORDS = 4  # shorter sentences ("Yes.", "Findings were mixed.") carry no checkable claim
_BOUNDARY = re.compile(r"((?<=[.!?])\s+(?=[A-Z0-9\[(])|\n+)")  # captured, so the layout survives
_MARKER = re.compile(r"\s*\[(\d+(?:, \d+)*)\]")


@dataclass(frozen=True)
class SentenceSupport:
    sentence: str  # the answer sentence without citation markers
    cited: tuple[int, ...]  # source numbers it cites (after attribution)
    score: float  # best similarity to a sentence of the cited sources (any source, when uncited)
    source: int | None  # the source number holding that best sentence
    status: str  # "supported", "weak", "attributed" or "unsupported"

    def as_dict(self) -> dict[str, object]:
        return {
            "sentence": self.sentence,
            "cited": list(self.cited),
            "score": round(self.score, 3),
            "source": self.source,
            "status": self.status,
        }


@dataclass(frozen=True)
class Checked:
    text: str
    attributed: int  # uncited sentences that received a citation from the check
    unsupported: int  # uncited sentences matching no source, marked
    weak: int = 0  # cited sentences the cited abstracts do not closely match, marked
    sentences: tuple[SentenceSupport, ...] = ()  # one per judged sentence, in order


def split_sentences(text: str) -> list[str]:
    return [s for s in _BOUNDARY.split(text)[::2] if s.strip()]


def cited_numbers(sentence: str) -> tuple[int, ...]:
    return tuple(dict.fromkeys(int(n) for m in _MARKER.finditer(sentence) for n in m.group(1).split(", ")))


def check_support(
    text: str,
    sources: Sequence[Hit],
    encoder: Encoder,
    threshold: float = SUPPORT_THRESHOLD,
    cited_threshold: float = CITED_THRESHOLD,
    *,
    mark_attributed: bool = False,
) -> Checked:
    """``text`` with each judged sentence marked or attributed; ``mark_attributed`` also marks the
    sentences the check gave a citation, so the reader sees the model did not cite them itself."""
    parts = _BOUNDARY.split(text)  # sentence, separator, sentence, ...
    claims = [i for i in range(0, len(parts), 2) if len(_MARKER.sub("", parts[i]).split()) >= MIN_WORDS]
    if not claims or not sources:
        return Checked(text, 0, 0)
    source_sentences = [(n, s) for n, hit in enumerate(sources, start=1) for s in split_sentences(hit.article.text)]
    owners = np.array([n for n, _ in source_sentences])
    claim_vectors = encoder.encode([_MARKER.sub("", parts[i]).strip() for i in claims])
    similarity = claim_vectors @ encoder.encode([s for _, s in source_sentences]).T
    judged = []
    for row, index in enumerate(claims):
        cited = tuple(n for n in cited_numbers(parts[index]) if 1 <= n <= len(sources))
        parts[index], verdict = _judge(parts[index], cited, similarity[row], owners, threshold, cited_threshold)
        if mark_attributed and verdict.status == "attributed":
            parts[index] = _after(parts[index], ATTRIBUTED_MARK)
        judged.append(verdict)
    return Checked(
        "".join(parts),
        attributed=sum(v.status == "attributed" for v in judged),
        unsupported=sum(v.status == "unsupported" for v in judged),
        weak=sum(v.status == "weak" for v in judged),
        sentences=tuple(judged),
    )


def _judge(
    sentence: str,
    cited: tuple[int, ...],
    scores: np.ndarray,
    owners: np.ndarray,
    threshold: float,
    cited_threshold: float,
) -> tuple[str, SentenceSupport]:
    """The sentence with its mark or new citation, and the verdict on it."""
    plain = _MARKER.sub("", sentence).strip()
    considered = np.isin(owners, cited) if cited else np.ones_like(owners, dtype=bool)
    best = int(np.argmax(np.where(considered, scores, -np.inf)))
    score, source = float(scores[best]), int(owners[best])
    if cited:
        supported = score >= cited_threshold and float(scores.max()) - score <= BETTER_SOURCE_MARGIN
        status = "supported" if supported else "weak"
        marked = sentence if status == "supported" else _after(sentence, WEAK_MARK)
        return marked, SentenceSupport(plain, cited, score, source, status)
    if score >= threshold:
        return _before_stop(sentence, f" [{source}]"), SentenceSupport(plain, (source,), score, source, "attributed")
    return _after(sentence, UNSUPPORTED_MARK), SentenceSupport(plain, (), score, source, "unsupported")


def _before_stop(sentence: str, mark: str) -> str:
    """Put a citation before the sentence's final punctuation, where citations sit."""
    stripped = sentence.rstrip()
    if stripped and stripped[-1] in ".!?":
        return stripped[:-1] + mark + stripped[-1]
    return stripped + mark


def _after(sentence: str, mark: str) -> str:
    """Put a mark after the whole sentence, so the citations inside stay as written."""
    return sentence.rstrip() + mark
