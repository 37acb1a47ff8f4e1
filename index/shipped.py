"""Vectors shipped with a corpus, so the demo index is built in seconds instead of embedded for minutes.

``data/demo/pubmed_demo.vectors.npz`` holds the packaged all-MiniLM-L6-v2's vectors (torch, the
reference backend) of every text the demo ingest embeds, keyed by the SHA-256 of the text (the
same key as the resume cache), stored as float16 (half the size; cosine differences ~1e-4). An
ingest given ``ShippedVectors`` looks each text up and embeds only what is missing with the real
encoder, which stays loaded for queries: the index records that encoder and backend, exactly as
if it had embedded everything itself. The file is plain arrays read with ``allow_pickle=False``.

``scripts/make_demo_corpus.py --vectors`` writes it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from index.encoder import Encoder
from ingest.records import text_hash

log = logging.getLogger(__name__)


class ShippedVectors:
    """``inner``'s interface (name, dim, backend, tokenizer, token limit) with vectors read from a file first."""

    def __init__(self, inner: Encoder, hashes: Sequence[str], vectors: np.ndarray) -> None:
        self.inner = inner
        self._rows = {h: row for row, h in enumerate(hashes)}
        self._vectors = vectors
        self.embedded = 0  # texts the file did not have, embedded by ``inner``

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        rows = [self._rows.get(text_hash(t), -1) for t in texts]
        out = np.zeros((len(texts), self.inner.dim), dtype=np.float32)
        missing = [i for i, row in enumerate(rows) if row < 0]
        known = [i for i, row in enumerate(rows) if row >= 0]
        if known:
            out[known] = self._vectors[[rows[i] for i in known]].astype(np.float32)
        if missing:
            out[missing] = self.inner.encode([texts[i] for i in missing])
            self.embedded += len(missing)
        return out


def identity(encoder: Encoder) -> str:
    """What the shipped vectors depend on besides the text: encoder, backend, token limit."""
    backend = getattr(encoder, "backend", "torch")
    return f"{encoder.name}|{backend}|{getattr(encoder, 'max_seq_length', '')}"


def load_shipped(path: Path, encoder: Encoder) -> ShippedVectors | None:
    """``encoder`` with the vectors of ``path`` when they were made by the same encoder; else None."""
    if not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as data:
        if str(data["identity"]) != identity(encoder):
            log.info("Not using %s: made by %s, not %s.", path.name, data["identity"], identity(encoder))
            return None
        return ShippedVectors(encoder, [str(h) for h in data["hashes"]], data["vectors"])


def save_shipped(path: Path, encoder: Encoder, hashes: Sequence[str], vectors: np.ndarray) -> None:
    np.savez_compressed(
        path, identity=np.str_(identity(encoder)), hashes=np.asarray(hashes), vectors=vectors.astype(np.float16)
    )


class Recording:
    """An encoder that keeps every (text hash, vector) it computes, to write a shipped-vectors file."""

    def __init__(self, inner: Encoder) -> None:
        self.inner = inner
        self.hashes: list[str] = []
        self.vectors: list[np.ndarray] = []

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        vectors = self.inner.encode(texts)
        self.hashes.extend(text_hash(t) for t in texts)
        self.vectors.append(np.asarray(vectors, dtype=np.float32))
        return vectors
