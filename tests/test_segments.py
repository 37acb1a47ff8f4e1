"""Vector and metadata segments (``index/segments.py``, ``index/meta_segments.py``): an ingest
links the live segments, writes only what changed, marks dead what went and merges by size class;
the result searches exactly like one index built from scratch of the same records, and readers of
the old generation keep working."""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from config import Config
from index import meta_segments, segments
from index.manifest import Manifest
from index.search import PubMedIndex
from index.segments import TOMBSTONES, open_generation
from index.storage import MANIFEST, IndexDir
from index.writer import ingest_files
from ingest import Deletion, read_source
from tests.conftest import HashingEncoder

WORDS = [f"w{i}" for i in range(2000)]


def corpus(path: Path, pmids: Sequence[int], seed: int) -> Path:
    rng = np.random.default_rng(seed)
    with open(path, "w") as out:
        for pmid in pmids:
            title = " ".join(rng.choice(WORDS, 6))
            abstract = " ".join(rng.choice(WORDS, 40))
            out.write(json.dumps({"pmid": str(pmid), "title": title, "abstract": abstract}) + "\n")
    return path


def deletions(path: Path, pmids: Sequence[int]) -> Path:
    path.write_text("\n".join(map(str, pmids)))
    return path


def reader(path: Path):
    """JSON Lines; a ``.deleted`` file lists PMIDs to delete, as NCBI's DeleteCitation does."""
    if path.suffix == ".deleted":
        return iter([Deletion(tuple(path.read_text().split()))])
    return read_source(path)


class DistinctEncoder(HashingEncoder):
    """The hashing encoder plus a small fixed jitter per text: no two abstracts tie on a query, so
    "the same top 10" has one meaning (among exact ties FAISS's order is arbitrary, as it always was)."""

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        vectors = super().encode(texts)
        for row, text in enumerate(texts):
            seed = int(hashlib.sha256(text.encode()).hexdigest()[:8], 16)
            vectors[row] += 0.01 * np.random.default_rng(seed).standard_normal(self.dim).astype(np.float32)
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def ingest(files: list[Path], index_dir: Path, encoder=None) -> None:
    ingest_files(files, Config(index_dir=index_dir), read=reader, encoder=encoder or DistinctEncoder(), progress=False)


def live(index_dir: Path) -> Path:
    return IndexDir(index_dir).require_current()


def segment_names(index_dir: Path) -> list[str]:
    return Manifest.load(live(index_dir) / MANIFEST).segments


def meta_names(index_dir: Path) -> list[str]:
    return [name for name, _ in Manifest.load(live(index_dir) / MANIFEST).meta_segments]


def rows(index_dir: Path) -> list[tuple]:
    store = meta_segments.open_generation(live(index_dir))
    try:
        return store.db.execute("SELECT * FROM articles ORDER BY pmid").fetchall()
    finally:
        store.close()


def dead_rows(generation: Path, name: str) -> set[tuple[int, int]]:
    import sqlite3

    db = sqlite3.connect(generation / name)
    try:
        return set(db.execute("SELECT seg, pmid FROM dead"))
    finally:
        db.close()


def vectors_by_pmid(index_dir: Path) -> dict[int, bytes]:
    vectors = open_generation(live(index_dir))
    ids = vectors.ids()
    return {int(p): v.tobytes() for p, v in zip(ids, vectors.vectors(ids), strict=True)}


def results(index: PubMedIndex, queries: list[str]) -> list[list[tuple[str, float]]]:
    return [
        [(h.pmid, h.score) for h in index.search(q, 10, retriever=retriever)]
        for q in queries
        for retriever in ("dense", "bm25", "hybrid")
    ]


@pytest.fixture
def files(tmp_path) -> dict[str, Path]:
    return {
        "a": corpus(tmp_path / "a.jsonl", range(1, 51), seed=1),
        "b": corpus(tmp_path / "b.jsonl", range(51, 101), seed=2),
        "c": corpus(tmp_path / "c.jsonl", [*range(5, 15), *range(101, 121)], seed=3),  # 10 revised, 20 new
        "d": corpus(tmp_path / "d.jsonl", [*range(60, 64), *range(121, 151)], seed=4),
        "del": deletions(tmp_path / "old.deleted", [7, 20, 21, 55]),
    }


def test_an_update_writes_a_new_segment_and_links_the_old_ones(tmp_path, files):
    index_dir = tmp_path / "index"
    ingest([files["a"]], index_dir)
    first = live(index_dir)
    ingest([files["b"]], index_dir)
    second = live(index_dir)
    assert segment_names(index_dir) == ["vectors.faiss", "vectors-000001.faiss"]
    assert meta_names(index_dir) == ["articles.sqlite", "articles-000001.sqlite"]
    for name in ("vectors.faiss", "articles.sqlite"):  # the same files, not copies
        assert os.stat(first / name).st_ino == os.stat(second / name).st_ino
    assert not (second / TOMBSTONES).exists() and not dead_rows(second, "articles-000001.sqlite")
    assert len(rows(index_dir)) == 100
    assert len(PubMedIndex(index_dir, encoder=DistinctEncoder())) == 100


def test_deleting_a_pmid_that_lives_in_an_old_segment(tmp_path, files):
    index_dir = tmp_path / "index"
    ingest([files["a"]], index_dir)
    ingest([files["b"]], index_dir)
    before = PubMedIndex(index_dir, encoder=DistinctEncoder())
    title_7 = before.store.get([7])["7"].title
    assert before.search(title_7, 1, retriever="dense")[0].pmid == "7"
    ingest([files["del"]], index_dir)

    generation = live(index_dir)
    tombstones = {tuple(pair) for pair in np.load(generation / TOMBSTONES).tolist()}
    assert tombstones == {(0, 7), (0, 20), (0, 21), (1, 55)}  # in the segments holding them, files untouched
    assert segment_names(index_dir) == ["vectors.faiss", "vectors-000001.faiss"]
    assert meta_names(index_dir) == ["articles.sqlite", "articles-000001.sqlite", "articles-000002.sqlite"]
    assert dead_rows(generation, "articles-000002.sqlite") == {(0, 7), (0, 20), (0, 21), (1, 55)}
    assert {r[0] for r in rows(index_dir)} == set(range(1, 101)) - {7, 20, 21, 55}
    after = PubMedIndex(index_dir, encoder=DistinctEncoder())
    assert len(after) == 96 and set(vectors_by_pmid(index_dir)) == set(range(1, 101)) - {7, 20, 21, 55}
    deep = [h.pmid for h in after.search(title_7, 96, retriever="dense")]
    assert "7" not in deep and len(deep) == 96
    with pytest.raises(KeyError, match="PMID 7"):
        after.vectors.vectors(np.array([7]))
    assert before.search(title_7, 1, retriever="dense")[0].pmid == "7"  # the old reader keeps its state
    assert before.store.get([7])["7"].title == title_7 and "7" not in after.store.get([7])


def test_segments_of_a_size_class_merge_into_one(tmp_path, files, monkeypatch):
    monkeypatch.setattr(segments, "MERGE_FACTOR", 2)  # level = log2(live): 50 and 50 vectors merge
    index_dir = tmp_path / "index"
    ingest([files["a"]], index_dir)
    first = live(index_dir)
    ingest([files["b"]], index_dir)
    assert segment_names(index_dir) == ["vectors-000002.faiss"]  # both level-5 segments, rewritten as one
    assert not (live(index_dir) / "vectors.faiss").exists() and (first / "vectors.faiss").exists()
    fresh = tmp_path / "fresh"
    ingest([files["a"], files["b"]], fresh)
    assert vectors_by_pmid(index_dir) == vectors_by_pmid(fresh)


def test_metadata_segments_merge_by_size_class_and_by_count(tmp_path, files, monkeypatch):
    monkeypatch.setattr(meta_segments, "MERGE_FACTOR", 2)
    index_dir = tmp_path / "index"
    ingest([files["a"]], index_dir)
    ingest([files["b"]], index_dir)  # 50 and 50 rows: the same class, merged
    assert meta_names(index_dir) == ["articles-000002.sqlite"]
    monkeypatch.setattr(meta_segments, "MERGE_FACTOR", 100)
    monkeypatch.setattr(meta_segments, "MAX_SEGMENTS", 2)
    ingest([files["c"]], index_dir)
    ingest([files["d"]], index_dir)  # a third segment: the two smallest merge
    assert len(meta_names(index_dir)) == 2
    fresh = tmp_path / "fresh"
    ingest([files["a"], files["b"], files["c"], files["d"]], fresh)
    assert rows(index_dir) == rows(fresh)


def test_a_mostly_dead_segment_is_rewritten(tmp_path, files):
    index_dir = tmp_path / "index"
    ingest([files["a"]], index_dir)
    ingest([deletions(tmp_path / "many.deleted", range(1, 30))], index_dir)  # 29 of 50 dead
    names = segment_names(index_dir)
    assert names == ["vectors-000001.faiss"] and not (live(index_dir) / TOMBSTONES).exists()
    assert set(vectors_by_pmid(index_dir)) == set(range(30, 51))


@pytest.mark.parametrize("factor", [2, 10])
def test_updates_search_exactly_like_a_fresh_build(tmp_path, files, monkeypatch, factor):
    """Revisions, deletions of PMIDs in old segments and merges (factor 2: at most every ingest)
    end in the same vectors and the same ranked hits and scores as one ingest of the same files."""
    monkeypatch.setattr(segments, "MERGE_FACTOR", factor)
    order = [files["a"], files["b"], files["c"], files["del"], files["d"]]
    index_dir = tmp_path / "index"
    for path in order:
        ingest([path], index_dir)
    fresh = tmp_path / "fresh"
    ingest(order, fresh)
    assert vectors_by_pmid(index_dir) == vectors_by_pmid(fresh)
    assert rows(index_dir) == rows(fresh)
    updated, scratch = (PubMedIndex(d, encoder=DistinctEncoder()) for d in (index_dir, fresh))
    titles = [a.title for a in scratch.store.get(range(1, 151)).values()]
    queries = [*titles[::3], "w1 w2 w3", "w42"]
    assert results(updated, queries) == results(scratch, queries)
    if factor == 10:
        assert len(segment_names(index_dir)) >= 3  # the exactness came through segments, not a merge


class SlowEncoder(DistinctEncoder):
    def encode(self, texts: Sequence[str]) -> np.ndarray:
        time.sleep(0.02)
        return super().encode(texts)


def test_a_reader_serves_its_generation_throughout_an_update(tmp_path, files):
    index_dir = tmp_path / "index"
    ingest([files["a"], files["b"]], index_dir)
    serving = PubMedIndex(index_dir, encoder=DistinctEncoder())
    queries = [a.title for a in serving.store.get([5, 7, 8, 55, 60]).values()] + ["w1 w2 w3"]
    expected = results(serving, queries)
    done, failures = threading.Event(), []

    def update() -> None:
        try:
            for path in (files["c"], files["del"], files["d"]):  # the third rotates the first generation out
                ingest([path], index_dir, SlowEncoder())
        except BaseException as exc:
            failures.append(exc)
        finally:
            done.set()

    thread = threading.Thread(target=update)
    thread.start()
    served = 0
    while not done.is_set():
        assert results(serving, queries) == expected
        served += 1
    thread.join()
    assert not failures and served > 1
    assert not (index_dir / "gen-000001").exists()  # rotated away while open
    assert results(serving, queries) == expected
    assert len(PubMedIndex(index_dir, encoder=DistinctEncoder())) == 146
