"""Approximate vector search for large indexes: HNSW or IVF-PQ, derived from the flat index.

The flat vector segments (``index/segments.py``) stay the canonical copy of every vector. When an
index grows past what exact search serves quickly, each ingest also derives an approximate index
from them (``build_ann``), and searches go there:

- ``hnsw``: a graph over the full vectors (``IndexHNSWFlat``, M=32). Recall close to exact and
  fast, but it holds the full vectors plus the graph, so it saves time, not memory.
- ``ivfpq``: vectors quantised to ``PQ_BYTES`` bytes in ``nlist`` k-means cells; a query scans
  ``NPROBE`` cells. About ``PQ_BYTES + 8`` bytes per abstract in memory. The codes alone lose
  some of the true top 10, so ``REFINE`` times more candidates are rescored exactly from the flat
  vectors, which are memory-mapped: only the candidates' pages are read.

Both are one small backend behind the same three calls (``build``, ``search``, ``save``/``load``),
chosen by ``--index-type`` or, with ``auto``, by collection size (``choose_kind``).

An ingest now keeps IVF-PQ per vector segment (``index/ann_segments.py``: one training, each
segment encoded once); the single-file update below is what it replaced, kept for the benchmarks
and for reading indexes written before. IVF-PQ is carried forward between generations
(``update_ivfpq``): training (k-means on a sample,
then encoding every vector) costs about an hour at 24M abstracts, while a daily update file
changes a few thousand. An ingest copies the live generation's trained index into RAM, removes
the PMIDs whose vectors went (deleted or replaced), adds the new vectors with their PMIDs as ids,
and writes the result as the new generation's own ``ann.faiss``; the live file is only read, so
the atomic-generation and kill -9 guarantees of ``index/storage.py`` hold unchanged. It is
re-trained from scratch (``needs_training`` says why) when there is no trained index of the same
kind and dimension to start from, when the ingest cannot say which vectors changed, when more
vectors were added since training than it was trained on (``RETRAIN_AFTER``: cells and codebooks
fitted to half of the data), or when the collection shrank below half of it. The record of the
training sits next to the index (``ann.json``). HNSW is rebuilt at every ingest (FAISS's HNSW
cannot remove vectors). BENCHMARKS.md has the timings at 1M and the capacity table for all of
PubMed.

Serving memory: the IVF-PQ file is opened with ``faiss.IO_FLAG_MMAP``, which FAISS serves through
read-only ``OnDiskInvertedLists`` over the file itself: codes and ids stay in the page cache, not
the heap. HNSW is opened with ``IO_FLAG_MMAP_IFC`` (its full vectors mapped, its graph in RAM).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from index.manifest import Manifest
from index.vectors import VectorIndex, search_params

log = logging.getLogger(__name__)

ANN_FILE = "ann.faiss"
TRAINING_FILE = "ann.json"  # how and on how many vectors ann.faiss was trained (``Training``)
KINDS = ("auto", "flat", "hnsw", "ivfpq")
AUTO_ANN_FROM = 500_000  # exact flat search costs ~60 ms CPU per query at 1M (384-d): ~30 ms here
HNSW_M, HNSW_EF_CONSTRUCTION, HNSW_EF_SEARCH = 32, 80, 128
PQ_BYTES = 64  # code size per vector; with the 8-byte id, ~72 bytes per abstract
NPROBE = 64  # cells scanned per query (of ~sqrt(N)): ~6% of the vectors at 1M, ~1.5% at 24M
REFINE = 10  # candidates rescored exactly per requested hit
IVFPQ_MIN_VECTORS = 40_000  # k-means needs ~39 points per cell and PQ 256 per code word; fewer -> flat
RETRAIN_AFTER = 1.0  # retrain once the vectors added since training exceed this x those trained on
RETRAIN_BELOW = 0.5  # ... or the collection shrank below this x its size at training
_TRAIN_PER_CELL = 64  # training vectors per k-means cell (FAISS warns below 39)
_ADD_BATCH = 100_000  # vectors copied from the flat index at a time while building

Exact = Callable[[np.ndarray], np.ndarray]  # PMIDs -> their exact vectors


@dataclass(frozen=True)
class VectorChanges:
    """What an ingest did to the flat index: PMIDs whose old vector it removed (deleted, replaced
    or re-embedded) and PMIDs whose vector it added (new or re-embedded)."""

    removed: np.ndarray
    added: np.ndarray


@dataclass
class Training:
    """The record kept next to ``ann.faiss``: what the index was trained on, to decide when to retrain."""

    kind: str
    dim: int
    nlist: int
    pq_bytes: int
    trained_on: int  # vectors in the collection when the quantisers were trained
    added_since: int = 0  # vectors added incrementally since then
    trained_at: str = ""

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> Training | None:
        try:
            return cls(**json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError):
            return None  # absent (an index built before this record existed) or unreadable: retrain


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

    def __init__(self, index, kind: str, *, exact: Exact | None = None, training: Training | None = None) -> None:
        self.index, self.kind, self.exact, self.training = index, kind, exact, training
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
        """``ann.faiss`` and, for IVF-PQ, its training record beside it."""
        import faiss

        faiss.write_index(self.index, str(path))
        if self.training is not None:
            self.training.save(path.with_name(TRAINING_FILE))

    @classmethod
    def load(cls, path: Path, kind: str, *, exact: Exact | None = None) -> AnnIndex:
        """Memory-mapped: IVF lists through FAISS's read-only on-disk lists, HNSW vectors mapped."""
        import faiss

        flags = faiss.IO_FLAG_MMAP if kind == "ivfpq" else faiss.IO_FLAG_MMAP_IFC
        return cls(faiss.read_index(str(path), flags), kind, exact=exact)


def _rescore(query: np.ndarray, ids: np.ndarray, k: int, exact: Exact) -> tuple[np.ndarray, np.ndarray]:
    ids = ids[ids >= 0]
    scores = exact(ids) @ query[0] if len(ids) else np.zeros(0, dtype=np.float32)
    order = np.argsort(-scores, kind="stable")[:k]
    out_scores = np.full((1, k), -np.inf, dtype=np.float32)
    out_ids = np.full((1, k), -1, dtype=np.int64)
    out_scores[0, : len(order)], out_ids[0, : len(order)] = scores[order], ids[order]
    return out_scores, out_ids


def build_ann(flat: VectorIndex, kind: str) -> AnnIndex:
    """An HNSW or IVF-PQ index over every vector of ``flat`` (ids = PMIDs), trained from scratch."""
    if kind == "hnsw":
        return build_hnsw(flat)
    if kind == "ivfpq":
        return add_all(train_ivfpq(flat), flat)
    raise ValueError(f"no approximate index of type {kind!r}")


def build_hnsw(flat: VectorIndex) -> AnnIndex:
    import faiss

    index = faiss.IndexHNSWFlat(flat.dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
    mapped = faiss.IndexIDMap(index)  # HNSW stores no ids of its own
    for ids, vectors in flat.batches(_ADD_BATCH):
        mapped.add_with_ids(vectors, ids)
    return AnnIndex(mapped, "hnsw")


def train_ivfpq(flat: VectorIndex) -> AnnIndex:
    """An empty IVF-PQ index whose cells and codebooks are fitted to a sample of ``flat``: the
    expensive step that ``update_ivfpq`` avoids repeating."""
    import faiss

    count, nlist, pq_bytes = len(flat), nlist_for(len(flat)), pq_bytes_for(flat.dim)
    index = faiss.IndexIVFPQ(faiss.IndexFlatIP(flat.dim), flat.dim, nlist, pq_bytes, 8)
    index.metric_type = faiss.METRIC_INNER_PRODUCT
    index.train(_sample(flat, count))
    training = Training("ivfpq", flat.dim, nlist, pq_bytes, trained_on=count, trained_at=_now())
    return AnnIndex(index, "ivfpq", training=training)


def add_all(ann: AnnIndex, flat: VectorIndex) -> AnnIndex:
    """Encode every vector of ``flat`` into the trained, empty ``ann`` (IVF stores the PMIDs itself)."""
    for ids, vectors in flat.batches(_ADD_BATCH):
        ann.index.add_with_ids(vectors, ids)
    return ann


def update_ivfpq(ann: AnnIndex, flat: VectorIndex, changes: VectorChanges) -> AnnIndex:
    """Apply an ingest's ``changes`` to a trained IVF-PQ index loaded into memory (not mapped):
    remove every changed PMID, then add the new vectors read back from ``flat``."""
    import faiss

    gone = np.union1d(changes.removed, changes.added).astype(np.int64)  # no PMID may be listed twice
    if len(gone):
        ann.index.remove_ids(faiss.IDSelectorBatch(gone))
    added = np.asarray(changes.added, dtype=np.int64)
    for start in range(0, len(added), _ADD_BATCH):
        ids = added[start : start + _ADD_BATCH]
        ann.index.add_with_ids(flat.vectors(ids), ids)
    assert ann.training is not None
    ann.training.added_since += len(added)
    return ann


def needs_training(previous: Training | None, flat: VectorIndex, changes: VectorChanges | None) -> str:
    """Why the IVF-PQ index must be trained from scratch, or "" when the previous one can be updated."""
    if previous is None:
        return "no trained IVF-PQ index in the live generation"
    if previous.kind != "ivfpq" or previous.dim != flat.dim:
        return f"the live index is {previous.kind} of dimension {previous.dim}"
    if changes is None:
        return "the ingest did not say which vectors changed"
    if previous.added_since + len(changes.added) > RETRAIN_AFTER * previous.trained_on:
        return f"more vectors added since training than the {previous.trained_on} it was trained on"
    if len(flat) < RETRAIN_BELOW * previous.trained_on:
        return f"the collection shrank to {len(flat)} from {previous.trained_on} at training"
    return ""


def _sample(flat: VectorIndex, count: int) -> np.ndarray:
    """A reproducible, evenly spread training sample of the stored vectors."""
    wanted = max(_TRAIN_PER_CELL * nlist_for(count), 256 * 39)  # PQ's 256 code words need ~10k points too
    rows = np.linspace(0, count - 1, num=min(count, wanted)).astype(np.int64)
    return flat.vectors(flat.ids()[np.unique(rows)])


def build_for_generation(
    generation: Path,
    flat: VectorIndex,
    requested: str,
    *,
    previous: Path | None = None,
    changes: VectorChanges | None = None,
) -> str:
    """Write ``ann.faiss`` (or none) for the vectors of a staged generation; the kind built, or "".

    IVF-PQ starts from the ``previous`` (live) generation's trained index when ``needs_training``
    allows, applying ``changes``; that file is only read, so the live generation stays intact."""
    kind = choose_kind(len(flat), requested)
    path = generation / ANN_FILE
    path.unlink(missing_ok=True)
    path.with_name(TRAINING_FILE).unlink(missing_ok=True)
    if kind == "flat":
        return ""
    if kind == "ivfpq":
        _ivfpq_for_generation(flat, previous, changes).save(path)
    else:
        build_ann(flat, kind).save(path)
    return kind


def _ivfpq_for_generation(flat: VectorIndex, previous: Path | None, changes: VectorChanges | None) -> AnnIndex:
    import faiss

    trained = Training.load(previous / TRAINING_FILE) if previous and (previous / ANN_FILE).exists() else None
    reason = needs_training(trained, flat, changes)
    if not reason:
        assert previous is not None and trained is not None and changes is not None
        old = AnnIndex(faiss.read_index(str(previous / ANN_FILE)), "ivfpq", training=trained)  # a copy in RAM
        updated = update_ivfpq(old, flat, changes)
        if len(updated) == len(flat):
            log.info("IVF-PQ updated: -%d +%d vectors, no retraining.", len(changes.removed), len(changes.added))
            return updated
        reason = f"the updated index holds {len(updated)} vectors, the flat one {len(flat)}"  # never expected
    log.info("Training IVF-PQ on %d vectors: %s.", len(flat), reason)
    return build_ann(flat, "ivfpq")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def open_ann(generation: Path, manifest: Manifest, flat: VectorIndex) -> AnnIndex | None:
    """The generation's approximate index, memory-mapped, or None (search the flat index)."""
    if not manifest.ann or not (generation / ANN_FILE).exists():
        return None
    return AnnIndex.load(generation / ANN_FILE, manifest.ann, exact=flat.vectors)
