"""FAISS inner-product index keyed by PMID (``IndexIDMap2`` over a flat index).

Flat search is exact and, at demo and single-lab scale (up to a few hundred thousand
abstracts), fast enough on a CPU; the id map lets records be replaced and deleted in place.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


class VectorIndex:
    def __init__(self, index) -> None:
        self.index = index

    @classmethod
    def create(cls, dim: int) -> VectorIndex:
        import faiss

        return cls(faiss.IndexIDMap2(faiss.IndexFlatIP(dim)))

    @classmethod
    def load(cls, path: Path) -> VectorIndex:
        import faiss

        return cls(faiss.read_index(str(path)))

    @property
    def dim(self) -> int:
        return self.index.d

    def __len__(self) -> int:
        return self.index.ntotal

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        self.index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), ids.astype(np.int64))

    def remove(self, ids: np.ndarray) -> int:
        import faiss

        if len(ids) == 0:
            return 0
        return int(self.index.remove_ids(faiss.IDSelectorBatch(ids.astype(np.int64))))

    def search(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Scores and PMIDs of the ``k`` nearest vectors to each query row (-1 where fewer exist)."""
        return self.index.search(np.ascontiguousarray(query, dtype=np.float32), k)

    def save(self, path: Path) -> None:
        import faiss

        faiss.write_index(self.index, str(path))
