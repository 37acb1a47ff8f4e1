"""An encoder whose vectors are kept by text hash in a file, so benchmark reruns embed nothing twice.

Encoding the evaluation corpora is most of a retrieval benchmark's run time on a CPU, and the
vectors depend only on the model and the text. The cache is ``index/vector_cache.py``'s SQLite
file (raw float32, nothing unpickled); its identity is the model's name, so a cache made by
another model is emptied rather than mixed in.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from config import Config
from index.chunking import long_text_encoder
from index.encoder import MINILM_ID, Encoder, load_encoder
from index.vector_cache import VectorCache


class CachedEncoder:
    """``inner``'s vectors, kept by text hash in a ``VectorCache`` file so a rerun embeds nothing twice."""

    def __init__(self, inner: Encoder, path: Path) -> None:
        self.inner, self.name, self.dim = inner, inner.name, inner.dim
        self.cache = VectorCache(path, f"{inner.name}|benchmark")
        self.encoded = 0  # texts actually sent to the model

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        hashes = [hashlib.sha256(t.encode("utf-8")).hexdigest()[:32] for t in texts]
        missing = list(dict.fromkeys(h for h in hashes if not self.cache.has_all([h])))
        if missing:
            text_of = dict(zip(hashes, texts, strict=True))
            self.cache.put(missing, self.inner.encode([text_of[h] for h in missing]))
            self.encoded += len(missing)
        return self.cache.get(hashes, self.dim)


def minilm(config: Config, cache: Path | None) -> Encoder:
    """The packaged MiniLM as the project ingests with it (long texts pooled), cached when asked."""
    encoder = long_text_encoder(
        load_encoder(MINILM_ID, max_seq_length=config.max_seq_length, batch_size=config.batch_size)
    )
    return CachedEncoder(encoder, cache) if cache else encoder
