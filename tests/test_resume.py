"""The pieces behind resuming a killed ingest: the vector cache, its adoption by the next run,
crash leftovers, and the background embedder's windows."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest

from index.embedder import BackgroundEmbedder
from index.storage import MANIFEST, METADATA, RESUME_CACHE, IndexDir
from index.vector_cache import VectorCache
from tests.conftest import HashingEncoder


def vectors(n: int, dim: int = 8, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)


def test_cache_round_trips_vectors_exactly(tmp_path):
    cache = VectorCache(tmp_path / RESUME_CACHE, "enc|256")
    data = vectors(600)
    hashes = [f"h{i}" for i in range(600)]
    cache.put(hashes, data)
    assert len(cache) == 600 and cache.has_all(hashes[:10]) and not cache.has_all(["h1", "nope"])
    assert not cache.has_all([])
    order = hashes[::-1] + hashes[:3]  # any order, repeats allowed, more than one 500-key chunk
    np.testing.assert_array_equal(cache.get(order, 8), np.concatenate([data[::-1], data[:3]]))
    with pytest.raises(KeyError):
        cache.get(["nope"], 8)
    cache.close()
    reopened = VectorCache(tmp_path / RESUME_CACHE, "enc|256")
    np.testing.assert_array_equal(reopened.get(hashes, 8), data)


def test_cache_of_another_identity_is_emptied(tmp_path):
    cache = VectorCache(tmp_path / RESUME_CACHE, "enc|256")
    cache.put(["a"], vectors(1))
    cache.close()
    assert len(VectorCache(tmp_path / RESUME_CACHE, "enc|128")) == 0


def test_unreadable_cache_file_is_started_afresh(tmp_path):
    (tmp_path / RESUME_CACHE).write_bytes(b"this is not a database" * 100)
    cache = VectorCache(tmp_path / RESUME_CACHE, "enc|256")
    assert len(cache) == 0
    cache.put(["a"], vectors(1))
    assert cache.has_all(["a"])


def test_begin_adopts_the_newest_dead_runs_cache_and_removes_leftovers(tmp_path):
    layout = IndexDir(tmp_path / "index")
    old, new = layout.root / ".staging-aaaa", layout.root / ".staging-bbbb"
    for number, folder in enumerate((old, new)):
        folder.mkdir(parents=True)
        cache = VectorCache(folder / RESUME_CACHE, "enc|256")
        cache.put([f"from-{folder.name}"], vectors(1, seed=number))
        cache.close()
    (layout.root / ".staging-cccc").mkdir()  # a dead run that never got to embed
    (layout.root / "gen-000003").mkdir()  # renamed into place but never CURRENT
    (layout.root / ".CURRENT-1234").write_text("gen-000003\n")
    staging = layout.begin()
    assert sorted(p.name for p in layout.root.iterdir()) == [staging.name]
    adopted = VectorCache(staging / RESUME_CACHE, "enc|256")
    assert adopted.has_all(["from-.staging-bbbb"]) and not adopted.has_all(["from-.staging-aaaa"])


def test_orphan_newer_than_current_is_removed_but_live_and_previous_are_kept(tmp_path):
    layout = IndexDir(tmp_path / "index")
    for name in ("gen-000001", "gen-000002", "gen-000003"):
        (layout.root / name).mkdir(parents=True)
        (layout.root / name / MANIFEST).write_text("{}")
        sqlite3.connect(layout.root / name / METADATA).execute("CREATE TABLE t (x)").connection.close()
    (layout.root / "CURRENT").write_text("gen-000002\n")
    staging = layout.begin()
    assert sorted(p.name for p in layout.root.iterdir()) == sorted(
        [staging.name, "CURRENT", "gen-000001", "gen-000002"]
    )


# --- background embedder --------------------------------------------------------------------------


class RecordingEncoder(HashingEncoder):
    def __init__(self) -> None:
        super().__init__(dim=16)
        self.windows: list[list[str]] = []

    def encode(self, texts):
        self.windows.append(list(texts))
        return super().encode(texts)


def embed(texts: list[str], cache: VectorCache, window: int = 4) -> tuple[RecordingEncoder, BackgroundEmbedder]:
    encoder = RecordingEncoder()
    embedder = BackgroundEmbedder(lambda: encoder, cache, window=window)
    for text in texts:
        embedder.submit("h-" + text, text)
    embedder.finish()
    return encoder, embedder


def test_windows_follow_submission_order_and_distinct_texts(tmp_path):
    texts = [f"text {i}" for i in range(10)]
    encoder, embedder = embed([*texts, "text 3"], VectorCache(tmp_path / "c.sqlite", "x"))
    assert encoder.windows == [texts[0:4], texts[4:8], texts[8:10]]  # the repeat is not embedded twice
    assert (embedder.encoded, embedder.resumed) == (10, 0)


def test_windows_already_cached_are_skipped(tmp_path):
    texts = [f"text {i}" for i in range(10)]
    cache = VectorCache(tmp_path / "c.sqlite", "x")
    embed(texts, cache)
    cache.db.execute("DELETE FROM vectors WHERE text_hash IN ('h-text 5', 'h-text 9')")  # as if killed mid-way
    again, embedder = embed(texts, cache)
    assert again.windows == [texts[4:8], texts[8:10]]  # the same windows, re-encoded whole
    assert (embedder.encoded, embedder.resumed) == (6, 4)


def test_encoder_failure_surfaces_in_the_reading_thread(tmp_path):
    class Broken(HashingEncoder):
        def encode(self, texts):
            raise MemoryError("out of memory while embedding")

    embedder = BackgroundEmbedder(Broken, VectorCache(tmp_path / "c.sqlite", "x"), window=2)
    with pytest.raises(MemoryError, match="out of memory"):
        for i in range(1000):  # stops early: submit re-raises once the thread has failed
            embedder.submit(f"h{i}", f"text {i}")
        embedder.finish()


def test_nothing_submitted_loads_no_encoder(tmp_path):
    def refuse():
        raise AssertionError("the encoder was loaded")

    embedder = BackgroundEmbedder(refuse, VectorCache(tmp_path / "c.sqlite", "x"), window=2)
    embedder.finish()
    assert embedder.encoded == 0
