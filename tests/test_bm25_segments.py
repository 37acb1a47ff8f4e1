"""Segmented BM25 (``index/bm25_segments.py``): after adds, revisions, deletions of PMIDs in old
segments and merges, the scores equal a fresh bm25s build of the final records (the precomputed
matrix of ``index/bm25.py``, itself checked against plain bm25s in ``tests/test_bm25_build.py``),
and an update writes term frequencies for its own rows only."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest

from config import Config
from index import bm25_segments, meta_segments
from index.bm25 import BM25_DIR, BM25Index, open_for_generation, tokenize
from index.bm25_segments import SegmentedBM25
from index.exact import identifiers, rare_identifier_rows
from index.manifest import Manifest
from index.storage import MANIFEST, IndexDir
from index.writer import ingest_files
from ingest import Article, Deletion, read_source
from tests.conftest import HashingEncoder
from tests.test_bm25_build import real_articles, real_questions

N = 600


def write_jsonl(path: Path, records: list[tuple[int, Article]]) -> Path:
    """Records as JSON Lines: (PMID, article whose title and abstract it gets) pairs."""
    with open(path, "w", encoding="utf-8") as out:
        for pmid, article in records:
            abstract = " ".join(section.text for section in article.sections)
            out.write(json.dumps({"pmid": str(pmid), "title": article.title, "abstract": abstract}) + "\n")
    return path


def reader(path: Path):
    if path.suffix == ".deleted":
        return iter([Deletion(tuple(path.read_text().split()))])
    return read_source(path)


@pytest.fixture(scope="module")
def articles() -> list[Article]:
    return real_articles(N)


@pytest.fixture(scope="module")
def updates(tmp_path_factory, articles) -> list[Path]:
    """Four ingests: a base, adds plus revisions (another abstract's text under an indexed PMID),
    deletions in the first two segments, then more adds and revisions of revised PMIDs."""
    tmp_path = tmp_path_factory.mktemp("bm25-updates")
    pmid = [int(a.pmid) for a in articles]
    own = list(zip(pmid, articles, strict=True))
    first = write_jsonl(tmp_path / "1.jsonl", own[:300])
    second = write_jsonl(tmp_path / "2.jsonl", own[300:450] + [(pmid[i], articles[440 + i]) for i in range(10, 30)])
    gone = tmp_path / "3.deleted"
    gone.write_text("\n".join(str(pmid[i]) for i in (5, 12, 40, 310, 449)))
    fourth = write_jsonl(tmp_path / "4.jsonl", own[470:600] + [(pmid[i], articles[i + 1]) for i in (20, 21, 100, 305)])
    return [first, second, gone, fourth]


def ingest(paths: list[Path], index_dir: Path) -> None:
    ingest_files(paths, Config(index_dir=index_dir), read=reader, encoder=HashingEncoder(), progress=False)


def live(index_dir: Path) -> Path:
    return IndexDir(index_dir).require_current()


def fresh_reference(generation: Path) -> BM25Index:
    """A from-scratch bm25s build of the generation's final records."""
    store = meta_segments.open_generation(generation)
    try:
        return BM25Index.build(store.iter_articles())
    finally:
        store.close()


def by_pmid(index, query: str) -> tuple[np.ndarray, np.ndarray]:
    """(live PMIDs ascending, their scores) whatever the index's row order."""
    rows = index.rows(np.unique(index.pmids))  # a revised PMID is stored twice, live once
    pmids, scores = index.pmids[rows], index.scores(query)[rows]
    order = np.argsort(pmids)
    return pmids[order], scores[order]


def queries(articles: list[Article]) -> list[str]:
    return [*real_questions(articles, 60), *(a.title for a in articles[::40]), "zzzz qqqq", "the of and"]


@pytest.fixture(scope="module")
def updated(tmp_path_factory, updates) -> Path:
    """The four ingests one after another (no merge at the default policy): four segments, dead
    rows in the first two."""
    index_dir = tmp_path_factory.mktemp("bm25-updated") / "index"
    for path in updates:
        ingest([path], index_dir)
    return index_dir


def assert_same_as_fresh_build(segmented: SegmentedBM25, reference: BM25Index, articles: list[Article]) -> None:
    assert segmented.documents == len(reference) == N - 5 - 20  # 5 deleted, 20 PMIDs never added
    for query in queries(articles):
        pmids, scores = by_pmid(segmented, query)
        assert np.array_equal(pmids, reference.pmids)
        assert np.allclose(scores, reference.scores(query), rtol=1e-6, atol=0), query
        assert segmented.search(query, 10) == reference.search(query, 10), query  # same ranking, same floats
        for word in re.findall(r"(?u)\b\w\w+\b", query):  # bm25s's words: one stem at most each
            stem = tokenize([word])[0]
            holding = int(np.count_nonzero(reference.scores(word)))  # what scoring the word alone finds
            frequencies = [index.document_frequency(stem[0]) for index in (segmented, reference)] if stem else [0, 0]
            assert frequencies == [holding, holding], word
    assert segmented.document_frequency("zzqxvplotnotaword") == reference.document_frequency("zzqxvplotnotaword") == 0


def test_updates_score_exactly_like_a_fresh_build(updated, articles):
    generation = live(updated)
    segmented = open_for_generation(generation)
    assert isinstance(segmented, SegmentedBM25)
    assert len(segmented.segments) == 4 and not segmented.live.all()  # dead rows in old segments
    assert_same_as_fresh_build(segmented, fresh_reference(generation), articles)


def test_after_merges_too_and_as_one_ingest_of_the_same_files(tmp_path, updates, articles, monkeypatch):
    monkeypatch.setattr(meta_segments, "MERGE_FACTOR", 2)  # segments merge along the way
    index_dir = tmp_path / "index"
    for path in updates:
        ingest([path], index_dir)
    segmented = open_for_generation(live(index_dir))
    assert isinstance(segmented, SegmentedBM25) and len(segmented.segments) < 4
    assert_same_as_fresh_build(segmented, fresh_reference(live(index_dir)), articles)
    one_run = tmp_path / "one-run"
    ingest(updates, one_run)  # the same records in one ingest: one segment
    fresh = open_for_generation(live(one_run))
    for query in queries(articles)[:20]:
        assert segmented.search(query, 10) == fresh.search(query, 10)


def test_deleted_and_revised_texts_no_longer_match(updated, articles):
    index = open_for_generation(live(updated))
    deleted = int(articles[40].pmid)
    assert deleted not in {p for p, _ in index.search(articles[40].title, 50)}
    assert len(index.rows(np.array([deleted]))) == 0
    revised = int(articles[100].pmid)  # now holds articles[101]'s text
    assert index.search(articles[101].title, 1)[0][0] in {revised, int(articles[101].pmid)}
    assert revised not in {p for p, _ in index.search(articles[100].title, 1)}


def test_an_update_writes_term_frequencies_of_its_own_rows_only(tmp_path, updates):
    index_dir = tmp_path / "index"
    ingest(updates[:1], index_dir)
    first = live(index_dir)
    ingest(updates[1:2], index_dir)
    second = live(index_dir)
    old = bm25_segments.segment_files(first / BM25_DIR, 0)
    assert all(os.stat(p).st_ino == os.stat(second / BM25_DIR / p.name).st_ino for p in old)  # links
    new = [second / BM25_DIR / p.name for p in bm25_segments.segment_files(second / BM25_DIR, 1)]
    assert all(p.exists() and p.stat().st_nlink == 1 for p in new)
    assert json.loads(new[-1].read_text())["documents"] == 170  # 150 new + 20 revised rows
    assert "weighted at query time" in Manifest.load(second / MANIFEST).bm25
    for path in (second / BM25_DIR).glob("*.npy"):
        np.load(path, allow_pickle=False)  # raises if anything needs unpickling


def test_rare_identifier_rows_match_the_fresh_build(updated, articles):
    segmented = open_for_generation(live(updated))
    reference = fresh_reference(live(updated))
    hits = 0
    for article in articles[::7]:
        query = " ".join(identifiers(article.text)[:5])  # gene symbols, drug codes, acronyms
        got = segmented.pmids[rare_identifier_rows(segmented, query)]
        want = reference.pmids[rare_identifier_rows(reference, query)]
        assert sorted(got.tolist()) == sorted(want.tolist()), query
        hits += len(want) > 0
    assert hits > 0  # the comparison was not of empty sets only


def test_an_old_generation_gets_its_segments_at_the_next_update(tmp_path, updates):
    """An index whose bm25/ is the precomputed matrix (written before segments) is served as it is,
    and its first update writes the term frequencies of every segment once."""
    index_dir = tmp_path / "index"
    ingest(updates[:1], index_dir)
    generation = live(index_dir)
    for path in (generation / BM25_DIR).iterdir():
        path.unlink()
    store = meta_segments.open_generation(generation)
    BM25Index.write(generation / BM25_DIR, store.iter_articles())  # as the previous version wrote it
    store.close()
    assert isinstance(open_for_generation(generation), BM25Index)
    ingest(updates[1:2], index_dir)
    upgraded = open_for_generation(live(index_dir))
    assert isinstance(upgraded, SegmentedBM25) and len(upgraded.segments) == 2
    reference = fresh_reference(live(index_dir))
    assert upgraded.search("cancer risk", 10) == reference.search("cancer risk", 10)
