"""Approximate vector search for large indexes: HNSW or IVF-PQ, derived from the flat index.

The flat ``IndexIDMap2`` in ``vectors.faiss`` stays the canonical, editable copy of every vector
(ingest replaces and deletes in it). When an index grows past what exact search serves quickly,
each ingest also derives ``ann.faiss`` from it (``build_ann``), and searches go there:

- ``hnsw``: a graph over the full vectors (``IndexHNSWFlat``, M=32). Recall close to exact and
  fast, but it holds the full vectors plus the graph, so it saves time, not memory.
- ``ivfpq``: vectors quantised to ``PQ_BYTES`` bytes in ``nlist`` k-means cells; a query scans
  ``NPROBE`` cells. About ``PQ_BYTES + 8`` bytes per abstract in memory. The codes alone lose
  some of the true top 10, so ``REFINE`` times more candidates are rescored exactly from the flat
  vectors, which are memory-mapped: only the candidates' pages are read.

Both are one small backend behind the same three calls (``build``, ``search``, ``save``/``load``),
chosen by ``--index-type`` or, with ``auto``, by collection size (``choose_kind``). ANN indexes
are rebuilt from the flat one at every ingest (train + add); BENCHMARKS.md has the 1M timing and
the projection to all of PubMed. Loaded with ``faiss.IO_FLAG_MMAP``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np

from index.manifest import Manifest
from index.vectors import VectorIndex, search_params

log = logging.getLogger(__name__)

ANN_FILE = "ann.faiss"
KINDS = ("auto", "flat", "hnsw", "ivfpq")
AUTO_ANN_FROM = 500_000  # exact flat search costs ~60 ms CPU per query at 1M (384-d): ~30 ms here
HNSW_M, HNSW_EF_CONSTRUCTION, HNSW_EF_SEARCH = 32, 80, 128
PQ_BYTES = 64  # code size per vector; with the 8-byte id, ~72 bytes per abstract
NPROBE = 64  # cells scanned per query (of ~sqrt(N)): ~6% of the vectors at 1M, ~1.5% at 24M
REFINE = 10  # candidates rescored exactly per requested hit
IVFPQ_MIN_VECTORS = 40_000  # k-means needs ~39 points per cell and PQ 256 per code word; fewer -> flat
_TRAIN_PER_CELL = 64  # training vectors per k-means cell (FAISS warns below 39)
_ADD_BATCH = 100_000  # vectors copied from the flat index at a time while building

Exact = Callable[[np.ndarray], np.ndarray]  # PMIDs -> their exact vectors


def check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise ValueError(f"unknown index type {kind!r}: choose one of {', '.join(KINDS)}")
    return kind


def choose_kind(count: int, requested: str = "auto") -> str:
    """``flat``, ``hnsw`` or ``ivfpq`` for an index of ``count`` vectors."""
    kind = check_kind(requested)
    if kind == "auto":
        kind = "ivfpq" if count >= AUTO_ANN_FROM else "flat"
    if kind == "ivfpq" and count < IVFPQ_MIN_VECTORS:
        log.info("%d vectors are too few to train IVF-PQ (needs %d); searching exactly.", count, IVFPQ_MIN_VECTORS)
        return "flat"
    return kind


def nlist_for(count: int) -> int:
    """Cells: about sqrt(N), a power of two, at least 64. FAISS suggests 4-16 * sqrt(N) for speed, but
    k-means cost grows with cells x training points (>= 39 per cell): sqrt(N) trains 1M vectors in
    about a minute on 2 cores, and the exact rescoring recovers what coarser cells cost in recall."""
    return max(64, 2 ** round(math.log2(math.sqrt(max(count, 1)))))


def pq_bytes_for(dim: int, wanted: int = PQ_BYTES) -> int:
    """The largest sub-quantiser count <= ``wanted`` that divides ``dim`` (PQ splits it evenly),
    keeping at least 4 dimensions per sub-quantiser (fewer code a dimension at a time, wastefully)."""
    return max(m for m in range(1, max(1, min(wanted, dim // 4)) + 1) if dim % m == 0)


class AnnIndex:
    """An approximate index over PMIDs; ``exact`` rescoring applies to IVF-PQ."""

    def __init__(self, index, kind: str, *, exact: Exact | None = None) -> None:
        self.index, self.kind, self.exact = index, kind, exact
        self.nprobe, self.ef_search, self.refine = NPROBE, HNSW_EF_SEARCH, REFINE

    def __len__(self) -> int:
        return self.index.ntotal

    def search(self, query: np.ndarray, k: int, *, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Scores and PMIDs like ``VectorIndex.search`` (one query row)."""
        import faiss

        query = np.ascontiguousarray(query, dtype=np.float32)
        fetch = k * self.refine if self.kind == "ivfpq" and self.exact else k
        if self.kind == "ivfpq":
            faiss.extract_index_ivf(self.index).nprobe = self.nprobe
        else:
            faiss.downcast_index(self.index.index).hnsw.efSearch = max(self.ef_search, fetch)
        extra = {"nprobe": self.nprobe} if self.kind == "ivfpq" else {}
        params = search_params(allowed, **extra) if allowed is not None else None
        scores, ids = self.index.search(query, fetch, params=params)
        if fetch == k:
            return scores, ids
        return _rescore(query, ids[0], k, self.exact)

    def save(self, path: Path) -> None:
        import faiss

        faiss.write_index(self.index, str(path))

    @classmethod
    def load(cls, path: Path, kind: str, *, exact: Exact | None = None) -> AnnIndex:
        import faiss

        return cls(faiss.read_index(str(path), faiss.IO_FLAG_MMAP), kind, exact=exact)


def _rescore(query: np.ndarray, ids: np.ndarray, k: int, exact: Exact) -> tuple[np.ndarray, np.ndarray]:
    ids = ids[ids >= 0]
    scores = exact(ids) @ query[0] if len(ids) else np.zeros(0, dtype=np.float32)
    order = np.argsort(-scores, kind="stable")[:k]
    out_scores = np.full((1, k), -np.inf, dtype=np.float32)
    out_ids = np.full((1, k), -1, dtype=np.int64)
    out_scores[0, : len(order)], out_ids[0, : len(order)] = scores[order], ids[order]
    return out_scores, out_ids


def build_ann(flat: VectorIndex, kind: str) -> AnnIndex:
    """An HNSW or IVF-PQ index over every vector of ``flat`` (ids = PMIDs)."""
    import faiss

    inner = faiss.downcast_index(flat.index.index)
    ids = faiss.vector_to_array(flat.index.id_map).astype(np.int64)
    if kind == "hnsw":
        index = faiss.IndexHNSWFlat(flat.dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
    elif kind == "ivfpq":
        quantizer = faiss.IndexFlatIP(flat.dim)
        index = faiss.IndexIVFPQ(quantizer, flat.dim, nlist_for(len(ids)), pq_bytes_for(flat.dim), 8)
        index.metric_type = faiss.METRIC_INNER_PRODUCT
        index.train(_sample(inner, len(ids)))
    else:
        raise ValueError(f"no approximate index of type {kind!r}")
    mapped = faiss.IndexIDMap(index)
    for start in range(0, len(ids), _ADD_BATCH):
        stop = min(start + _ADD_BATCH, len(ids))
        mapped.add_with_ids(inner.reconstruct_n(start, stop - start), ids[start:stop])
    return AnnIndex(mapped, kind)


def _sample(inner, count: int) -> np.ndarray:
    """A reproducible, evenly spread training sample of the stored vectors."""
    wanted = max(_TRAIN_PER_CELL * nlist_for(count), 256 * 39)  # PQ's 256 code words need ~10k points too
    rows = np.linspace(0, count - 1, num=min(count, wanted)).astype(np.int64)
    return np.stack([inner.reconstruct(int(r)) for r in np.unique(rows)])


def build_for_generation(generation: Path, flat: VectorIndex, requested: str) -> str:
    """Build (or remove) ``ann.faiss`` for the vectors of a staged generation; the kind built, or ""."""
    kind = choose_kind(len(flat), requested)
    path = generation / ANN_FILE
    path.unlink(missing_ok=True)
    if kind == "flat":
        return ""
    build_ann(flat, kind).save(path)
    return kind


def open_ann(generation: Path, manifest: Manifest, flat: VectorIndex) -> AnnIndex | None:
    """The generation's approximate index, memory-mapped, or None (search the flat index)."""
    if not manifest.ann or not (generation / ANN_FILE).exists():
        return None
    return AnnIndex.load(generation / ANN_FILE, manifest.ann, exact=flat.vectors)
