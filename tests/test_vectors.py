"""Vector index backends (index/vectors.py, index/ann.py): flat, HNSW and IVF-PQ on random
clustered unit vectors, parametrised over index types, plus the choice by size and the index
directory integration (ann.faiss built at ingest, memory-mapped at search)."""

from __future__ import annotations

import numpy as np
import pytest

from config import Config
from index import ann
from index.ann import AnnIndex, build_ann, choose_kind, nlist_for, pq_bytes_for
from index.manifest import Manifest
from index.search import PubMedIndex
from index.storage import MANIFEST, IndexDir
from index.vectors import VectorIndex
from index.writer import ingest_files
from ingest import read_source
from tests.conftest import HashingEncoder

DIM = 32


def clustered(count: int, seed: int = 0, clusters: int = 50) -> np.ndarray:
    """Unit vectors around random centres: embeddings are clustered by topic, not uniform."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, DIM))
    vectors = centres[rng.integers(0, clusters, count)] + 0.6 * rng.standard_normal((count, DIM))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors.astype(np.float32)


COUNT = 5000


@pytest.fixture(scope="module")
def flat() -> VectorIndex:
    index = VectorIndex.create(DIM)
    index.add(np.arange(1000, 1000 + COUNT, dtype=np.int64), clustered(COUNT))
    return index


@pytest.fixture(scope="module")
def built(flat) -> dict[str, AnnIndex]:
    """Each approximate backend built once over ``flat`` (IVF-PQ rescoring from it)."""
    indexes = {kind: build_ann(flat, kind) for kind in ("hnsw", "ivfpq")}
    indexes["ivfpq"].exact = flat.vectors
    return indexes


def recall_at_10(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth, strict=True)]))


@pytest.fixture(scope="module")
def queries() -> np.ndarray:
    return clustered(50, seed=1)


@pytest.mark.parametrize("kind", ["hnsw", "ivfpq"])
def test_approximate_search_recalls_the_exact_top_10(flat, built, queries, kind):
    index = built[kind]
    assert len(index) == len(flat)
    truth = np.stack([flat.search(q[None], 10)[1][0] for q in queries])
    found = np.stack([index.search(q[None], 10)[1][0] for q in queries])
    assert recall_at_10(found, truth) >= 0.9  # uniform noise within clusters is a hard case (BENCHMARKS.md)
    assert set(np.unique(found)) <= set(range(1000, 1000 + COUNT))  # ids are PMIDs, not rows


def test_ivfpq_scores_after_refinement_are_exact(flat, built, queries):
    scores, ids = built["ivfpq"].search(queries[:1], 5)
    assert np.allclose(scores[0], flat.vectors(ids[0]) @ queries[0], atol=1e-5)
    assert list(scores[0]) == sorted(scores[0], reverse=True)


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivfpq"])
def test_allowed_ids_restrict_every_backend(flat, built, queries, kind):
    allowed = np.arange(1000, 1000 + COUNT, 7, dtype=np.int64)
    index = flat if kind == "flat" else built[kind]
    _, ids = index.search(queries[:1], 10, allowed=allowed)
    assert set(ids[0][ids[0] >= 0]) <= set(allowed) and (ids[0] >= 0).sum() >= 5


@pytest.mark.parametrize("kind", ["hnsw", "ivfpq"])
def test_saved_index_loads_memory_mapped_with_the_same_results(built, queries, kind, tmp_path):
    index = AnnIndex(built[kind].index, kind)  # without exact rescoring: the stored codes alone
    index.save(tmp_path / "ann.faiss")
    loaded = AnnIndex.load(tmp_path / "ann.faiss", kind)
    for query in queries[:5]:
        assert np.array_equal(loaded.search(query[None], 10)[1], index.search(query[None], 10)[1])


def test_flat_index_loads_memory_mapped(flat, queries, tmp_path):
    flat.save(tmp_path / "vectors.faiss")
    loaded = VectorIndex.load(tmp_path / "vectors.faiss", mmap=True)
    assert np.array_equal(loaded.search(queries[:3], 10)[1], flat.search(queries[:3], 10)[1])
    assert np.allclose(loaded.vectors(np.array([1000, 1005])), flat.vectors(np.array([1000, 1005])))


def test_choice_by_size_and_flag():
    assert choose_kind(10_000) == "flat" and choose_kind(ann.AUTO_ANN_FROM) == "ivfpq"
    assert choose_kind(10_000, "hnsw") == "hnsw" and choose_kind(10**7, "flat") == "flat"
    assert choose_kind(1000, "ivfpq") == "flat"  # too few vectors to train the quantisers
    with pytest.raises(ValueError, match="index type"):
        choose_kind(10, "lsh")


def test_parameters_follow_the_collection():
    assert nlist_for(1_000_000) == 1024 and nlist_for(24_000_000) == 4096 and nlist_for(10) == 64
    assert pq_bytes_for(384) == 64 and pq_bytes_for(768) == 64 and pq_bytes_for(100) == 25 and pq_bytes_for(32) == 8


@pytest.mark.parametrize("kind", ["hnsw", "flat"])
def test_ingest_builds_the_chosen_index_and_search_uses_it(tmp_path, demo_subset, kind):
    config = Config(index_dir=tmp_path / "index", index_type=kind)
    ingest_files([demo_subset], config, read=read_source, encoder=HashingEncoder(), progress=False)
    generation = IndexDir(config.index_dir).require_current()
    assert Manifest.load(generation / MANIFEST).ann == ("" if kind == "flat" else kind)
    assert (generation / ann.ANN_FILE).exists() == (kind != "flat")
    index = PubMedIndex(config.index_dir, encoder=HashingEncoder())
    assert (index.ann is not None) == (kind != "flat") and index.stats()["ann"] != ""
    titles = [a.title for a in list(index.store.iter_articles())[:20]]
    assert sum(index.search(t, k=1, retriever="dense")[0].article.title == t for t in titles) >= 19


def test_a_later_ingest_rebuilds_or_drops_the_ann_index(tmp_path, demo_subset):
    config = Config(index_dir=tmp_path / "index", index_type="hnsw")
    ingest_files([demo_subset], config, read=read_source, encoder=HashingEncoder(), progress=False)
    more = tmp_path / "more.jsonl"
    more.write_text('{"pmid": "1", "title": "Zebrafish fins", "abstract": "Regeneration of zebrafish fins."}\n')
    ingest_files([more], Config(index_dir=config.index_dir), read=read_source, encoder=HashingEncoder(), progress=False)
    generation = IndexDir(config.index_dir).require_current()
    assert not (generation / ann.ANN_FILE).exists()  # auto at 151 vectors: exact search
    assert PubMedIndex(config.index_dir, encoder=HashingEncoder()).search("zebrafish fins", 1)[0].pmid == "1"


def test_narrow_filter_on_an_approximate_index_is_searched_exactly(tmp_path, demo_subset):
    from index.filters import Filters

    config = Config(index_dir=tmp_path / "index", index_type="hnsw")
    ingest_files([demo_subset], config, read=read_source, encoder=HashingEncoder(), progress=False)
    index = PubMedIndex(config.index_dir, encoder=HashingEncoder())
    reviews = {a.pmid for a in index.store.iter_articles() if "Review" in a.publication_types}
    hits = index.search("patients", k=100, retriever="dense", filters=Filters(publication_types=("Review",)))
    assert {h.pmid for h in hits} == reviews  # every passing article, none other
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
