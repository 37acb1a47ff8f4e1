"""FAISS inner-product index keyed by PMID (``IndexIDMap2`` over a flat index).

Flat search is exact and, at demo and single-lab scale (up to a few hundred thousand
abstracts), fast enough on a CPU. One such index is one *segment* of a generation's vectors
(``index/segments.py``: written once, never edited, shared between generations by hard links);
the segments are the canonical copy of every vector: approximate indexes for larger collections
(``index/ann.py``, ``index/ann_segments.py``) are derived from them, and exact scores of their
hits are read back from them.
Loading it memory-mapped (``mmap=True``, FAISS's ``IO_FLAG_MMAP_IFC``) leaves the vectors in the
page cache, not the heap; only the id map and its reverse map are read into memory. (FAISS's
``IO_FLAG_MMAP`` maps IVF lists only: with it, a flat index is read whole into RAM.)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


class VectorIndex:
    def __init__(self, index, *, mapped: bool = False) -> None:
        self.index = index
        self.mapped = mapped  # FAISS aborts the process (not an exception) on writing a mapped index

    @classmethod
    def create(cls, dim: int) -> VectorIndex:
        import faiss

        return cls(faiss.IndexIDMap2(faiss.IndexFlatIP(dim)))

    @classmethod
    def load(cls, path: Path, *, mmap: bool = False) -> VectorIndex:
        import faiss

        return cls(faiss.read_index(str(path), faiss.IO_FLAG_MMAP_IFC if mmap else 0), mapped=mmap)

    @property
    def dim(self) -> int:
        return self.index.d

    def __len__(self) -> int:
        return self.index.ntotal

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        self._check_writable()
        self.index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), ids.astype(np.int64))

    def remove(self, ids: np.ndarray) -> int:
        import faiss

        if len(ids) == 0:
            return 0
        self._check_writable()
        return int(self.index.remove_ids(faiss.IDSelectorBatch(ids.astype(np.int64))))

    def search(self, query: np.ndarray, k: int, *, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Scores and PMIDs of the ``k`` nearest vectors to each query row (-1 where fewer exist);
        ``allowed`` (PMIDs) restricts the search to those vectors, as a filter does."""
        query = np.ascontiguousarray(query, dtype=np.float32)
        if allowed is None:
            return self.index.search(query, k)
        return self.index.search(query, k, params=search_params(allowed))

    def vectors(self, ids: np.ndarray) -> np.ndarray:
        """The stored vectors of ``ids`` (each must be present), one row each."""
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        return self.index.reconstruct_batch(ids) if len(ids) else np.zeros((0, self.dim), dtype=np.float32)

    def ids(self) -> np.ndarray:
        """Every stored PMID, in storage order."""
        import faiss

        return faiss.vector_to_array(self.index.id_map).astype(np.int64)

    def batches(self, size: int = 100_000):
        """(PMIDs, vectors) of every stored vector in blocks of ``size``, in storage order."""
        import faiss

        ids, inner = self.ids(), faiss.downcast_index(self.index.index)
        for start in range(0, len(ids), size):
            block = ids[start : start + size]
            yield block, inner.reconstruct_n(start, len(block))

    def _check_writable(self) -> None:
        if self.mapped:
            raise ValueError("a memory-mapped vector index is read-only; load it with mmap=False to change it")

    def save(self, path: Path) -> None:
        import faiss

        faiss.write_index(self.index, str(path))


def search_params(allowed: np.ndarray, **kwargs: object):
    """FAISS search parameters that admit only the ``allowed`` ids (``kwargs``: e.g. ``nprobe``)."""
    import faiss

    selector = faiss.IDSelectorBatch(np.ascontiguousarray(allowed, dtype=np.int64))
    kind = faiss.SearchParametersIVF if "nprobe" in kwargs else faiss.SearchParameters
    params = kind(sel=selector, **kwargs)
    params.keep = selector  # the SWIG object holds a raw pointer: keep the selector alive with it
    return params
