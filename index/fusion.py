"""Combine the results of several retrievers into one ranking.

Two methods, both measured on the dev sets (BENCHMARKS.md):

- ``reciprocal_rank_fusion`` (RRF, Cormack et al. 2009) scores a document by
  ``sum_i w_i / (c + rank_i)`` over the lists it appears in. It needs only ranks, so BM25's
  unbounded scores and cosines never meet on one scale; but it also throws away *how much* one
  retriever prefers its first hit, which is what decides most disagreements.
- ``z_score_fusion`` scores every candidate (the union of each retriever's top N) by both
  retrievers, standardises each retriever's scores over the candidates (z-scores: mean 0, unit
  spread, per query), and ranks by their weighted sum. A hit far above the rest of its list
  keeps that margin. This is the default (``index/hybrid.py``): better than RRF on both dev sets.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

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


def z_score_fusion(
    candidates: Sequence[int], scores: Sequence[np.ndarray], weights: Sequence[float]
) -> list[tuple[int, float]]:
    """(candidate, fused score), best first: the weighted sum of each score array's z-scores over
    the candidates (``scores[i][j]`` is retriever i's score of candidate j); ties keep the given order."""
    if len(scores) != len(weights):
        raise ValueError(f"{len(weights)} weights for {len(scores)} score arrays")
    total = np.zeros(len(candidates))
    for values, weight in zip(scores, weights, strict=True):
        total += weight * z_scores(values)
    return [(candidates[i], float(total[i])) for i in np.argsort(-total, kind="stable")]


def z_scores(values: Sequence[float] | np.ndarray) -> np.ndarray:
    """(value - mean) / standard deviation; all zeros when the values do not spread."""
    values = np.asarray(values, dtype=np.float64)
    spread = values.std() if len(values) else 0.0
    return (values - values.mean()) / spread if spread > 0 else np.zeros_like(values)
