"""Deterministic fakes so most tests run without any model, plus small real-data fixtures.

``HashingEncoder`` is a real bag-of-words embedding (hashed tokens, L2-normalised): texts that
share words score higher, so retrieval tests on real abstracts are meaningful. ``ScriptedGenerator``
streams a fixed reply word by word, so citation and streaming logic can be checked exactly.
"""

from __future__ import annotations

import hashlib
import re
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
