"""Retrievers (dense, bm25, hybrid), reciprocal rank fusion, asymmetric query encoders, and the
``--retriever`` choice end to end through ``PubMedIndex``, the Chatbot and both command lines."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from config import Config
from index import hybrid as hybrid_module
from index.encoder import MEDCPT_ARTICLE, MEDCPT_QUERY, query_partner
from index.fusion import reciprocal_rank_fusion, z_score_fusion
from index.hybrid import RETRIEVERS, rank
from index.manifest import Manifest
from index.search import PubMedIndex
from index.storage import MANIFEST, IndexDir
from index.writer import ingest_files
from ingest import read_source
from tests.conftest import HashingEncoder, ScriptedGenerator


class QueryEncoder(HashingEncoder):
    """A different model for queries: hashes into the same space but counts its own calls."""

    name = "test/query-encoder"


# --- fusion ---------------------------------------------------------------------------------------


def test_rrf_scores_are_sums_of_reciprocal_ranks():
    fused = dict(reciprocal_rank_fusion([[1, 2, 3], [3, 1]], c=60))
    assert fused[1] == pytest.approx(1 / 61 + 1 / 62)
    assert fused[3] == pytest.approx(1 / 63 + 1 / 61)
    assert fused[2] == pytest.approx(1 / 62)


def test_rrf_prefers_agreement_and_respects_weights():
    assert [i for i, _ in reciprocal_rank_fusion([[1, 2], [2, 3]])] == [2, 1, 3]
    assert next(i for i, _ in reciprocal_rank_fusion([[1, 2], [2, 1]], weights=[2.0, 1.0])) == 1
    assert next(i for i, _ in reciprocal_rank_fusion([[1, 2], [2, 1]], weights=[1.0, 2.0])) == 2
    with pytest.raises(ValueError):
        reciprocal_rank_fusion([[1]], weights=[1.0, 1.0])


def test_z_score_fusion_keeps_margins():
    # dense prefers 1 a little, BM25 prefers 2 by a wide margin: equal weights follow the margin
    fused = z_score_fusion([1, 2, 3], [np.array([0.9, 0.89, 0.1]), np.array([1.0, 9.0, 0.0])], [0.5, 0.5])
    assert [c for c, _ in fused] == [2, 1, 3]
    z_dense = (np.array([0.9, 0.89, 0.1]) - 0.63) / np.std([0.9, 0.89, 0.1])
    z_bm25 = (np.array([1.0, 9.0, 0.0]) - 10 / 3) / np.std([1.0, 9.0, 0.0])
    assert [s for _, s in fused] == pytest.approx(sorted(0.5 * z_dense + 0.5 * z_bm25, reverse=True))
    assert z_score_fusion([1, 2, 3], [np.array([0.9, 0.89, 0.1]), np.array([1.0, 9.0, 0.0])], [1.0, 0.0])[0][0] == 1
    assert z_score_fusion([5, 6], [np.array([0.3, 0.3]), np.array([2.0, 2.0])], [0.7, 0.3]) == [(5, 0.0), (6, 0.0)]
    with pytest.raises(ValueError):
        z_score_fusion([1], [np.array([1.0])], [0.5, 0.5])


def test_rank_calls_only_what_it_needs():
    calls: list[str] = []

    def dense(n):
        calls.append("dense")
        return [(1, 0.9), (2, 0.8)]

    def bm25(n):
        calls.append("bm25")
        return [(2, 7.0), (3, 5.0)]

    cosine = {1: 0.9, 2: 0.8, 3: 0.2}
    lexical = {1: 0.0, 2: 7.0, 3: 5.0}
    rescore = {
        "cosine": lambda ids: np.array([cosine[i] for i in ids]),
        "bm25_score": lambda ids: np.array([lexical[i] for i in ids]),
    }
    assert rank("dense", 2, dense=dense, bm25=bm25, **rescore) == [(1, 0.9), (2, 0.8)] and calls == ["dense"]
    assert rank("bm25", 2, dense=dense, bm25=bm25, **rescore) == [(2, 7.0), (3, 5.0)] and calls == ["dense", "bm25"]
    assert rank("hybrid", 3, dense=dense, bm25=bm25, **rescore)[0][0] == 2  # high in both
    assert rank("rrf", 3, dense=dense, bm25=bm25)[0][0] == 2
    with pytest.raises(ValueError, match="unknown retriever"):
        rank("sparse", 2, dense=dense, bm25=bm25)


# --- retrievers on the demo index -----------------------------------------------------------------


@pytest.mark.parametrize("retriever", RETRIEVERS)
def test_every_retriever_scores_hits_by_cosine(index, retriever):
    query = "risk factors for severe disease in patients"
    hits = index.search(query, k=8, retriever=retriever)
    assert len(hits) == 8 and len({h.pmid for h in hits}) == 8
    assert [h.rank for h in hits] == list(range(1, 9))
    vector = HashingEncoder().encode([query])[0]
    for hit in hits:
        assert hit.score == pytest.approx(float(HashingEncoder().encode([hit.article.text])[0] @ vector), abs=1e-5)


def test_dense_order_is_descending_cosine(index):
    scores = [h.score for h in index.search("cancer treatment outcomes", k=10, retriever="dense")]
    assert scores == sorted(scores, reverse=True)


def test_hybrid_is_the_default_and_fuses_both(index):
    query = "inflammation in elderly patients after surgery"
    depth = hybrid_module.CANDIDATES
    dense = [int(h.pmid) for h in index.search(query, k=depth, retriever="dense")]
    bm25 = [int(h.pmid) for h in index.search(query, k=depth, retriever="bm25")]
    assert index.retriever == "hybrid"
    candidates = list(dict.fromkeys(dense + bm25))
    articles = index.store.get(candidates)
    vector = HashingEncoder().encode([query])[0]
    cosine = np.array([HashingEncoder().encode([articles[str(p)].text])[0] @ vector for p in candidates])
    everything = index.bm25.scores(query)
    lexical = np.array([everything[index.bm25.rows(np.array([p]))[0]] for p in candidates])
    weights = [hybrid_module.DENSE_WEIGHT, 1 - hybrid_module.DENSE_WEIGHT]
    expected = [str(p) for p, _ in z_score_fusion(candidates, [cosine, lexical], weights)[:10]]
    assert [h.pmid for h in index.search(query, k=10)] == expected
    rrf = [str(p) for p, _ in reciprocal_rank_fusion([dense, bm25])[:10]]
    assert [h.pmid for h in index.search(query, k=10, retriever="rrf")] == rrf


def test_retriever_is_validated_at_open(demo_index):
    with pytest.raises(ValueError, match="unknown retriever"):
        PubMedIndex(demo_index, encoder=HashingEncoder(), retriever="magic")


def test_stats_names_retriever_and_query_encoder(index):
    stats = index.stats()
    assert stats["retriever"] == "hybrid" and stats["bm25"] is True
    assert stats["query_encoder"] == HashingEncoder.name and stats["documents"] == 150


# --- asymmetric encoders ----------------------------------------------------------------------------


def test_query_partner():
    assert query_partner(MEDCPT_ARTICLE) == MEDCPT_QUERY
    assert query_partner("any/model") == "" and query_partner("any/model", "other/query") == "other/query"
    assert query_partner("same/model", "same/model") == ""


@pytest.fixture
def asymmetric_index(tmp_path, demo_subset) -> Path:
    config = Config(index_dir=tmp_path / "index", encoder=HashingEncoder.name, query_encoder=QueryEncoder.name)
    ingest_files([demo_subset], config, read=read_source, encoder=HashingEncoder(), progress=False)
    return config.index_dir


def test_manifest_records_the_query_encoder_and_queries_use_it(asymmetric_index):
    manifest = Manifest.load(IndexDir(asymmetric_index).require_current() / MANIFEST)
    assert (manifest.encoder, manifest.query_encoder) == (HashingEncoder.name, QueryEncoder.name)
    articles, queries = HashingEncoder(), QueryEncoder()
    index = PubMedIndex(asymmetric_index, encoder=articles, query_encoder=queries)
    title = next(index.store.iter_articles()).title
    assert index.search(title, k=1)[0].article.title == title
    assert queries.calls == 1 and articles.calls == 0  # the article encoder never sees the query
    assert index.stats()["query_encoder"] == QueryEncoder.name


def test_wrong_query_encoder_is_refused(asymmetric_index):
    with pytest.raises(ValueError, match="embeds queries with test/query-encoder"):
        PubMedIndex(asymmetric_index, encoder=HashingEncoder(), query_encoder=HashingEncoder())


def test_changing_the_query_encoder_of_an_index_is_refused(asymmetric_index, tmp_path):
    source = tmp_path / "more.jsonl"
    source.write_text(json.dumps({"pmid": "1", "title": "New", "abstract": "Text."}) + "\n")
    before = sorted(p.name for p in asymmetric_index.iterdir())
    config = Config(index_dir=asymmetric_index, encoder=HashingEncoder.name, query_encoder="other/query")
    with pytest.raises(ValueError, match="embeds queries with"):
        ingest_files([source], config, read=read_source, encoder=HashingEncoder(), progress=False)
    assert sorted(p.name for p in asymmetric_index.iterdir()) == before  # nothing committed


def test_symmetric_index_has_no_query_encoder(demo_index):
    assert Manifest.load(IndexDir(demo_index).require_current() / MANIFEST).query_encoder == ""


# --- end to end: Chatbot and command lines ----------------------------------------------------------


@pytest.mark.parametrize("retriever", RETRIEVERS)
def test_chatbot_ask_cli_uses_the_chosen_retriever(index, retriever, monkeypatch, capsys):
    from chatbot.__main__ import main

    monkeypatch.setattr("index.search.load_encoder", lambda *a, **k: HashingEncoder())
    monkeypatch.setattr("chatbot.generate.open_generator", lambda config: ScriptedGenerator("Yes [1]."))
    question = "treatment of patients with cancer"
    args = ["ask", question, "--index-dir", str(index.index_dir), "--json", "--retriever", retriever]
    assert main([*args, "--min-score", "0", "--top-k", "4"]) == 0
    sources = [s["pmid"] for s in json.loads(capsys.readouterr().out)["sources"]]
    assert sources == [h.pmid for h in index.search(question, k=4, retriever=retriever)]


def test_retriever_from_environment_reaches_the_index(index, monkeypatch, capsys):
    from index.__main__ import main

    monkeypatch.setattr("index.search.load_encoder", lambda *a, **k: HashingEncoder())
    monkeypatch.setenv("PUBMED_RAG_RETRIEVER", "bm25")
    assert main(["stats", "--index-dir", str(index.index_dir), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["retriever"] == "bm25"
    assert main(["search", "cancer", "--index-dir", str(index.index_dir), "--json", "-k", "3"]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert [h["pmid"] for h in hits] == [h.pmid for h in index.search("cancer", k=3, retriever="bm25")]
    assert set(hits[0]) == {"pmid", "score", "title", "year"}


def test_vectors_of_hits_are_read_back_exactly(index):
    pmids = np.array([int(a.pmid) for a in list(index.store.iter_articles())[:3]])
    vectors = index.vectors.vectors(pmids)
    assert vectors.shape == (3, 256) and np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


@pytest.mark.slow
def test_medcpt_style_checkpoint_is_pooled_from_cls(tmp_path, monkeypatch):
    """A plain BERT folder named as a MedCPT encoder is embedded by its [CLS] vector, normalised,
    through the same sentence-transformers path the real ncbi/MedCPT-* models take."""
    import string

    import torch
    from transformers import AutoModel, AutoTokenizer, BertConfig, BertModel, BertTokenizerFast

    from index import encoder as encoder_module

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *string.ascii_lowercase, "asthma", "steroids", "in"]
    path = tmp_path / "tiny-medcpt"
    path.mkdir()
    (path / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64
    )
    BertModel(config).save_pretrained(path)
    BertTokenizerFast.from_pretrained(str(path)).save_pretrained(path)
    monkeypatch.setattr(encoder_module, "_CLS_POOLED", {str(path)})
    texts = ["steroids in asthma", "asthma"]
    for role, limit in (("article", 256), ("query", encoder_module.QUERY_MAX_TOKENS)):
        loaded = encoder_module.load_encoder(str(path), fallback=False, role=role)
        assert loaded.model.max_seq_length == min(limit, 512) and loaded.dim == 32
        tokenizer, model = AutoTokenizer.from_pretrained(str(path)), AutoModel.from_pretrained(str(path)).eval()
        with torch.no_grad():
            cls = model(**tokenizer(texts, padding=True, return_tensors="pt")).last_hidden_state[:, 0].numpy()
        expected = cls / np.linalg.norm(cls, axis=1, keepdims=True)
        assert np.allclose(loaded.encode(texts), expected, atol=1e-5)


class CountingEncoder(HashingEncoder):
    """The hashing encoder, counting the texts it encodes."""

    def __init__(self) -> None:
        super().__init__()
        self.encoded = 0

    def encode(self, texts):
        self.encoded += len(texts)
        return super().encode(texts)


class Reversing:
    """A reranker that reverses the first stage's order and records what it was given."""

    name, depth = "reversing", 5

    def __init__(self) -> None:
        self.given: list[list[float]] = []

    def rerank(self, query, articles, scores=None):
        self.given.append(list(scores))
        return list(articles[: self.depth])[::-1] + list(articles[self.depth :])


@pytest.mark.parametrize("retriever", [*RETRIEVERS])
def test_a_reranked_search_after_its_preview_ranks_the_question_once(demo_index: Path, retriever: str) -> None:
    """A chat's source preview (rerank=False) then its reranked search: with hybrid (the default) the
    first stage runs once; dense or BM25 alone standardise a deeper pool for the reranker, so they
    rank again. Either way both equal what an index searching each question afresh returns."""
    encoder, reranker = CountingEncoder(), Reversing()
    index = PubMedIndex(demo_index, encoder=encoder, retriever=retriever, reranker=reranker)
    query = "asthma in children"
    preview = index.search(query, k=5, rerank=False)
    reranked = index.search(query, k=5)
    assert encoder.encoded == (1 if retriever == "hybrid" else 2)
    fresh = PubMedIndex(demo_index, encoder=HashingEncoder(), retriever=retriever, reranker=Reversing())
    assert [h.pmid for h in reranked] == [h.pmid for h in fresh.search(query, k=5)]
    assert [h.pmid for h in reranked] == [h.pmid for h in preview][::-1]
    assert reranker.given == fresh._reranker.given  # the same first-stage scores (z-scores for dense, bm25)
    before = encoder.encoded
    index.search("lung cancer screening", k=5)  # another question is ranked anew
    assert encoder.encoded == before + 1
