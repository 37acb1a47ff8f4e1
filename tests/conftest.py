"""Deterministic fakes so most tests run without any model, plus small real-data fixtures.

``HashingEncoder`` is a real bag-of-words embedding (hashed tokens, L2-normalised): texts that
share words score higher, so retrieval tests on real abstracts are meaningful. ``ScriptedGenerator``
streams a fixed reply word by word, so citation and streaming logic can be checked exactly.
"""

from __future__ import annotations

import hashlib
import os
import re
import string
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest

from config import Config

DATA = Path(__file__).parent / "data"
REPO = Path(__file__).resolve().parent.parent
DEMO_CORPUS = REPO / "data" / "demo" / "pubmed_demo.xml.gz"
SHARED = REPO.parent / "shared"

# The default reranker (query likelihood under SmolLM2, index/rerank.py) loads a language model and
# reads five abstracts per question. Tests of other things, in this process and the command lines
# they start, run without it; tests/test_rerank_ql.py tests it, the default configuration included.
os.environ.setdefault("PUBMED_RAG_RERANK", "off")


class HashingEncoder:
    name = "test/hashing-encoder"

    def __init__(self, dim: int = 256) -> None:
        self.dim = dim
        self.calls = 0  # texts encoded so far, to check what gets (re-)embedded

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        self.calls += len(texts)
        vectors = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for token in re.findall(r"[a-z0-9]+", text.lower()):
                vectors[row, int(hashlib.md5(token.encode()).hexdigest(), 16) % self.dim] += 1.0
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return vectors / np.where(norms == 0, 1.0, norms)


class ScriptedGenerator:
    """Streams ``reply`` word by word; with ``later`` replies, each call takes the next (the last repeats)."""

    name = "test/scripted-generator"

    def __init__(self, reply: str, *later: str) -> None:
        self.replies = [reply, *later]
        self.reply = reply
        self.messages: list[dict[str, str]] = []  # the last prompt, for inspection
        self.calls: list[list[dict[str, str]]] = []  # every prompt, in order

    def stream(
        self,
        messages: Sequence[dict[str, str]],
        *,
        max_new_tokens: int = 0,
        temperature: float = 0.0,
        stop: threading.Event | None = None,
    ) -> Iterator[str]:
        self.messages = list(messages)
        self.calls.append(self.messages)
        reply = self.replies[min(len(self.calls), len(self.replies)) - 1]
        for word in re.findall(r"\S+\s*", reply):
            if stop is not None and stop.is_set():
                return
            yield word


@pytest.fixture
def encoder() -> HashingEncoder:
    return HashingEncoder()


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return Config(index_dir=tmp_path / "index", batch_size=16)


@pytest.fixture(scope="session")
def demo_subset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first 150 records of the bundled demo corpus, as a real PubMed XML file."""
    import gzip

    from lxml import etree

    path = tmp_path_factory.mktemp("corpus") / "demo_subset.xml.gz"
    records = []
    with gzip.open(DEMO_CORPUS) as corpus:
        for _, element in etree.iterparse(corpus, tag="PubmedArticle"):
            records.append(etree.tostring(element))
            if len(records) == 150:
                break
    with gzip.open(path, "wb") as out:
        out.write(b"<PubmedArticleSet>\n" + b"\n".join(records) + b"\n</PubmedArticleSet>\n")
    return path


@pytest.fixture(scope="session")
def demo_index(demo_subset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An index of ``demo_subset`` built with the hashing encoder (read-only for tests)."""
    from index.writer import ingest_files
    from ingest.sources import read_source

    index_dir = tmp_path_factory.mktemp("demo") / "index"
    ingest_files([demo_subset], Config(index_dir=index_dir), read=read_source, encoder=HashingEncoder(), progress=False)
    return index_dir


@pytest.fixture(scope="module")
def index(demo_index: Path):
    """``demo_index`` opened for search with the hashing encoder it was built with."""
    from index.search import PubMedIndex

    return PubMedIndex(demo_index, encoder=HashingEncoder())


@pytest.fixture(scope="module")
def titles(index) -> list[str]:
    """Every demo article's title: a query that finds that article."""
    return [a.title for a in index.store.iter_articles()]


# --- a tiny randomly initialised BERT: the PubMedBERT code path without downloadable weights ---

TINY_BERT_DIM = 32

TINY_BERT_VOCAB = (
    ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    + list(string.ascii_lowercase + string.digits + ".,;:-()%/")
    + ["##" + c for c in string.ascii_lowercase + string.digits]
    + ["asthma", "budesonide", "patients", "the", "and", "of", "in", "with", "cancer", "lung"]
)


def _sentence_transformer_modules():
    try:  # sentence-transformers >= 6
        from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer
    except ImportError:
        from sentence_transformers.models import Normalize, Pooling, Transformer
    return Transformer, Pooling, Normalize


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    """A 2-layer, 32-d BERT with random weights and a ~100-token WordPiece vocabulary."""
    import torch
    from sentence_transformers import SentenceTransformer
    from transformers import BertConfig, BertModel, BertTokenizerFast

    root = tmp_path_factory.mktemp("encoder")
    bert = root / "tiny-bert"
    bert.mkdir()
    (bert / "vocab.txt").write_text("\n".join(TINY_BERT_VOCAB) + "\n", encoding="utf-8")
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(TINY_BERT_VOCAB),
        hidden_size=TINY_BERT_DIM,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    BertModel(config).save_pretrained(bert)
    tokenizer = BertTokenizerFast.from_pretrained(str(bert))
    assert tokenizer.tokenize("Asthma 12") == ["asthma", "1", "##2"]  # the vocabulary really is in use
    tokenizer.save_pretrained(bert)

    Transformer, Pooling, Normalize = _sentence_transformer_modules()
    modules = [Transformer(str(bert), max_seq_length=128), Pooling(TINY_BERT_DIM, pooling_mode="mean"), Normalize()]
    path = root / "tiny-st"
    SentenceTransformer(modules=modules, device="cpu").save(str(path))
    return path
