"""Evidence sufficiency: can the retrieved abstracts answer the question, or should the chatbot abstain?

A medical index is asked many questions it holds no answer to, and a model handed unrelated
abstracts answers from them anyway. The gate decides before any generation, from two cheap
signals of the hits retrieval already returned (no extra model call):

- ``similarity``: the best cosine of the question and a retrieved abstract (``Hit.score``);
- ``coverage``: the largest share of the question's content words (BM25's stemmed tokens,
  stopwords removed) that one of the top ``COVERAGE_HITS`` abstracts contains, each word weighted
  by its inverse document frequency in the index (BM25's IDF). An abstract on the same topic that
  does not mention what is asked about reaches a high cosine but not a high coverage, and the
  words that name what is asked about (a drug, a gene) are the rare ones: "Is pazopanib effective
  for glioblastoma?" over an abstract on palbociclib for glioblastoma lacks the word that matters
  most. A word the index does not hold at all weighs the most.

``evidence = similarity + COVERAGE_WEIGHT * coverage``; the question is answered when
``evidence >= GATE_THRESHOLD``. Both constants were chosen on the dev sets, as
``benchmarks/abstention.py`` measures them: each dev question asked of an index holding its own
abstracts (answerable) and of the same index without them (unanswerable), PubMedQA and BioASQ
(BENCHMARKS.md, "Evidence gate"). The gate is only as good as the encoder it was calibrated
for (the packaged MiniLM); ``--gate off`` leaves only the old per-hit ``--min-score`` floor.
Without an index's BM25 (``index=None``) every word weighs the same.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

from index.search import Hit

# Chosen on the dev sets (benchmarks/abstention.py; BENCHMARKS.md issue #16): of a sweep of weights
# 0-1 (step 0.05) x thresholds 0.40-1.595 (step 0.005), the setting whose worst of the four rates
# (abstain on unanswerable, answer on answerable; PubMedQA and BioASQ) is best (ties: the lowest
# weight), one setting for both sets, never per question. Measured at it: PubMedQA answers .932 /
# abstains .922, BioASQ .894 / .884 (every word weighing the same, the best was .853 / .849).
COVERAGE_WEIGHT = 0.35
GATE_THRESHOLD = 0.84
COVERAGE_HITS = 3  # abstracts whose coverage counts: the ones an answer would mostly cite
GATES = ("on", "off")
# How questions are phrased, not what they ask about; BM25's English stopword list keeps these.
QUESTION_WORDS = (
    "does do did doing done what which who whom whose when where why how should could would can may might must "
    "shall will is are was were be been has have had any there whether between among"
)


@dataclass(frozen=True)
class Sufficiency:
    answerable: bool
    evidence: float  # similarity + COVERAGE_WEIGHT * coverage (0 with no hits)
    similarity: float  # best cosine of the question and a hit
    coverage: float  # best IDF-weighted share of the question's content words one top hit contains
    threshold: float

    def as_dict(self) -> dict[str, object]:
        return {
            "answerable": self.answerable,
            "evidence": round(self.evidence, 4),
            "similarity": round(self.similarity, 4),
            "coverage": round(self.coverage, 4),
            "threshold": self.threshold,
        }


def check_gate(name: str) -> str:
    if name not in GATES:
        raise ValueError(f"unknown gate setting {name!r}: choose one of {', '.join(GATES)}")
    return name


def assess(
    question: str,
    hits: Sequence[Hit],
    *,
    index: object | None = None,
    threshold: float = GATE_THRESHOLD,
    weight: float = COVERAGE_WEIGHT,
) -> Sufficiency:
    """Whether ``hits`` (best first) hold enough evidence to answer ``question``; ``index`` (a
    ``PubMedIndex``, or anything with a ``bm25``) gives the words their weights."""
    if not hits:
        return Sufficiency(False, 0.0, 0.0, 0.0, threshold)
    similarity = max(h.score for h in hits)
    coverage = question_coverage(question, hits[:COVERAGE_HITS], weights=word_weights(question, index))
    evidence = similarity + weight * coverage
    return Sufficiency(evidence >= threshold, evidence, similarity, coverage, threshold)


def question_coverage(question: str, hits: Sequence[Hit], *, weights: dict[str, float] | None = None) -> float:
    """The largest weighted share of the question's content words (stemmed) that one of ``hits``
    contains; ``weights`` by stemmed word (``word_weights``), 1 for a word it lacks."""
    from index.bm25 import tokenize

    tokens = tokenize([question, *(h.article.text for h in hits)])
    asked = set(tokens[0]) - _question_words()
    if not asked or not hits:
        return 0.0
    weight = {word: (weights or {}).get(word, 1.0) for word in sorted(asked)}  # sorted: same sums every run
    total = sum(weight.values())
    return max(sum(weight[w] for w in weight if w in held) / total for held in map(set, tokens[1:]))


def word_weights(question: str, index: object | None) -> dict[str, float]:
    """BM25's IDF of each content word of ``question`` in ``index`` (empty without a BM25 index)."""
    from index.bm25 import BM25Unavailable, tokenize

    try:
        bm25 = getattr(index, "bm25", None) if index is not None else None
    except (BM25Unavailable, FileNotFoundError, OSError):
        bm25 = None
    if bm25 is None or not len(bm25):
        return {}
    stems = sorted(set(tokenize([question])[0]) - _question_words())
    return {stem: _idf(bm25.document_frequency(stem), bm25.documents) for stem in stems}


def _idf(frequency: int, documents: int) -> float:
    """BM25's (Lucene's) IDF: always positive; highest for a word no abstract holds."""
    return math.log(1 + (documents - frequency + 0.5) / (frequency + 0.5))


@functools.cache
def _question_words() -> frozenset[str]:
    from index.bm25 import tokenize

    return frozenset(tokenize([QUESTION_WORDS])[0])
