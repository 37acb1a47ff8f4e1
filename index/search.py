"""Open an index read-only and search it with the encoder it was built with."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from index.encoder import Encoder, load_encoder
from index.manifest import Manifest
from index.storage import MANIFEST, METADATA, VECTORS, IndexDir
from index.store import MetadataStore
from index.vectors import VectorIndex
from ingest.records import Article

PUBMED_URL = "https://pubmed.ncbi.nlm.nih.gov/{pmid}/"


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
    """A committed index generation: vectors, metadata and manifest, opened together."""

    def __init__(self, index_dir: Path, *, encoder: Encoder | None = None, max_seq_length: int = 256) -> None:
        self.index_dir = Path(index_dir)
        self.generation = IndexDir(self.index_dir).require_current()
        self.manifest = Manifest.load(self.generation / MANIFEST)
        self.vectors = VectorIndex.load(self.generation / VECTORS)
        self.store = MetadataStore(self.generation / METADATA, read_only=True)
        self._encoder = encoder
        self._max_seq_length = max_seq_length
        if encoder is not None and (encoder.name, encoder.dim) != (self.manifest.encoder, self.manifest.dim):
            raise ValueError(f"index uses {self.manifest.encoder}, not {encoder.name}")

    @property
    def encoder(self) -> Encoder:
        """The manifest's encoder, loaded on first use; never a fallback, so vectors stay comparable."""
        if self._encoder is None:
            self._encoder = load_encoder(self.manifest.encoder, fallback=False, max_seq_length=self._max_seq_length)
        return self._encoder

    def __len__(self) -> int:
        return len(self.vectors)

    def search(self, query: str, k: int = 10) -> list[Hit]:
        if not query.strip() or len(self) == 0:
            return []
        scores, ids = self.vectors.search(self.encoder.encode([query]), min(k, len(self)))
        found = [(int(i), float(s)) for i, s in zip(ids[0], scores[0], strict=True) if i >= 0]
        articles = self.store.get(i for i, _ in found)
        hits = [(articles[str(i)], s) for i, s in found if str(i) in articles]
        return [Hit(article, score, rank) for rank, (article, score) in enumerate(hits, start=1)]

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
        }
