"""Open an index read-only and search it with the encoder it was built with.

``PubMedIndex.search(query, k)`` ranks with the index's default retriever (``hybrid``: dense +
BM25 fused, see ``index/hybrid.py``), optionally restricted by ``Filters`` and reordered by a
cross-encoder (``index/rerank.py``). Whatever ranked them, every hit's ``score`` is the cosine
similarity of the query and the abstract's vector, so the chatbot's abstention threshold means the
same for every retriever. Queries are embedded by the manifest's query encoder (the article
encoder unless the index was built with an asymmetric pair such as MedCPT's), never a fallback.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from config import MAX_RERANK_DEPTH, MAX_TOP_K, Config
from index.encoder import Encoder, load_encoder
from index.filters import Filters
from index.hybrid import DEFAULT_RETRIEVER, Ranked, check_retriever, rank
from index.manifest import Manifest
from index.meta_segments import open_store
from index.rerank import Reranker
from index.segments import SegmentedVectors
from index.storage import MANIFEST, IndexDir
from ingest.records import Article

log = logging.getLogger(__name__)

PUBMED_URL = "https://pubmed.ncbi.nlm.nih.gov/{pmid}/"
EXACT_FILTERED = 20_000  # with an ANN index, a filter passing at most this many is searched exactly (~30 MB read)


@dataclass(frozen=True)
class Hit:
    article: Article
    score: float  # cosine similarity of query and abstract, in [-1, 1]
    rank: int  # 1-based

    @property
    def pmid(self) -> str:
        return self.article.pmid

    @property
    def url(self) -> str:
        return PUBMED_URL.format(pmid=self.article.pmid)

    def as_dict(self) -> dict[str, object]:
        return {
            "pmid": self.pmid,
            "score": round(self.score, 4),
            "title": self.article.title,
            "year": self.article.year,
        }


class PubMedIndex:
    """A committed index generation: vectors, BM25, metadata and manifest, opened together."""

    def __init__(
        self,
        index_dir: Path,
        *,
        encoder: Encoder | None = None,
        query_encoder: Encoder | None = None,
        max_seq_length: int = 256,
        retriever: str = DEFAULT_RETRIEVER,
        reranker: Reranker | None = None,
    ) -> None:
        from index.ann import open_ann
        from index.ann_segments import open_segmented

        self.index_dir = Path(index_dir)
        self.generation = IndexDir(self.index_dir).require_current()
        self.manifest = Manifest.load(self.generation / MANIFEST)
        self.vectors = SegmentedVectors.open(self.generation, self.manifest.segments, self.manifest.dim)
        self.ann = open_segmented(self.generation, self.vectors) if self.manifest.ann == "ivfpq" else None
        if self.ann is None:  # HNSW, or IVF-PQ written before segments; None: the flat vectors are searched
            self.ann = open_ann(self.generation, self.manifest, self.vectors)
        self.store = open_store(self.generation, self.manifest.meta_segments)
        self.retriever = check_retriever(retriever)
        self._reranker = reranker
        self._encoder, self._query_encoder = encoder, query_encoder
        self._max_seq_length = max_seq_length
        self._bm25 = None
        self._lock = threading.Lock()
        self._last_first_stage: tuple[tuple | None, tuple[np.ndarray, Ranked] | None] = (None, None)
        if encoder is not None and (encoder.name, encoder.dim) != (self.manifest.encoder, self.manifest.dim):
            raise ValueError(f"index uses {self.manifest.encoder}, not {encoder.name}")
        backend = getattr(encoder, "backend", "torch")
        if encoder is not None and backend != self.manifest.encoder_backend:
            raise ValueError(f"index was embedded by the {self.manifest.encoder_backend} backend, not {backend}")
        expected = self.manifest.query_encoder or self.manifest.encoder
        if query_encoder is not None and query_encoder.name != expected:
            raise ValueError(f"index embeds queries with {expected}, not {query_encoder.name}")

    @property
    def reranks(self) -> bool:
        """A reranker is configured (it may not be loaded yet, and offline it may turn out unavailable)."""
        return self._reranker is not None

    @property
    def reranker(self) -> Reranker | None:
        """The configured reranker, loaded on first use (a lazy one loads its model now)."""
        load = getattr(self._reranker, "load", None)
        return load() if load is not None else self._reranker

    @reranker.setter
    def reranker(self, reranker: Reranker | None) -> None:
        self._reranker = reranker

    @property
    def encoder(self) -> Encoder:
        """The manifest's encoder, loaded on first use; never a fallback, so vectors stay comparable."""
        if self._encoder is None:
            self._encoder = load_encoder(
                self.manifest.encoder,
                fallback=False,
                max_seq_length=self._max_seq_length,
                backend=self.manifest.encoder_backend,
            )
        return self._encoder

    @property
    def query_encoder(self) -> Encoder:
        """The manifest's query encoder (asymmetric pairs), else the article encoder."""
        if not self.manifest.query_encoder or self.manifest.query_encoder == self.manifest.encoder:
            return self._query_encoder or self.encoder
        if self._query_encoder is None:
            self._query_encoder = load_encoder(
                self.manifest.query_encoder, fallback=False, role="query", backend=self.manifest.encoder_backend
            )
        return self._query_encoder

    @property
    def bm25(self):
        from index.bm25 import open_for_generation

        if self._bm25 is None:
            self._bm25 = open_for_generation(self.generation)
        return self._bm25

    def __len__(self) -> int:
        return len(self.vectors)

    def search(
        self,
        query: str,
        k: int = 10,
        *,
        retriever: str | None = None,
        filters: Filters | None = None,
        rerank: bool = True,
    ) -> list[Hit]:
        """The ``k`` best abstracts for ``query`` (``k``: 1 to ``MAX_TOP_K``); ``rerank=False`` skips a
        configured reranker."""
        if not 1 <= k <= MAX_TOP_K:
            raise ValueError(f"k={k}: ask for 1 to {MAX_TOP_K} hits")
        if not query.strip() or len(self) == 0:
            return []
        allowed = filters.allowed_pmids(self.store.db) if filters else None
        if allowed is not None and len(allowed) == 0:
            return []
        reranker = self.reranker if rerank else None
        depth = max(k, min(reranker.depth, MAX_RERANK_DEPTH)) if reranker else k  # bounded work per request
        vector, ranked = self._first_stage(query, depth, retriever or self.retriever, allowed, reranker is not None)
        articles = self.store.get(p for p, _ in ranked)
        kept = [(articles[str(p)], s) for p, s in ranked if str(p) in articles]
        found = [a for a, _ in kept]
        if reranker is not None:
            found = reranker.rerank(query, found, [s for _, s in kept])
        found = found[:k]
        scores = self._cosine(vector, [int(a.pmid) for a in found])
        return [Hit(a, float(s), r) for r, (a, s) in enumerate(zip(found, scores, strict=True), start=1)]

    def _first_stage(
        self, query: str, depth: int, retriever: str, allowed: np.ndarray | None, standardized: bool
    ) -> tuple[np.ndarray, Ranked]:
        """The query's vector and the first stage's top ``depth``. The last unfiltered one is kept: a
        chat shows the first stage's sources (``rerank=False``), then reranks the same question, and
        the question is encoded and ranked (BM25 over every article) once for both."""
        standardized = standardized and retriever != "hybrid"  # hybrid's fused scores are z-scores already
        key = (query, depth, retriever, standardized) if allowed is None else None
        with self._lock:
            last_key, last = self._last_first_stage
        if key is not None and key == last_key and last is not None:
            return last
        vector = self.query_encoder.encode([query])
        bm25 = _Lexical(self.bm25, query, allowed)  # scores every article once, on first use
        ranked = rank(
            retriever,
            depth,
            dense=lambda n: self._dense(vector, n, allowed),
            bm25=bm25.top,
            cosine=lambda pmids: self._cosine(vector, pmids),
            bm25_score=bm25.of,
            standardized=standardized,
            exact=bm25.exact,
        )
        if key is not None:
            with self._lock:
                self._last_first_stage = (key, (vector, ranked))
        return vector, ranked

    def _dense(self, vector: np.ndarray, n: int, allowed: np.ndarray | None) -> Ranked:
        n = min(n, len(self) if allowed is None else len(allowed))
        if allowed is not None and self.ann is not None and len(allowed) <= EXACT_FILTERED:
            scores = self._cosine(vector, allowed.tolist())  # exact: a graph search can miss sparse matches
            top = np.argsort(-scores, kind="stable")[:n]
            return [(int(allowed[i]), float(scores[i])) for i in top]
        source = self.ann or self.vectors
        scores, ids = source.search(vector, n, allowed=allowed)
        return [(int(i), float(s)) for i, s in zip(ids[0], scores[0], strict=True) if i >= 0]

    def _cosine(self, vector: np.ndarray, pmids: list[int]) -> np.ndarray:
        """Exact cosine similarity of the query and each stored vector (the index holds unit vectors)."""
        return self.vectors.vectors(np.asarray(pmids, dtype=np.int64)) @ vector[0] if pmids else np.zeros(0)

    def facets(self, *, top: int = 50) -> dict[str, object]:
        """Year range and the most frequent publication types, journals and MeSH terms, for filter UIs."""
        from index.filters import facets

        return facets(self.store.db, top=top)

    def stats(self) -> dict[str, object]:
        return {
            "documents": len(self),
            "encoder": self.manifest.encoder,
            "dim": self.manifest.dim,
            "normalized": self.manifest.normalized,
            "index_type": self.manifest.index_type,
            "files": len(self.manifest.files),
            "updated_at": self.manifest.updated_at,
            "generation": self.generation.name,
            "query_encoder": self.manifest.query_encoder or self.manifest.encoder,
            "ann": self.manifest.ann or "none (exact flat search)",
            "bm25": (self.generation / "bm25").exists(),
            "retriever": self.retriever,
        }


def open_index(config: Config, *, encoder: Encoder | None = None) -> PubMedIndex:
    """The index at ``config.index_dir`` with the configured retriever and reranker; a damaged index
    is one ``IndexUnusable`` line naming the file (``index/checks.py``), not a traceback mid-search."""
    from index.checks import check_index
    from index.rerank import lazy_reranker

    check_index(config.index_dir)

    return PubMedIndex(
        config.index_dir,
        encoder=encoder,
        max_seq_length=config.max_seq_length,
        retriever=config.retriever,
        reranker=lazy_reranker(config.rerank, depth=config.rerank_depth),
    )


class _Lexical:
    """One query's BM25 scores over the whole index, computed once and shared by ranking and rescoring."""

    def __init__(self, index, query: str, allowed: np.ndarray | None) -> None:
        self.index, self.query, self.allowed = index, query, allowed
        self._scores: np.ndarray | None = None

    def top(self, n: int) -> Ranked:
        return self.index.search(self.query, n, allowed=self.allowed, scores=self.scores())

    def of(self, pmids: list[int]) -> np.ndarray:
        """BM25 scores of ``pmids`` (0 for one BM25 does not hold)."""
        rows = self.index.rows(np.asarray(pmids, dtype=np.int64))
        by_pmid = dict(zip(self.index.pmids[rows].tolist(), self.scores()[rows].tolist(), strict=True))
        return np.asarray([by_pmid.get(p, 0.0) for p in pmids], dtype=np.float32)

    def exact(self) -> list[int]:
        """PMIDs (that the filter allows) holding a rare identifier of the query (index/exact.py)."""
        from index.exact import rare_identifier_rows

        pmids = self.index.pmids[rare_identifier_rows(self.index, self.query)]
        if self.allowed is not None:
            pmids = pmids[np.isin(pmids, self.allowed)]
        return pmids.tolist()

    def scores(self) -> np.ndarray:
        if self._scores is None:
            self._scores = self.index.scores(self.query)
        return self._scores
