"""Which retriever ranks the abstracts: dense, BM25, or both fused (the default).

Every retriever returns PMIDs best first; ``PubMedIndex`` turns them into hits. ``hybrid``
takes the top ``CANDIDATES`` of each list and fuses them with weighted reciprocal rank fusion
(``index/fusion.py``). The weights and candidate depth were chosen on the PubMedQA and BioASQ dev
sets as a whole (never per question) and checked on both; see docs/RETRIEVAL.md and
BENCHMARKS.md for the table of every retriever.
"""

from __future__ import annotations

from collections.abc import Callable

from index.fusion import reciprocal_rank_fusion

RETRIEVERS = ("dense", "bm25", "hybrid")
DEFAULT_RETRIEVER = "hybrid"  # best measured on both dev sets (BENCHMARKS.md)
CANDIDATES = 100  # per retriever before fusion: deep enough that fusion can lift a rank-50 hit
DENSE_WEIGHT, BM25_WEIGHT = 1.0, 1.0  # weighted RRF; see docs/RETRIEVAL.md for the measured choice

Ranked = list[tuple[int, float]]  # (PMID, the retriever's score), best first
Search = Callable[[int], Ranked]  # depth -> ranking


def check_retriever(name: str) -> str:
    if name not in RETRIEVERS:
        raise ValueError(f"unknown retriever {name!r}: choose one of {', '.join(RETRIEVERS)}")
    return name


def rank(retriever: str, depth: int, *, dense: Search, bm25: Search) -> list[int]:
    """The top ``depth`` PMIDs of ``retriever``; ``dense`` and ``bm25`` run only when needed."""
    check_retriever(retriever)
    if retriever == "dense":
        return [pmid for pmid, _ in dense(depth)]
    if retriever == "bm25":
        return [pmid for pmid, _ in bm25(depth)]
    n = max(depth, CANDIDATES)
    fused = reciprocal_rank_fusion(
        [[p for p, _ in dense(n)], [p for p, _ in bm25(n)]], weights=[DENSE_WEIGHT, BM25_WEIGHT]
    )
    return [pmid for pmid, _ in fused[:depth]]
