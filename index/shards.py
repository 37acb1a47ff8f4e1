"""Embedding shards: vectors computed away from the index (on a Ray cluster), as Parquet files.

A distributed ingest (``index/distributed.py``) embeds texts on many workers, and each worker
writes its vectors to a shard folder that may be local (a file system every node mounts) or
object storage (``s3://``, ``gs://``, ... through pyarrow's file systems). A shard is a Parquet
file of plain columns, so reading one never executes or unpickles anything:

- ``text_hash``: ``ingest.records.text_hash`` of the embedded text (what ``Article.text_hash`` is)
- ``vector``: float32, fixed width (the encoder's dimension), L2-normalised
- ``encoder``, ``backend``, ``max_seq_length``: what the vector depends on besides its text (the
  model, what ran it: torch or ONNX, and the token limit), as in the index manifest

The shards are merged by the single-machine writer through a ``PrecomputedEncoder``: an
``Encoder`` whose ``encode(texts)`` looks each text's vector up by its hash, and fails loudly if
one is missing, so a merge can never quietly embed on the driver or index a wrong vector.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np

from index.encoder import EncoderUnavailable
from ingest.records import text_hash

log = logging.getLogger(__name__)

SUFFIX = ".parquet"
_KEY_COLUMNS = ["text_hash", "encoder", "backend", "max_seq_length"]


class MissingVectors(EncoderUnavailable):
    """A text to index has no vector in the shards."""


def shard_table(hashes: Sequence[str], vectors: np.ndarray, *, encoder: str, backend: str, max_seq_length: int):
    """One batch of vectors as an Arrow table in the shard format."""
    import pyarrow as pa

    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    n, dim = vectors.shape
    return pa.table(
        {
            "text_hash": pa.array(list(hashes), pa.string()),
            "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), dim),
            "encoder": pa.array([encoder] * n, pa.string()),
            "backend": pa.array([backend] * n, pa.string()),
            "max_seq_length": pa.array([max_seq_length] * n, pa.int32()),
        }
    )


class PrecomputedEncoder:
    """An ``Encoder`` that computes nothing: each text's vector comes from the shards, by text hash."""

    def __init__(self, name: str, dim: int, hashes: Sequence[str], vectors: np.ndarray, *, backend: str) -> None:
        self.name, self.dim, self.backend = name, dim, backend
        self._rows = {h: row for row, h in enumerate(hashes)}
        self._vectors = vectors

    def __len__(self) -> int:
        return len(self._rows)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        rows = [self._rows.get(text_hash(text), -1) for text in texts]
        missing = rows.count(-1)
        if missing:
            raise MissingVectors(
                f"{missing} of {len(rows)} texts have no vector in the Ray shards (was the index or a source "
                "file changed while the Ray job ran?); run the same command again: it embeds only what is missing"
            )
        return self._vectors[np.asarray(rows, dtype=np.int64)].reshape(len(rows), self.dim)


class ShardDir:
    """A folder of shards on local disk or object storage."""

    def __init__(self, uri: str | Path) -> None:
        from pyarrow import fs

        self.uri = str(uri)
        if "://" in self.uri:
            self.filesystem, self.path = fs.FileSystem.from_uri(self.uri)
        else:
            self.filesystem, self.path = fs.LocalFileSystem(), str(Path(self.uri).expanduser().resolve())

    @property
    def is_local(self) -> bool:
        from pyarrow import fs

        return isinstance(self.filesystem, fs.LocalFileSystem)

    def files(self) -> list[str]:
        """Every shard file (none if the folder does not exist yet)."""
        from pyarrow import fs

        selector = fs.FileSelector(self.path, recursive=True, allow_not_found=True)
        infos = self.filesystem.get_file_info(selector)
        return sorted(i.path for i in infos if i.type == fs.FileType.File and i.path.endswith(SUFFIX))

    def hashes(self, *, max_seq_length: int, encoder: tuple[str, str] | None = None) -> set[str]:
        """Hashes of the texts already embedded here (an interrupted run's work, reused on resume)
        with ``encoder`` (name, backend; any if None) at ``max_seq_length``."""
        found: set[str] = set()
        for _, table in self._tables(_KEY_COLUMNS):
            table = _matching(table, max_seq_length, encoder)
            found.update(table.column("text_hash").to_pylist())
        return found

    def encoder(
        self, *, max_seq_length: int, encoder: tuple[str, str] | None = None
    ) -> tuple[PrecomputedEncoder | None, list[str]]:
        """Every vector here made with ``encoder`` (name, backend; any one if None) at
        ``max_seq_length``, as a ``PrecomputedEncoder`` (None if there are none), and their files."""
        import pyarrow as pa

        tables, used = [], []
        for path, table in self._tables([*_KEY_COLUMNS, "vector"]):
            table = _matching(table, max_seq_length, encoder)
            if table.num_rows:
                tables.append(table.select(["text_hash", "vector", "encoder", "backend"]))
                used.append(path)
        if not tables:
            return None, used
        table = pa.concat_tables(tables).combine_chunks()
        kinds = set(zip(table.column("encoder").to_pylist(), table.column("backend").to_pylist(), strict=True))
        if len(kinds) > 1:
            raise ValueError(
                f"{self.uri} holds vectors of several encoders ({', '.join(sorted(map(' on '.join, kinds)))}); "
                "empty it or give another --shard-dir"
            )
        (name, backend), column = kinds.pop(), table.column("vector").chunk(0)
        dim = column.type.list_size
        vectors = column.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False).reshape(-1, dim)
        hashes = table.column("text_hash").to_pylist()
        return PrecomputedEncoder(name, dim, hashes, vectors, backend=backend), used

    def remove(self, files: Iterable[str]) -> None:
        """Delete these shards (and the folder, if local and left empty)."""
        for path in files:
            self.filesystem.delete_file(path)
        folder = Path(self.path)
        if self.is_local and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()

    def _tables(self, columns: list[str]) -> Iterator[tuple[str, object]]:
        """(path, table) of every readable shard; a file cut short by a crash is skipped (its texts
        are embedded again)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        for path in self.files():
            try:
                yield path, pq.read_table(path, columns=columns, filesystem=self.filesystem)
            except (pa.ArrowInvalid, OSError) as exc:
                log.warning("Ignoring unreadable shard %s: %s", path, exc)


def _matching(table, max_seq_length: int, encoder: tuple[str, str] | None):
    import pyarrow.compute as pc

    keep = pc.equal(table.column("max_seq_length"), max_seq_length)
    if encoder is not None:
        keep = pc.and_(keep, pc.equal(table.column("encoder"), encoder[0]))
        keep = pc.and_(keep, pc.equal(table.column("backend"), encoder[1]))
    return table.filter(keep)
