"""BM25 over title + abstract, stored in every index generation next to the vectors.

Why lexical search at all: a question naming a drug, gene or scale ("Does intravenous
paracetamol ...") is answered by the abstract that shares those rare words, and a small sentence
encoder sometimes ranks a topically similar abstract above it. BM25 and the dense encoder make
different mistakes, so ``index/fusion.py`` combines them (figures in BENCHMARKS.md).

Built with bm25s: the BM25 weight of every (term, document) pair is precomputed into a sparse
matrix, saved as ``.npy`` arrays and JSON (loaded with ``allow_pickle=False``, memory-mapped), so
a query is a sum of a few sparse columns. Text is lower-cased, English stopwords are dropped and
words are Snowball-stemmed (PyStemmer), which is what lifted BM25 most on the dev sets.

bm25s cannot add documents to an existing matrix, so every ingest rebuilds it from the
generation's metadata store (``build_for_generation``): a few seconds per 10^4 abstracts. Row i
of the matrix is the i-th article in PMID order; ``pmids.npy`` maps rows back to PMIDs.
Deliberately not handled: field weights (title vs abstract), phrase queries, query syntax.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from ingest.records import Article

log = logging.getLogger(__name__)

BM25_DIR = "bm25"  # folder inside a generation
_PMIDS = "pmids.npy"
# Lucene's BM25 with k1 = 1.5, b = 0.75 (bm25s' defaults); on the dev sets no other (k1, b) or
# variant (BM25+, BM25L) was better on both PubMedQA and BioASQ, so the textbook values stay.
K1, B = 1.5, 0.75
_BUILD_BATCH = 20_000  # texts tokenised at a time: bounds the memory of the token lists


class BM25Unavailable(RuntimeError):
    pass


def _bm25s():
    try:
        import bm25s
    except ImportError as exc:  # pragma: no cover - bm25s is a runtime requirement
        raise BM25Unavailable("BM25 search needs bm25s and PyStemmer: pip install bm25s PyStemmer") from exc
    logging.getLogger("bm25s").setLevel(logging.WARNING)  # bm25s turns on DEBUG logging on import
    return bm25s


@functools.cache
def _stemmer():
    try:
        import Stemmer
    except ImportError as exc:  # pragma: no cover
        raise BM25Unavailable("BM25 stemming needs PyStemmer: pip install PyStemmer") from exc
    return Stemmer.Stemmer("english")


def tokenize(texts: Sequence[str]) -> list[list[str]]:
    """Lower-cased, stopword-free, stemmed word tokens: the same for abstracts and queries."""
    return _bm25s().tokenize(list(texts), stopwords="en", stemmer=_stemmer(), return_ids=False, show_progress=False)


class BM25Index:
    """Scores every article for a query; ``pmids[i]`` is the PMID of row ``i`` (ascending)."""

    def __init__(self, model, pmids: np.ndarray) -> None:
        self.model = model
        self.pmids = np.asarray(pmids, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.pmids)

    @classmethod
    def build(cls, articles: Iterable[Article]) -> BM25Index:
        """Index ``articles`` (given in ascending PMID order, as the metadata store yields them)."""
        bm25s = _bm25s()
        pmids: list[int] = []
        tokens: list[list[str]] = []
        batch: list[str] = []
        for article in articles:
            pmids.append(int(article.pmid))
            batch.append(article.text)
            if len(batch) == _BUILD_BATCH:
                tokens += tokenize(batch)
                batch = []
        tokens += tokenize(batch) if batch else []
        model = bm25s.BM25(k1=K1, b=B)
        if tokens:
            model.index(tokens, show_progress=False)
        return cls(model, np.asarray(pmids, dtype=np.int64))

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        np.save(folder / _PMIDS, self.pmids, allow_pickle=False)
        if len(self):
            self.model.save(str(folder), allow_pickle=False)

    @classmethod
    def load(cls, folder: Path) -> BM25Index:
        pmids = np.load(folder / _PMIDS, allow_pickle=False)
        bm25s = _bm25s()
        if len(pmids) == 0:
            return cls(bm25s.BM25(k1=K1, b=B), pmids)
        model = bm25s.BM25.load(str(folder), mmap=True, allow_pickle=False, show_progress=False)
        return cls(model, pmids)

    def scores(self, query: str) -> np.ndarray:
        """The BM25 score of every row for ``query`` (zeros when it shares no indexed word)."""
        if not len(self):
            return np.zeros(0, dtype=np.float32)
        ids = self.model.get_tokens_ids(tokenize([query])[0])
        if not ids:
            return np.zeros(len(self), dtype=np.float32)
        return np.asarray(self.model.get_scores_from_ids(ids), dtype=np.float32)

    def rows(self, pmids: np.ndarray) -> np.ndarray:
        """Row numbers of those of ``pmids`` that are indexed."""
        pmids = np.asarray(pmids, dtype=np.int64)
        at = np.searchsorted(self.pmids, pmids).clip(0, max(len(self) - 1, 0))
        return at[self.pmids[at] == pmids] if len(self) else at[:0]

    def search(
        self, query: str, k: int, *, allowed: np.ndarray | None = None, scores: np.ndarray | None = None
    ) -> list[tuple[int, float]]:
        """(PMID, score) of the ``k`` best-scoring articles with a positive score, best first;
        ``allowed`` (PMIDs) restricts the candidates, as a filter does; ``scores``: this query's
        ``scores(query)``, when the caller already has them."""
        scores = self.scores(query) if scores is None else scores
        if allowed is not None:
            mask = np.zeros(len(scores), dtype=bool)
            mask[self.rows(allowed)] = True
            scores = np.where(mask, scores, 0.0)
        k = min(k, int(np.count_nonzero(scores > 0)))
        if k <= 0:
            return []
        top = np.argpartition(-scores, k - 1)[:k]
        top = top[np.lexsort((self.pmids[top], -scores[top]))]  # ties: lower PMID first, reproducibly
        return [(int(self.pmids[i]), float(scores[i])) for i in top]


def build_for_generation(generation: Path) -> BM25Index:
    """(Re)build the BM25 index of a (staged) generation from its metadata store and save it there."""
    index = _build_from_store(generation)
    index.save(generation / BM25_DIR)
    return index


def open_for_generation(generation: Path) -> BM25Index:
    """The generation's BM25 index; one built before BM25 existed is built in memory (with a notice)."""
    folder = generation / BM25_DIR
    if (folder / _PMIDS).exists():
        return BM25Index.load(folder)
    log.warning("%s has no BM25 index (built by an older version); building it in memory.", generation)
    return _build_from_store(generation)


def _build_from_store(generation: Path) -> BM25Index:
    from index.storage import METADATA
    from index.store import MetadataStore

    store = MetadataStore(generation / METADATA, read_only=True)
    try:
        return BM25Index.build(store.iter_articles())
    finally:
        store.close()
