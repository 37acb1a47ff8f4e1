"""Combine ranked lists from several retrievers into one ranking: reciprocal rank fusion (RRF).

RRF (Cormack et al., 2009) scores a document by ``sum_i w_i / (c + rank_i)`` over the lists it
appears in. It needs only ranks, so BM25 scores (unbounded) and cosine similarities (in [-1, 1])
never have to be put on one scale, and a document found by both retrievers beats one found by
either alone unless the single list ranks it far higher. ``c = 60`` is the value of the original
paper; weights let the more reliable retriever break ties between the two (measured choice in
``index/hybrid.py``). A document missing from a list contributes nothing for that list.
"""

from __future__ import annotations

from collections.abc import Sequence

RRF_C = 60  # the constant of Cormack et al.; larger flattens the difference between ranks


def reciprocal_rank_fusion(
    rankings: Sequence[Sequence[int]], *, weights: Sequence[float] | None = None, c: int = RRF_C
) -> list[tuple[int, float]]:
    """(id, fused score) for every id in any ranking, best first (ties: first seen first)."""
    weights = [1.0] * len(rankings) if weights is None else list(weights)
    if len(weights) != len(rankings):
        raise ValueError(f"{len(weights)} weights for {len(rankings)} rankings")
    fused: dict[int, float] = {}
    for ranking, weight in zip(rankings, weights, strict=True):
        for rank, item in enumerate(ranking, start=1):
            fused[item] = fused.get(item, 0.0) + weight / (c + rank)
    return sorted(fused.items(), key=lambda pair: -pair[1])
