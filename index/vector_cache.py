"""Embeddings computed by the current ingest, kept on disk so a killed run can resume.

The cache is a small SQLite file inside the staging folder, keyed by the embedded text's hash.
Each encoder call's vectors go in with one transaction, so after ``kill -9`` the file holds
whole calls and nothing half-written (SQLite's journal rolls back an interrupted transaction).
The next run of the same ingest adopts the file from the dead run's staging folder (see
``IndexDir.begin``) and re-encodes only what is missing. A clean failure deletes the staging
folder with the cache in it, so the index directory is left exactly as it was.

Vectors are raw little-endian float32 bytes read back with ``numpy.frombuffer``; nothing in the
file is ever executed or unpickled. The ``identity`` (encoder id, dimension, token limit) is
stored too: a cache made by another encoder is emptied rather than mixed in.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

CACHE = "embeddings.sqlite"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS vectors (text_hash TEXT PRIMARY KEY, vector BLOB NOT NULL);
"""


class VectorCache:
    def __init__(self, path: Path, identity: str) -> None:
        self.path = Path(path)
        self.db = _open(self.path)
        stored = self.db.execute("SELECT value FROM meta WHERE key = 'identity'").fetchone()
        if stored is not None and stored[0] != identity:
            self.db.execute("DELETE FROM vectors")
        self.db.execute("INSERT OR REPLACE INTO meta VALUES ('identity', ?)", (identity,))
        self.db.commit()

    def __len__(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM vectors").fetchone()[0]

    def has_all(self, hashes: Sequence[str]) -> bool:
        return bool(hashes) and len(self._known(hashes)) == len(set(hashes))

    def put(self, hashes: Sequence[str], vectors: np.ndarray) -> None:
        """Store one encoder call's vectors in a single transaction."""
        rows = ((h, np.ascontiguousarray(v, dtype="<f4").tobytes()) for h, v in zip(hashes, vectors, strict=True))
        with self.db:
            self.db.executemany("INSERT OR REPLACE INTO vectors VALUES (?, ?)", rows)

    def get(self, hashes: Sequence[str], dim: int) -> np.ndarray:
        """The vectors of ``hashes``, in order; a missing one is a ``KeyError``."""
        found: dict[str, bytes] = {}
        for chunk in _chunks(list(dict.fromkeys(hashes)), 500):  # stay under SQLite's parameter limit
            marks = ",".join("?" * len(chunk))
            found.update(self.db.execute(f"SELECT text_hash, vector FROM vectors WHERE text_hash IN ({marks})", chunk))
        out = np.empty((len(hashes), dim), dtype=np.float32)
        for row, text_hash in enumerate(hashes):
            out[row] = np.frombuffer(found[text_hash], dtype="<f4", count=dim)
        return out

    def close(self) -> None:
        self.db.close()

    def _known(self, hashes: Iterable[str]) -> set[str]:
        known: set[str] = set()
        for chunk in _chunks(list(set(hashes)), 500):
            marks = ",".join("?" * len(chunk))
            known.update(
                h for (h,) in self.db.execute(f"SELECT text_hash FROM vectors WHERE text_hash IN ({marks})", chunk)
            )
        return known


def _open(path: Path) -> sqlite3.Connection:
    """Open (or start afresh, if a crash left it unreadable) the cache file."""
    try:
        db = sqlite3.connect(path, check_same_thread=False)
        db.executescript(_SCHEMA)
    except sqlite3.DatabaseError:
        path.unlink(missing_ok=True)
        db = sqlite3.connect(path, check_same_thread=False)
        db.executescript(_SCHEMA)
    return db  # default synchronous=FULL: one fsync per encoder call is noise next to the encoding


def _chunks(items: list[str], size: int) -> Iterable[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
