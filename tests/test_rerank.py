"""Cross-encoder reranking (index/rerank.py) through the real sentence-transformers ``CrossEncoder``
code that loads ncbi/MedCPT-Cross-Encoder, on a tiny randomly initialised BERT built here."""

from __future__ import annotations

import logging
import string
from pathlib import Path

import numpy as np
import pytest

from index.rerank import CROSS_ENCODER_DEPTH, DEFAULT_RERANKER, CrossEncoderReranker, load_reranker, reranker_id
from index.search import PubMedIndex
from ingest import Article, Section
from tests.conftest import HashingEncoder

VOCAB = (
    ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    + list(string.ascii_lowercase + string.digits + ".,;:-()%/?")
    + ["##" + c for c in string.ascii_lowercase + string.digits]
    + ["asthma", "budesonide", "patients", "the", "and", "of", "in", "with", "cancer", "lung", "does"]
)
ARTICLES = [
    Article(str(i), title, (Section("", text),))
    for i, (title, text) in enumerate(
        [
            ("Budesonide in asthma", "Inhaled budesonide reduced asthma attacks."),
            ("Lung cancer screening", "Screening found lung cancer earlier."),
            ("Asthma in children", "Children with asthma and the role of steroids."),
            ("Cancer pain", "Opioids and cancer pain in patients."),
        ],
        start=1,
    )
]


@pytest.fixture(scope="module")
def tiny_cross_encoder(tmp_path_factory) -> Path:
    """A 2-layer, 32-d BertForSequenceClassification with one output (MedCPT's shape), random weights."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(VOCAB),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        num_labels=1,
        initializer_range=0.5,  # larger random weights: scores far enough apart to order unambiguously
    )
    return save_with_word_pieces(BertForSequenceClassification(config), tmp_path_factory.mktemp("rerank") / "tiny-ce")


def save_with_word_pieces(model, path: Path) -> Path:
    """``model`` saved as a Hub checkpoint is, with a word-piece tokenizer over ``VOCAB``."""
    from transformers import BertTokenizerFast

    path.mkdir()
    (path / "vocab.txt").write_text("\n".join(VOCAB) + "\n", encoding="utf-8")
    model.save_pretrained(path)
    BertTokenizerFast.from_pretrained(str(path)).save_pretrained(path)
    return path


def reference_scores(path: Path, query: str, articles: list[Article]) -> np.ndarray:
    """The model's logits computed with plain transformers, independently of sentence-transformers."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(path))
    model = AutoModelForSequenceClassification.from_pretrained(str(path)).eval()
    texts = [f"{a.title} {a.abstract}" for a in articles]
    batch = tokenizer([query] * len(texts), texts, padding=True, truncation=True, max_length=128, return_tensors="pt")
    with torch.no_grad():
        return model(**batch).logits[:, 0].numpy()


def test_setting_names_the_model():
    assert reranker_id("off") is None and reranker_id("") is None and reranker_id(" none ") is None
    assert reranker_id("on") == DEFAULT_RERANKER == "ncbi/MedCPT-Cross-Encoder"
    assert reranker_id("/models/my-cross-encoder") == "/models/my-cross-encoder"
    assert load_reranker("off") is None


def test_unavailable_model_is_skipped_with_a_clear_message(monkeypatch, caplog, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with caplog.at_level(logging.WARNING):
        assert load_reranker("on") is None
    assert "Reranking skipped" in caplog.text and DEFAULT_RERANKER in caplog.text


@pytest.mark.slow
def test_rerank_orders_by_the_cross_encoders_own_scores(tiny_cross_encoder):
    reranker = load_reranker(str(tiny_cross_encoder), max_length=128)
    assert isinstance(reranker, CrossEncoderReranker)
    query = "does budesonide help asthma?"
    expected = reference_scores(tiny_cross_encoder, query, ARTICLES)
    probabilities = 1 / (1 + np.exp(-expected))  # CrossEncoder's default activation for one output
    assert np.allclose(reranker.scores(query, ARTICLES), probabilities, atol=1e-4)
    assert np.min(np.diff(np.sort(expected))) > 1e-3  # an order that float noise cannot flip
    reordered = reranker.rerank(query, ARTICLES)
    assert [a.pmid for a in reordered] == [ARTICLES[i].pmid for i in np.argsort(-expected, kind="stable")]
    assert reranker.rerank(query, ARTICLES[:1]) == ARTICLES[:1] and reranker.rerank(query, []) == []


@pytest.mark.slow
def test_index_search_reranks_the_candidates_and_keeps_cosine_scores(demo_index, tiny_cross_encoder):
    reranker = load_reranker(str(tiny_cross_encoder), max_length=128)
    plain = PubMedIndex(demo_index, encoder=HashingEncoder())
    reranked = PubMedIndex(demo_index, encoder=HashingEncoder(), reranker=reranker)
    query = "asthma in patients"
    candidates = [h.article for h in plain.search(query, k=CROSS_ENCODER_DEPTH)]
    expected = reranker.rerank(query, candidates)[:5]
    hits = reranked.search(query, k=5)
    assert [h.pmid for h in hits] == [a.pmid for a in expected]
    cosine = {h.pmid: h.score for h in plain.search(query, k=CROSS_ENCODER_DEPTH)}
    assert all(h.score == pytest.approx(cosine[h.pmid], abs=1e-5) for h in hits)
    assert [h.pmid for h in reranked.search(query, k=5, rerank=False)] == [h.pmid for h in plain.search(query, k=5)]


class CountingReranker:
    """Keeps the first stage's order; records how many candidates each search handed it."""

    name = "counting"

    def __init__(self, depth: int) -> None:
        self.depth, self.seen = depth, []

    def rerank(self, query: str, articles, scores=None) -> list[Article]:
        self.seen.append(len(articles))
        return list(articles)


def test_a_search_reranks_at_most_max_rerank_depth_candidates(demo_index):
    """Each candidate costs the reranker a model pass: however deep a reranker is set (a benchmark
    sets ``depth`` directly), one search's reranking stays bounded."""
    from config import MAX_RERANK_DEPTH

    reranker = CountingReranker(depth=10_000)
    index = PubMedIndex(demo_index, encoder=HashingEncoder(), reranker=reranker)
    assert len(index) > MAX_RERANK_DEPTH
    assert len(index.search("asthma in patients", k=5)) == 5
    assert reranker.seen == [MAX_RERANK_DEPTH]
