"""Evidence sufficiency: can the retrieved abstracts answer the question, or should the chatbot abstain?

A medical index is asked many questions it holds no answer to, and a model handed unrelated
abstracts answers from them anyway. The gate decides before any generation, from two cheap
signals of the hits retrieval already returned (no extra model call):

- ``similarity``: the best cosine of the question and a retrieved abstract (``Hit.score``);
- ``coverage``: the largest share of the question's content words (BM25's stemmed tokens,
  stopwords removed) that one of the top ``COVERAGE_HITS`` abstracts contains. An abstract on
  the same topic that does not mention what is asked about reaches a high cosine but not a
  high coverage.

``evidence = similarity + COVERAGE_WEIGHT * coverage``; the question is answered when
``evidence >= GATE_THRESHOLD``. Both constants were chosen on the dev sets, as
``benchmarks/abstention.py`` measures them: each dev question asked of an index holding its own
abstracts (answerable) and of the same index without them (unanswerable), PubMedQA and BioASQ
(BENCHMARKS.md, "Evidence gate"). The gate is only as good as the encoder it was calibrated
for (the packaged MiniLM); ``--gate off`` leaves only the old per-hit ``--min-score`` floor.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

from index.search import Hit

# Chosen on the dev sets (benchmarks/abstention.py; BENCHMARKS.md issue #16): of a sweep of weights
# 0-1 (step 0.25) x thresholds 0.40-1.39 (step 0.01), the setting whose worst of the four rates
# (abstain on unanswerable, answer on answerable; PubMedQA and BioASQ) is best, one setting for both
# sets, never per question. Measured at it: PubMedQA answers .924 / abstains .920, BioASQ .853 /
# .849 (weight 0, cosine alone, ties on the worst rate at .849 but is worse on PubMedQA: .880/.878).
COVERAGE_WEIGHT = 0.25
GATE_THRESHOLD = 0.78
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
    coverage: float  # best share of the question's content words one top hit contains
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
    threshold: float = GATE_THRESHOLD,
    weight: float = COVERAGE_WEIGHT,
) -> Sufficiency:
    """Whether ``hits`` (best first) hold enough evidence to answer ``question``."""
    if not hits:
        return Sufficiency(False, 0.0, 0.0, 0.0, threshold)
    similarity = max(h.score for h in hits)
    coverage = question_coverage(question, hits[:COVERAGE_HITS])
    evidence = similarity + weight * coverage
    return Sufficiency(evidence >= threshold, evidence, similarity, coverage, threshold)


def question_coverage(question: str, hits: Sequence[Hit]) -> float:
    """The largest share of the question's content words (stemmed) that one of ``hits`` contains."""
    from index.bm25 import tokenize

    tokens = tokenize([question, *(h.article.text for h in hits)])
    asked = set(tokens[0]) - _question_words()
    if not asked or not hits:
        return 0.0
    return max(len(asked & set(words)) / len(asked) for words in tokens[1:])


@functools.cache
def _question_words() -> frozenset[str]:
    from index.bm25 import tokenize

    return frozenset(tokenize([QUESTION_WORDS])[0])
