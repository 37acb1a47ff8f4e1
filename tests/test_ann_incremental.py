"""IVF-PQ carried forward between generations (index/ann.py): an update removes the changed PMIDs
and adds the new vectors instead of retraining, gives the results a from-scratch build gives,
never brings a deleted PMID back, leaves the live generation's file untouched, and retrains when
``needs_training`` says so. Small collections with the thresholds lowered, so it runs in seconds."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from config import Config
from index import ann
from index.ann import AnnIndex, Training, VectorChanges, build_for_generation, needs_training
from index.search import PubMedIndex
from index.storage import IndexDir
from index.vectors import VectorIndex
from index.writer import ingest_files
from ingest import read_source
from ingest.records import Deletion
from tests.conftest import HashingEncoder
from tests.test_vectors import DIM, clustered, recall_at_10

COUNT, FIRST = 6000, 1000


@pytest.fixture(autouse=True)
def small_thresholds(monkeypatch):
    monkeypatch.setattr(ann, "IVFPQ_MIN_VECTORS", 500)


def write_generation(folder: Path, ids: np.ndarray, vectors: np.ndarray) -> VectorIndex:
    """A generation folder holding ``vectors.faiss``, opened memory-mapped as ``finish_generation`` opens it."""
    folder.mkdir(parents=True)
    flat = VectorIndex.create(DIM)
    flat.add(ids, vectors)
    flat.save(folder / "vectors.faiss")
    return VectorIndex.load(folder / "vectors.faiss", mmap=True)


def stored_ids(index: AnnIndex) -> np.ndarray:
    """Every id in the IVF lists, duplicates included."""
    import faiss

    lists = faiss.extract_index_ivf(index.index).invlists
    parts = [faiss.rev_swig_ptr(lists.get_ids(i), lists.list_size(i)).copy() for i in range(lists.nlist)]
    return np.concatenate(parts)


def centroids(index: AnnIndex) -> np.ndarray:
    import faiss

    quantizer = faiss.extract_index_ivf(index.index).quantizer
    return quantizer.reconstruct_n(0, quantizer.ntotal)


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.fixture
def update(tmp_path):
    """Generation 1 (IVF-PQ trained from scratch) and the flat index of generation 2, after an
    update that deletes 300 PMIDs, re-embeds 300 and adds 600 new ones."""
    ids = np.arange(FIRST, FIRST + COUNT, dtype=np.int64)
    gen1 = tmp_path / "gen-000001"
    flat1 = write_generation(gen1, ids, clustered(COUNT))
    assert build_for_generation(gen1, flat1, "ivfpq") == "ivfpq"
    rng = np.random.default_rng(5)
    touched = rng.choice(ids, 600, replace=False)
    replaced, deleted = touched[:300], touched[300:]
    new = np.arange(FIRST + COUNT, FIRST + COUNT + 600, dtype=np.int64)
    added = np.concatenate([replaced, new])
    keep = ~np.isin(ids, touched)
    fresh = clustered(900, seed=7)
    flat2 = write_generation(
        tmp_path / "gen-000002", np.concatenate([ids[keep], added]), np.concatenate([flat1.vectors(ids[keep]), fresh])
    )
    changes = VectorChanges(removed=touched, added=added)
    return {"gen1": gen1, "gen2": tmp_path / "gen-000002", "flat2": flat2, "changes": changes, "deleted": deleted}


def test_update_applies_the_changes_without_retraining(update):
    gen1, gen2, flat2, changes = update["gen1"], update["gen2"], update["flat2"], update["changes"]
    before = md5(gen1 / ann.ANN_FILE)
    assert build_for_generation(gen2, flat2, "ivfpq", previous=gen1, changes=changes) == "ivfpq"
    assert md5(gen1 / ann.ANN_FILE) == before  # the live generation is only read
    old, new = (AnnIndex.load(g / ann.ANN_FILE, "ivfpq") for g in (gen1, gen2))
    assert np.array_equal(centroids(old), centroids(new))  # the same trained cells: not retrained
    training = Training.load(gen2 / ann.TRAINING_FILE)
    assert training is not None and (training.trained_on, training.added_since) == (COUNT, 900)
    ids = stored_ids(new)
    assert len(ids) == len(np.unique(ids)) == len(flat2)  # every PMID exactly once
    assert set(ids.tolist()) == set(range(FIRST, FIRST + COUNT + 600)) - set(update["deleted"].tolist())


def test_updated_index_finds_re_embedded_vectors_by_their_new_codes(update):
    gen2, flat2, changes = update["gen2"], update["flat2"], update["changes"]
    build_for_generation(gen2, flat2, "ivfpq", previous=update["gen1"], changes=changes)
    codes_only = AnnIndex.load(gen2 / ann.ANN_FILE, "ivfpq")  # no exact rescoring: the stored codes decide
    replaced = changes.added[:50]
    found = sum(pmid in codes_only.search(flat2.vectors(np.array([pmid]))[0:1], 10)[1][0] for pmid in replaced)
    assert found >= 45


def test_update_gives_the_results_of_a_rebuild_and_never_returns_deleted_pmids(update, tmp_path):
    gen2, flat2 = update["gen2"], update["flat2"]
    build_for_generation(gen2, flat2, "ivfpq", previous=update["gen1"], changes=update["changes"])
    incremental = AnnIndex.load(gen2 / ann.ANN_FILE, "ivfpq", exact=flat2.vectors)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    build_for_generation(scratch, flat2, "ivfpq")  # no previous generation: trained from scratch
    rebuilt = AnnIndex.load(scratch / ann.ANN_FILE, "ivfpq", exact=flat2.vectors)
    old = VectorIndex.load(update["gen1"] / "vectors.faiss", mmap=True)
    queries = np.concatenate([clustered(40, seed=1), old.vectors(update["deleted"][:20])])  # deleted ones' own
    truth = np.stack([flat2.search(q[None], 10)[1][0] for q in queries])
    found = np.stack([incremental.search(q[None], 10)[1][0] for q in queries])
    from_scratch = np.stack([rebuilt.search(q[None], 10)[1][0] for q in queries])
    assert recall_at_10(found, truth) >= 0.9
    assert recall_at_10(found, truth) >= recall_at_10(from_scratch, truth) - 0.05
    deep = np.stack([incremental.search(q[None], 100)[1][0] for q in queries])
    assert not np.isin(deep, update["deleted"]).any()


def test_retraining_follows_the_rule(update, monkeypatch):
    gen1, gen2, flat2, changes = update["gen1"], update["gen2"], update["flat2"], update["changes"]
    trained = Training.load(gen1 / ann.TRAINING_FILE)
    assert needs_training(trained, flat2, changes) == ""
    assert "did not say" in needs_training(trained, flat2, None)
    assert "no trained" in needs_training(None, flat2, changes)
    assert "dimension" in needs_training(Training("ivfpq", DIM * 2, 64, 8, COUNT), flat2, changes)
    assert "shrank" in needs_training(Training("ivfpq", DIM, 64, 8, 3 * COUNT), flat2, changes)
    monkeypatch.setattr(ann, "RETRAIN_AFTER", 0.1)  # 900 added > 10% of the 6,000 trained on
    assert "more vectors added" in needs_training(trained, flat2, changes)
    build_for_generation(gen2, flat2, "ivfpq", previous=gen1, changes=changes)
    retrained = Training.load(gen2 / ann.TRAINING_FILE)
    assert retrained is not None and (retrained.trained_on, retrained.added_since) == (len(flat2), 0)


def test_growth_is_counted_across_updates(update, tmp_path):
    """``added_since`` accumulates over generations, so many small updates eventually retrain too."""
    gen1 = update["gen1"]
    record = json.loads((gen1 / ann.TRAINING_FILE).read_text())
    record["added_since"] = COUNT - 100  # as if earlier updates had added almost as many as trained on
    (gen1 / ann.TRAINING_FILE).write_text(json.dumps(record))
    build_for_generation(update["gen2"], update["flat2"], "ivfpq", previous=gen1, changes=update["changes"])
    assert Training.load(update["gen2"] / ann.TRAINING_FILE).trained_on == len(update["flat2"])


def test_an_index_without_a_training_record_is_retrained(update):
    gen1, gen2 = update["gen1"], update["gen2"]
    (gen1 / ann.TRAINING_FILE).unlink()  # e.g. an IVF-PQ file written before the record existed
    build_for_generation(gen2, update["flat2"], "ivfpq", previous=gen1, changes=update["changes"])
    assert Training.load(gen2 / ann.TRAINING_FILE).added_since == 0


def test_switching_to_hnsw_drops_the_training_record(update):
    gen2 = update["gen2"]
    assert build_for_generation(gen2, update["flat2"], "hnsw", previous=update["gen1"], changes=update["changes"])
    assert (gen2 / ann.ANN_FILE).exists() and not (gen2 / ann.TRAINING_FILE).exists()


# --- through the ingest pipeline -------------------------------------------------------------

WORDS = [f"w{i}" for i in range(3000)]


def corpus(path: Path, pmids: range, seed: int) -> Path:
    """JSON Lines records of random words: HashingEncoder gives them distinct, real embeddings."""
    rng = np.random.default_rng(seed)
    with open(path, "w", encoding="utf-8") as out:
        for pmid in pmids:
            words = rng.choice(WORDS, 40)
            record = {"pmid": str(pmid), "title": " ".join(words[:8]), "abstract": " ".join(words[8:])}
            out.write(json.dumps(record) + "\n")
    return path


def reader(path: Path):
    """JSON Lines as usual; a ``.deleted`` file lists PMIDs to delete, as NCBI's DeleteCitation does."""
    if path.suffix == ".deleted":
        return iter([Deletion(tuple(path.read_text().split()))])
    return read_source(path)


@pytest.mark.slow
def test_an_ingest_updates_ivfpq_and_matches_a_fresh_build(tmp_path):
    base = corpus(tmp_path / "base.jsonl", range(1, 2001), seed=0)
    changed = corpus(tmp_path / "update.jsonl", range(1901, 2101), seed=1)  # 100 re-written, 100 new
    deleted = tmp_path / "update.deleted"
    deleted.write_text("\n".join(str(p) for p in range(10, 60)))
    config = Config(index_dir=tmp_path / "index", index_type="ivfpq")
    for files in ([base], [changed, deleted]):
        ingest_files(files, config, read=reader, encoder=HashingEncoder(), progress=False)
    layout = IndexDir(config.index_dir)
    generation = layout.require_current()
    training = Training.load(generation / ann.TRAINING_FILE)
    assert training is not None and (training.trained_on, training.added_since) == (2000, 200)
    updated = PubMedIndex(config.index_dir, encoder=HashingEncoder())
    assert updated.ann is not None and len(updated.ann) == len(updated) == 2050

    fresh_config = Config(index_dir=tmp_path / "fresh", index_type="ivfpq")
    ingest_files([base, changed, deleted], fresh_config, read=reader, encoder=HashingEncoder(), progress=False)
    fresh = PubMedIndex(fresh_config.index_dir, encoder=HashingEncoder())
    assert Training.load(IndexDir(fresh_config.index_dir).require_current() / ann.TRAINING_FILE).added_since == 0

    new_titles = [a.title for a in updated.store.get([str(p) for p in range(1901, 1941)]).values()]
    old_titles = [json.loads(line)["title"] for line in base.read_text().splitlines()[9:59]]  # PMIDs 10-59
    for title in new_titles:
        ours = [h.pmid for h in updated.search(title, 10, retriever="dense")]
        theirs = [h.pmid for h in fresh.search(title, 10, retriever="dense")]
        assert ours[0] == theirs[0] and updated.store.get([ours[0]])[ours[0]].title == title
        assert len(set(ours) & set(theirs)) >= 8
    for title in old_titles:  # a deleted abstract's own words find it nowhere
        assert not {h.pmid for h in updated.search(title, 10, retriever="dense")} & {str(p) for p in range(10, 60)}
