"""BM25 (index/bm25.py): tokenising, scoring, saving without pickle, and upkeep by every ingest."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from config import Config
from index.bm25 import BM25_DIR, BM25Index, build_for_generation, open_for_generation, tokenize
from index.bm25_segments import SegmentedBM25
from index.manifest import Manifest
from index.search import PubMedIndex
from index.storage import MANIFEST, IndexDir
from index.writer import ingest_files
from ingest import Article, Section, read_source
from tests.conftest import HashingEncoder

ARTICLES = [
    Article("11", "Budesonide-formoterol in mild asthma", (Section("", "Inhaled steroids reduce exacerbations."),)),
    Article("22", "Aspirin after stroke", (Section("", "Antiplatelet therapy prevents a second stroke."),)),
    Article("33", "Asthma in children", (Section("", "Wheezing children were followed for ten years."),)),
]


def jsonl(path: Path, *records: dict) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def test_tokenize_lowercases_drops_stopwords_and_stems():
    assert tokenize(["The patients treated with the STEROIDS"]) == [["patient", "treat", "steroid"]]


def test_rare_shared_word_ranks_its_abstract_first():
    index = BM25Index.build(ARTICLES)
    assert [pmid for pmid, _ in index.search("formoterol", 3)] == [11]
    ranked = index.search("asthma in children", 3)
    assert [pmid for pmid, _ in ranked] == [33, 11]  # both words beat one word; 22 shares none
    assert ranked[0][1] > ranked[1][1] > 0


def test_query_sharing_no_word_finds_nothing():
    index = BM25Index.build(ARTICLES)
    assert index.search("zzzz qqqq", 3) == [] and index.search("the of and", 3) == []
    assert not index.scores("zzzz").any()


def test_allowed_pmids_restrict_the_candidates():
    index = BM25Index.build(ARTICLES)
    assert [pmid for pmid, _ in index.search("asthma", 3, allowed=np.array([11, 22]))] == [11]
    assert index.search("asthma", 3, allowed=np.array([22])) == []


def test_save_and_load_round_trip_without_pickle(tmp_path):
    index = BM25Index.build(ARTICLES)
    index.save(tmp_path / "bm25")
    files = {p.name for p in (tmp_path / "bm25").iterdir()}
    assert files and all(name.endswith((".npy", ".json")) for name in files)
    for npy in (tmp_path / "bm25").glob("*.npy"):
        np.load(npy, allow_pickle=False)  # raises if anything in it needs unpickling
    loaded = BM25Index.load(tmp_path / "bm25")
    assert loaded.pmids.tolist() == [11, 22, 33]
    assert np.allclose(loaded.scores("asthma children"), index.scores("asthma children"))


def test_empty_index_saves_and_loads(tmp_path):
    BM25Index.build([]).save(tmp_path / "bm25")
    assert BM25Index.load(tmp_path / "bm25").search("asthma", 5) == []


def test_ingest_builds_bm25_into_the_generation_and_records_it(demo_index):
    generation = IndexDir(demo_index).require_current()
    index = open_for_generation(generation)
    assert isinstance(index, SegmentedBM25)  # term frequencies per segment, weighted at query time
    assert len(index) == 150 and index.documents == 150 and np.all(np.diff(index.pmids) > 0)
    assert "bm25s" in Manifest.load(generation / MANIFEST).bm25


def test_every_ingest_updates_bm25(tmp_path):
    config = Config(index_dir=tmp_path / "index")
    first = jsonl(tmp_path / "a.jsonl", {"pmid": "1", "title": "Zebrafish heart regeneration", "abstract": "Fins."})
    ingest_files([first], config, read=read_source, encoder=HashingEncoder(), progress=False)
    assert [p for p, _ in PubMedIndex(config.index_dir).bm25.search("zebrafish", 5)] == [1]
    second = jsonl(
        tmp_path / "b.jsonl",
        {"pmid": "1", "title": "Axolotl limb regeneration", "abstract": "Limbs."},  # replaces PMID 1
        {"pmid": "2", "title": "Zebrafish fin regeneration", "abstract": "Fins again."},
    )
    ingest_files([second], config, read=read_source, encoder=HashingEncoder(), progress=False)
    bm25 = PubMedIndex(config.index_dir).bm25
    assert [p for p, _ in bm25.search("zebrafish", 5)] == [2]
    assert [p for p, _ in bm25.search("axolotl", 5)] == [1]
    deletion = tmp_path / "delete.xml"
    deletion.write_text(
        '<PubmedArticleSet><DeleteCitation><PMID Version="1">2</PMID></DeleteCitation></PubmedArticleSet>'
    )
    ingest_files([deletion], config, read=read_source, encoder=HashingEncoder(), progress=False)
    assert PubMedIndex(config.index_dir).bm25.search("zebrafish", 5) == []


def test_generation_without_bm25_is_served_from_memory(tmp_path, demo_index, caplog):
    copy = tmp_path / "old-index"
    shutil.copytree(demo_index, copy)
    generation = IndexDir(copy).require_current()
    shutil.rmtree(generation / BM25_DIR)  # as an index built before BM25 existed
    index = open_for_generation(generation)
    assert len(index) == 150 and "no BM25 index" in caplog.text
    rebuilt = build_for_generation(generation)  # the precomputed matrix, as generations before segments hold
    assert np.array_equal(rebuilt.pmids, index.pmids)
    assert isinstance(open_for_generation(generation), BM25Index)  # still served as it is


@pytest.mark.parametrize("retriever", ["bm25", "hybrid"])
def test_index_title_queries_find_their_record_first(demo_index, retriever):
    index = PubMedIndex(demo_index, encoder=HashingEncoder(), retriever=retriever)
    articles = list(index.store.iter_articles())[:20]
    found = [index.search(a.title, k=1)[0].pmid == a.pmid for a in articles]
    assert sum(found) >= 19
