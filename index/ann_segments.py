"""IVF-PQ over segmented vectors: one IVF-PQ file per vector segment, all sharing one training.

A single ``ann.faiss`` over every vector had to be read into RAM, edited (``remove_ids`` /
``add_with_ids``) and written whole at every ingest: ~1.7 GB at 24M abstracts for a 30,000-record
update. Here the trained, empty index (coarse cells and PQ codebooks, a few MB) is stored once as
``ann-trained.faiss``; each vector segment (``index/segments.py``) has its own IVF-PQ file, encoded
with that training when the segment is written (``ann.faiss`` for ``vectors.faiss``,
``ann-NNNNNN.faiss`` for ``vectors-NNNNNN.faiss``), and hard-linked, like the segment, into every
later generation. An ingest encodes only its new segment and the segments a merge wrote.

A query searches every segment's file (``NPROBE`` cells each, dead vectors excluded by a FAISS id
selector), pools the ``REFINE`` x k candidates of each and rescores them exactly from the flat
vectors: the pool is a superset of what one file over the same vectors would return, so recall
is not lower. Retraining follows ``ann.needs_training`` unchanged (it then re-encodes every
segment: the hour-long path at 24M, taken when the collection has doubled since training).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from index import ann
from index.ann import REFINE, AnnIndex, Training, VectorChanges, choose_kind, needs_training
from index.segments import FIRST, Segment, SegmentedVectors, SegmentWrite, link, live_params, segment_batches

log = logging.getLogger(__name__)

TEMPLATE = "ann-trained.faiss"


def ann_file(segment: str) -> str:
    """The IVF-PQ file of a vector segment."""
    return ann.ANN_FILE if segment == FIRST else "ann-" + segment.removesuffix(".faiss").split("-")[1] + ".faiss"


def build_for_segments(
    staging: Path,
    vectors: SegmentedVectors,
    requested: str,
    *,
    previous: Path | None,
    changes: VectorChanges | None,
    written: SegmentWrite,
) -> str:
    """The approximate index of a staged generation of segments; the kind built, or ""."""
    kind = choose_kind(len(vectors), requested)
    if kind != "ivfpq":  # exact search needs nothing; HNSW cannot remove vectors: rebuilt whole
        return ann.build_for_generation(staging, vectors, kind)
    for stale in (staging / ann.ANN_FILE, staging / ann.TRAINING_FILE, staging / TEMPLATE):
        stale.unlink(missing_ok=True)
    trained = Training.load(previous / ann.TRAINING_FILE) if previous and (previous / TEMPLATE).exists() else None
    reason = needs_training(trained, vectors, changes)
    if reason:
        log.info("Training IVF-PQ on %d vectors: %s.", len(vectors), reason)
        template = ann.train_ivfpq(vectors)
        template.save(staging / TEMPLATE)
        training, to_encode = template.training, vectors.segments
    else:
        assert previous is not None and trained is not None and changes is not None
        link(previous / TEMPLATE, staging / TEMPLATE)
        training, to_encode = trained, []
        for segment in vectors.segments:
            if segment.name in written.created or not (previous / ann_file(segment.name)).exists():
                to_encode.append(segment)
            else:
                link(previous / ann_file(segment.name), staging / ann_file(segment.name))
        training.added_since += len(changes.added)
        log.info("IVF-PQ updated: %d of %d segments encoded, no retraining.", len(to_encode), len(vectors.segments))
    for segment in to_encode:
        _encode(staging, vectors, segment)
    assert training is not None
    training.save(staging / ann.TRAINING_FILE)
    return "ivfpq"


def _encode(staging: Path, vectors: SegmentedVectors, segment: Segment) -> None:
    """The segment's live vectors encoded with the shared training, as its own IVF-PQ file."""
    import faiss

    index = faiss.read_index(str(staging / TEMPLATE))
    for ids, block in segment_batches(vectors.index(segment), segment.dead, 100_000):
        index.add_with_ids(block, ids)
    path = staging / ann_file(segment.name)
    path.unlink(missing_ok=True)
    faiss.write_index(index, str(path))


class SegmentedAnn:
    """IVF-PQ search over every segment's file, candidates pooled and rescored exactly."""

    kind = "ivfpq"

    def __init__(self, generation: Path, vectors: SegmentedVectors) -> None:
        import faiss

        self.vectors = vectors
        self.parts = [
            (segment, faiss.read_index(str(generation / ann_file(segment.name)), faiss.IO_FLAG_MMAP))
            for segment in vectors.segments
        ]
        self.nprobe, self.refine = ann.NPROBE, REFINE

    def __len__(self) -> int:
        return len(self.vectors)

    def search(self, query: np.ndarray, k: int, *, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Scores and PMIDs like ``VectorIndex.search`` (one query row), scores exact."""
        import faiss

        query = np.ascontiguousarray(query, dtype=np.float32)
        fetch, pooled = k * self.refine, []
        for segment, index in self.parts:
            if segment.live == 0:
                continue
            faiss.extract_index_ivf(index).nprobe = self.nprobe
            params = live_params(segment, allowed, nprobe=self.nprobe)
            _, ids = index.search(query, fetch, params=params)
            pooled.append(ids[0][ids[0] >= 0])
        ids = np.unique(np.concatenate(pooled)) if pooled else np.zeros(0, dtype=np.int64)
        return ann._rescore(query, ids, k, self.vectors.vectors)


def open_segmented(generation: Path, vectors: SegmentedVectors) -> SegmentedAnn | AnnIndex | None:
    """The generation's IVF-PQ index over segments, or None when it was not built that way."""
    if not (generation / TEMPLATE).exists():
        return None
    return SegmentedAnn(generation, vectors)
