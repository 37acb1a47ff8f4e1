"""The bounded two-pass BM25 build (``BM25Index.write``) against plain bm25s on real abstracts."""

from __future__ import annotations

import json

import bm25s
import numpy as np
import pytest

from index.bm25 import K1, B, BM25Index, tokenize
from ingest import Article, Section, read_source
from tests.conftest import DEMO_CORPUS, SHARED

UPDATE_FILE = SHARED / "data" / "pubmed" / "pubmed21n1298.xml.gz"
QUESTIONS = SHARED / "eval" / "pubmedqa_dev.jsonl"


def real_articles(n: int) -> list[Article]:
    """``n`` real abstracts (a shared NLM update file, else the demo corpus) in PMID order."""
    source = UPDATE_FILE if UPDATE_FILE.exists() else DEMO_CORPUS
    found: dict[int, Article] = {}
    for event in read_source(source):
        if isinstance(event, Article) and event.sections:
            found[int(event.pmid)] = event
            if len(found) == n:
                break
    return [found[pmid] for pmid in sorted(found)]


def real_questions(articles: list[Article], n: int) -> list[str]:
    if QUESTIONS.exists():
        lines = QUESTIONS.read_text(encoding="utf-8").splitlines()[:n]
        return [json.loads(line)["question"] for line in lines]
    return [a.title for a in articles[:n]]


def plain_bm25s(articles: list[Article]) -> bm25s.BM25:
    """The reference: bm25s indexing every document's tokens at once."""
    model = bm25s.BM25(k1=K1, b=B)
    model.index(tokenize([a.text for a in articles]), show_progress=False)
    return model


def plain_scores(model: bm25s.BM25, query: str, n_docs: int) -> np.ndarray:
    ids = model.get_tokens_ids(tokenize([query])[0])
    return model.get_scores_from_ids(ids) if ids else np.zeros(n_docs, dtype=np.float32)


@pytest.mark.slow
def test_bounded_build_scores_equal_plain_bm25s_on_real_abstracts(tmp_path):
    articles = real_articles(4000)
    assert len(articles) >= 2000  # the demo corpus has 2,000; the shared update file 18,440
    reference = plain_bm25s(articles)
    built = BM25Index.write(tmp_path / "bm25", articles, batch=700)  # several batches, a partial last one
    assert built.pmids.tolist() == [int(a.pmid) for a in articles]
    assert built.model.vocab_dict.keys() == reference.vocab_dict.keys()
    assert len(built.model.scores["data"]) == len(reference.scores["data"])
    assert isinstance(built.model.scores["data"], np.memmap)  # as search loads it
    questions = real_questions(articles, 100)
    ranked = 0
    for question in questions:
        ours, theirs = built.scores(question), plain_scores(reference, question, len(articles))
        np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-5)
        order = np.lexsort((built.pmids, -theirs))  # best first, ties: lower PMID first
        expected = built.pmids[order[theirs[order] > 0][:10]].tolist()
        assert [pmid for pmid, _ in built.search(question, 10)] == expected
        ranked += bool(expected)
    assert ranked >= 50  # the questions did match abstracts


def test_files_are_what_bm25s_saves_and_loads(tmp_path):
    articles = real_articles(300)
    BM25Index.write(tmp_path / "ours", articles, batch=64)
    reference = plain_bm25s(articles)
    reference.save(str(tmp_path / "theirs"), allow_pickle=False, show_progress=False)
    theirs = {p.name for p in (tmp_path / "theirs").iterdir()}
    assert {p.name for p in (tmp_path / "ours").iterdir()} == {*theirs, "pmids.npy"}  # no temporary file left
    params = [json.loads((tmp_path / d / "params.index.json").read_text()) for d in ("ours", "theirs")]
    assert params[0] == params[1]
    for name in ("data.csc.index.npy", "indices.csc.index.npy", "indptr.csc.index.npy"):
        a, b = (np.load(tmp_path / d / name, allow_pickle=False) for d in ("ours", "theirs"))
        assert a.dtype == b.dtype and a.shape == b.shape
    loaded = bm25s.BM25.load(str(tmp_path / "ours"), mmap=True, allow_pickle=False, show_progress=False)
    assert loaded.scores["num_docs"] == 300 and loaded.vocab_dict[""] == len(loaded.vocab_dict) - 1


def test_batch_size_does_not_change_the_files(tmp_path):
    articles = real_articles(200)
    for batch in (1, 37, 10_000):
        BM25Index.write(tmp_path / str(batch), articles, batch=batch)
    for path in (tmp_path / "1").iterdir():
        same = {(tmp_path / str(batch) / path.name).read_bytes() for batch in (1, 37, 10_000)}
        assert len(same) == 1, path.name


def test_documents_without_indexable_words_count_as_in_bm25s(tmp_path):
    articles = [
        Article("1", "Asthma in children", (Section("", "Wheezing children were followed."),)),
        Article("2", "The", (Section("", "of and the"),)),  # stopwords only: length 0, lowers the average
        Article("3", "Asthma and aspirin", (Section("", "Aspirin-exacerbated respiratory disease."),)),
    ]
    built = BM25Index.write(tmp_path / "bm25", articles, batch=2)
    reference = plain_bm25s(articles)
    for query in ("asthma", "aspirin children", "wheezing"):
        np.testing.assert_array_equal(built.scores(query), plain_scores(reference, query, 3))


def test_collection_without_any_word_builds_and_finds_nothing(tmp_path):
    articles = [Article("5", "The", (Section("", "of the"),)), Article("6", "And", (Section("", "a"),))]
    built = BM25Index.write(tmp_path / "bm25", articles)
    assert built.pmids.tolist() == [5, 6] and built.search("asthma", 3) == []
    assert BM25Index.load(tmp_path / "bm25").search("the", 3) == []
