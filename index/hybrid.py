"""Which retriever ranks the abstracts: dense, BM25, or both fused (the default).

Every retriever returns (PMID, score) best first; ``PubMedIndex`` turns them into hits (and hands
the scores to a reranker that fuses them with its own).

- ``hybrid`` (default): the top ``CANDIDATES`` of each retriever are pooled, each candidate gets
  both its cosine and its BM25 score, and they are fused by weighted z-scores
  (``index/fusion.py``), dense weighted ``DENSE_WEIGHT``, BM25 ``1 - DENSE_WEIGHT``.
- exact terms: when the query names a rare identifier (a gene symbol, drug code or trial acronym
  that between 1 and ``index.exact.RARE_DF`` abstracts contain, ``index/exact.py``), ``hybrid``
  moves those abstracts up to just after its first hit, in fused order: the encoder does not
  know such words, and without this the dense side's weight buries what BM25 found by the exact
  word. After the first hit rather than first: R@1 unchanged on both dev sets (first: -0.4 and
  -0.7 points).
- ``rrf``: the same two lists fused by reciprocal rank (c = 60, equal weights); accepted for the
  benchmark's comparison, not offered to users (it measured worse than either single retriever).

The weight and depth were chosen on the PubMedQA and BioASQ dev sets together (one setting for
both, never per question); see docs/RETRIEVAL.md and BENCHMARKS.md for every retriever's figures.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from index.fusion import reciprocal_rank_fusion, z_score_fusion, z_scores

RETRIEVERS = ("dense", "bm25", "hybrid")  # what users choose from (CLI, app menu)
ACCEPTED = (*RETRIEVERS, "rrf")  # rrf too, for the benchmark's comparison
DEFAULT_RETRIEVER = "hybrid"  # best measured on both dev sets (BENCHMARKS.md)
CANDIDATES = 100  # per retriever before fusion: the gold abstract is in both top 100s for >99% of questions
# Exact terms (index/exact.py) are moved up to just after the fused first hit: one setting for both dev
# sets, measured against "first" (0) and "off" (benchmarks/exact_terms.py, BENCHMARKS.md issue #16).
PINNED_AFTER = 1
DENSE_WEIGHT = 0.85  # of the z-scored cosine; BM25 gets the rest (best mean R@1 of the dev sets, docs/RETRIEVAL.md)

Ranked = list[tuple[int, float]]  # (PMID, the retriever's score), best first
Search = Callable[[int], Ranked]  # depth -> ranking
Rescore = Callable[[list[int]], np.ndarray]  # PMIDs -> the retriever's score of each
Exact = Callable[[], list[int]]  # the PMIDs holding a rare identifier of the query (index/exact.py)


def check_retriever(name: str) -> str:
    if name not in ACCEPTED:
        raise ValueError(f"unknown retriever {name!r}: choose one of {', '.join(RETRIEVERS)}")
    return name


def rank(
    retriever: str,
    depth: int,
    *,
    dense: Search,
    bm25: Search,
    cosine: Rescore | None = None,
    bm25_score: Rescore | None = None,
    standardized: bool = False,
    exact: Exact | None = None,
) -> Ranked:
    """The top ``depth`` (PMID, score) of ``retriever``; each search runs only when needed. ``hybrid``
    also needs ``cosine`` and ``bm25_score`` to score the candidates one list missed.

    ``standardized``: scores on hybrid's scale, z-scores over a pool of ``CANDIDATES``, for a
    reranker that adds its own score to them (hybrid's fused score already is one). ``exact``: for
    ``hybrid``, the abstracts to rank first (a rare identifier of the query is in them)."""
    check_retriever(retriever)
    if standardized and retriever != "hybrid":
        pooled = rank(retriever, max(depth, CANDIDATES), dense=dense, bm25=bm25)
        return [(pmid, z) for (pmid, _), z in zip(pooled, z_scores([s for _, s in pooled]), strict=True)][:depth]
    if retriever == "dense":
        return dense(depth)
    if retriever == "bm25":
        return bm25(depth)
    n = max(depth, CANDIDATES)
    by_dense, by_bm25 = dense(n), bm25(n)
    if retriever == "rrf":
        return reciprocal_rank_fusion([[p for p, _ in by_dense], [p for p, _ in by_bm25]])[:depth]
    if cosine is None or bm25_score is None:
        raise ValueError("hybrid ranking needs cosine and bm25_score to rescore candidates")
    pinned = exact() if exact is not None else []
    candidates = list(dict.fromkeys(p for p, _ in [*by_dense, *by_bm25])) + pinned
    candidates = list(dict.fromkeys(candidates))
    scores = [cosine(candidates), bm25_score(candidates)]
    fused = z_score_fusion(candidates, scores, [DENSE_WEIGHT, 1 - DENSE_WEIGHT])
    return promote(fused, set(pinned))[:depth]


def promote(fused: Ranked, pinned: set[int], *, after: int | None = None) -> Ranked:
    """``fused`` with the ``pinned`` PMIDs moved up to just after its first ``after`` hits (default
    ``PINNED_AFTER``), in fused order, their scores lifted above the rest by the same margins so a
    reranker that adds its own score to these still sees them there."""
    after = PINNED_AFTER if after is None else after
    if not pinned:
        return fused
    head = [(p, s) for p, s in fused[:after] if p not in pinned]
    moved = [(p, s) for p, s in fused if p in pinned]
    rest = [(p, s) for p, s in fused if p not in pinned and (p, s) not in head]
    if not moved or not rest:
        return head + moved + rest
    lift = max(rest[0][1] - moved[-1][1] + 1.0, 0.0)  # the last moved one ends a unit above the rest
    moved = [(p, s + lift) for p, s in moved]
    top = moved[0][1]
    head = [(p, max(s, top + 1.0 + len(head) - i)) for i, (p, s) in enumerate(head)]  # still above them
    return head + moved + rest
