"""Building, updating and searching an index with the hashing encoder: counts, versions, deletions,
idempotence, atomicity and locking; plus the FAISS and SQLite layers on their own."""

from __future__ import annotations

import gzip
import hashlib
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from config import MAX_TOP_K, Config
from index.manifest import Manifest
from index.meta_segments import open_generation as open_metadata
from index.search import PubMedIndex
from index.segments import open_generation
from index.storage import MANIFEST, METADATA, VECTORS, IndexBusy, IndexDir, IndexNotFound
from index.store import MetadataStore
from index.vectors import VectorIndex
from index.writer import ingest_files
from ingest import Article, Section, SourceError, read_source
from tests.conftest import HashingEncoder

DATA = Path(__file__).parent / "data"
NEJM = DATA / "pubmed-29768149.xml"
UPDATE = DATA / "pubmed_update_sample.xml.gz"
EFETCH = sorted(DATA.glob("pubmed[0-9].xml"))
UPDATE_PMIDS = 23  # distinct PMIDs in the update sample, all with an abstract


def ingest(paths, config, encoder):
    return ingest_files(list(paths), config, read=read_source, encoder=encoder, progress=False)


def snapshot(root: Path) -> dict[str, str]:
    """Every file (by content hash) and folder under ``root``, except the lock file."""
    state = {}
    for path in sorted(root.rglob("*")):
        name = path.relative_to(root).as_posix()
        if name == ".lock":
            continue
        state[name] = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "<dir>"
    return state


def stored(index_dir: Path) -> dict[str, Article]:
    store = open_metadata(IndexDir(index_dir).require_current())
    try:
        return {a.pmid: a for a in store.iter_articles()}
    finally:
        store.close()


def vector_ids(index_dir: Path) -> set[int]:
    return set(open_generation(IndexDir(index_dir).require_current()).ids().tolist())


def truncated_gzip(tmp_path: Path) -> Path:
    data = UPDATE.read_bytes()
    path = tmp_path / "truncated.xml.gz"
    path.write_bytes(data[: len(data) // 2])
    return path


def deletion_file(path: Path, *pmids: str) -> Path:
    body = "".join(f'<PMID Version="1">{p}</PMID>' for p in pmids)
    path.write_text(f"<PubmedArticleSet><DeleteCitation>{body}</DeleteCitation></PubmedArticleSet>\n")
    return path


class OtherEncoder(HashingEncoder):
    name = "test/other-encoder"


class CrashingEncoder(HashingEncoder):
    """Fails on its second ``encode`` call, like a model running out of memory mid-ingest."""

    def __init__(self, dim: int = 256) -> None:
        super().__init__(dim)
        self.invocations = 0

    def encode(self, texts):
        self.invocations += 1
        if self.invocations == 2:
            raise RuntimeError("simulated crash while embedding")
        return super().encode(texts)


# --- counts ---------------------------------------------------------------------------------------


def test_update_sample_summary(config, encoder):
    summary = ingest([UPDATE], config, encoder)
    # 28 records of 23 PMIDs, all new to the index: the summary counts each PMID's net effect, so the
    # repeated versions are simply "added"; the 20 deleted PMIDs were never indexed, so nothing is deleted.
    assert summary.as_dict() == {
        "added": UPDATE_PMIDS,
        "replaced": 0,
        "unchanged": 0,
        "deleted": 0,
        "skipped": 0,
        "without_abstract": 0,
        "embedded": UPDATE_PMIDS,
        "failed": 0,
        "resumed": 0,
        "sources": [str(UPDATE)],
    }
    # Texts are embedded as they are read, so the one earlier version whose text a later version in
    # the same file changes (34017925 v1) is embedded too: the price of overlapping reading with encoding.
    assert encoder.calls == UPDATE_PMIDS + 1
    index = PubMedIndex(config.index_dir, encoder=encoder)
    assert len(index) == UPDATE_PMIDS == index.stats()["documents"]
    assert vector_ids(config.index_dir) == {int(p) for p in stored(config.index_dir)}


def test_efetch_summary_counts_records_without_abstract(config, encoder):
    summary = ingest([NEJM, *EFETCH], config, encoder)
    assert (summary.added, summary.without_abstract, summary.embedded) == (8, 1, 8)
    assert summary.replaced == summary.unchanged == summary.deleted == summary.skipped == 0
    assert "12091962" not in stored(config.index_dir)  # no abstract: nothing to retrieve on
    assert len(PubMedIndex(config.index_dir, encoder=encoder)) == 8


def test_skipped_records_are_counted(tmp_path, config, encoder):
    path = tmp_path / "mixed.jsonl"
    path.write_text('{"pmid": "1", "title": "Asthma", "abstract": "Wheeze."}\n{"pmid": "x"}\n{"title": "no pmid"}\n')
    summary = ingest([path], config, encoder)
    assert (summary.added, summary.skipped, summary.embedded) == (1, 2, 1)
    assert list(stored(config.index_dir)) == ["1"]


# --- versions, re-ingest, deletions ---------------------------------------------------------------


def test_later_version_replaces_earlier(config, encoder):
    ingest([UPDATE], config, encoder)
    last = {}
    for event in read_source(UPDATE):
        if isinstance(event, Article):
            last[event.pmid] = event
    articles = stored(config.index_dir)
    assert articles["30271887"] == last["30271887"]
    assert articles["30271887"].version == 4 and "Comment" in articles["30271887"].publication_types
    assert articles["34017925"].version == 2 and articles["34017925"].title.startswith("luox: novel validated")
    assert articles == last
    assert len(vector_ids(config.index_dir)) == len(last) == UPDATE_PMIDS


def test_replaced_text_is_what_gets_searched(config, encoder):
    ingest([UPDATE], config, encoder)
    index = PubMedIndex(config.index_dir, encoder=encoder)
    v2 = stored(config.index_dir)["34017925"]
    hit = index.search(v2.title, k=1)[0]
    assert hit.pmid == "34017925"
    assert hit.score == pytest.approx(float(encoder.encode([v2.title])[0] @ encoder.encode([v2.text])[0]), abs=1e-5)


def test_reingesting_the_same_file_is_a_no_op(config, encoder):
    ingest([UPDATE, NEJM], config, encoder)
    before, calls, generation = snapshot(config.index_dir), encoder.calls, IndexDir(config.index_dir).current()
    summary = ingest([NEJM, UPDATE, UPDATE], config, encoder)
    assert summary.as_dict() == {k: ([] if k == "sources" else 0) for k in summary.as_dict()}
    assert encoder.calls == calls
    assert IndexDir(config.index_dir).current() == generation
    assert snapshot(config.index_dir) == before


def test_same_content_under_another_name_is_skipped(tmp_path, config, encoder):
    ingest([NEJM], config, encoder)
    copy = tmp_path / "renamed.xml"
    shutil.copy(NEJM, copy)
    assert ingest([copy], config, encoder).added == 0
    assert encoder.calls == 1


def test_changed_copy_reembeds_only_the_changed_abstract(tmp_path, config, encoder):
    original = DATA / "pubmed2.xml"
    ingest([original], config, encoder)
    text = original.read_text()
    changed = tmp_path / "pubmed2-revised.xml"
    changed.write_text(text.replace("<AbstractText>", "<AbstractText>Zebrafish oocytes. ", 1))
    assert changed.read_text().count("Zebrafish") == 1
    calls = encoder.calls

    summary = ingest([changed], config, encoder)

    assert (summary.added, summary.replaced, summary.unchanged, summary.embedded) == (0, 1, 1, 1)
    assert encoder.calls - calls == 1
    articles = stored(config.index_dir)
    revised = [p for p, a in articles.items() if "Zebrafish oocytes." in a.abstract]
    assert len(revised) == 1
    index = PubMedIndex(config.index_dir, encoder=encoder)
    assert len(index) == 2
    assert index.search("zebrafish oocytes", k=1)[0].pmid == revised[0]


def test_changed_copy_of_update_file_reembeds_only_the_changed_abstract(tmp_path, config, encoder):
    ingest([UPDATE], config, encoder)
    changed = tmp_path / "update-revised.xml"
    xml = gzip.decompress(UPDATE.read_bytes())
    changed.write_bytes(xml.replace(b"Dopamine modulates acute responses", b"Dopamine modulates ACUTE responses", 1))
    calls = encoder.calls
    summary = ingest([changed], config, encoder)
    # 10704411 changed; 34017925 v1 differs from the indexed v2 until v2 follows (embedded while reading)
    assert encoder.calls - calls == 2
    assert summary.replaced == 1 and summary.embedded == 1


def test_delete_citation_removes_vectors_and_metadata(tmp_path, config, encoder):
    ingest([NEJM, DATA / "pubmed2.xml"], config, encoder)
    victim = stored(config.index_dir)["11748933"]
    index = PubMedIndex(config.index_dir, encoder=encoder)
    assert index.search(victim.title, k=1)[0].pmid == "11748933"
    calls = encoder.calls

    summary = ingest([deletion_file(tmp_path / "delete.xml", "11748933", "99999999")], config, encoder)

    assert summary.deleted == 1  # the PMID that was never indexed does not count
    assert summary.embedded == 0 and encoder.calls == calls
    assert "11748933" not in stored(config.index_dir)
    assert 11748933 not in vector_ids(config.index_dir)
    index = PubMedIndex(config.index_dir, encoder=encoder)
    assert len(index) == 2 == index.manifest.documents
    assert "11748933" not in {h.pmid for h in index.search(victim.title, k=10)}


def test_update_file_deletion_after_earlier_ingest(tmp_path, config, encoder):
    """A PMID indexed by an earlier file and deleted by a later update file disappears."""
    first = tmp_path / "early.jsonl"
    first.write_text('{"pmid": "31688362", "title": "To be retracted", "abstract": "Soon gone."}\n')
    ingest([first], config, encoder)
    summary = ingest([UPDATE], config, encoder)
    assert summary.deleted == 1
    assert "31688362" not in stored(config.index_dir)
    assert len(PubMedIndex(config.index_dir, encoder=encoder)) == UPDATE_PMIDS


def test_new_version_without_abstract_retires_the_old_vector(tmp_path, config, encoder):
    ingest([DATA / "pubmed2.xml"], config, encoder)
    text = (DATA / "pubmed2.xml").read_text()
    start, end = text.index("<Abstract>"), text.index("</Abstract>") + len("</Abstract>")
    stripped = tmp_path / "no-abstract.xml"
    stripped.write_text(text[:start] + text[end:])
    gone = next(e.pmid for e in read_source(DATA / "pubmed2.xml"))
    summary = ingest([stripped], config, encoder)
    assert (summary.without_abstract, summary.unchanged) == (1, 1)
    assert gone not in stored(config.index_dir)
    assert int(gone) not in vector_ids(config.index_dir)


# --- search and manifest --------------------------------------------------------------------------


@pytest.fixture
def mixed_index(tmp_path_factory):
    index_dir = tmp_path_factory.mktemp("mixed") / "index"
    ingest([UPDATE, NEJM, *EFETCH], Config(index_dir=index_dir), HashingEncoder())
    return index_dir


@pytest.mark.parametrize("pmid", ["29768149", "27797938", "10704411", "21388667", "16213219", "9997"])
def test_title_query_finds_its_record_first(mixed_index, pmid):
    index = PubMedIndex(mixed_index, encoder=HashingEncoder())
    title = stored(mixed_index)[pmid].title
    hits = index.search(title, k=5)
    assert hits[0].pmid == pmid
    assert [h.rank for h in hits] == [1, 2, 3, 4, 5]
    assert hits[0].score > hits[1].score
    assert hits[0].url == f"https://pubmed.ncbi.nlm.nih.gov/{pmid}/"
    assert hits[0].as_dict()["title"] == title


def test_search_on_demo_index(demo_index, demo_subset):
    first = next(e for e in read_source(demo_subset) if isinstance(e, Article) and e.sections)
    index = PubMedIndex(demo_index, encoder=HashingEncoder())
    assert index.search(first.text, k=1)[0].pmid == first.pmid
    assert len(index.search("asthma", k=MAX_TOP_K)) == MAX_TOP_K < len(index)  # the most one search may ask


def test_search_edge_cases(mixed_index):
    index = PubMedIndex(mixed_index, encoder=HashingEncoder())
    assert index.search("   ") == []
    assert len(index.search("asthma", k=100)) == len(index) == 31  # k over the index size: every article


def test_manifest_records_encoder_and_files(config, encoder):
    ingest([NEJM, UPDATE], config, encoder)
    manifest = Manifest.load(IndexDir(config.index_dir).require_current() / MANIFEST)
    assert (manifest.encoder, manifest.dim, manifest.normalized) == ("test/hashing-encoder", 256, True)
    assert manifest.metric == "inner_product" and manifest.documents == UPDATE_PMIDS + 1
    assert [(f.name, f.sha256) for f in manifest.files] == [
        (p.name, hashlib.sha256(p.read_bytes()).hexdigest()) for p in (NEJM, UPDATE)
    ]
    assert [f.records for f in manifest.files] == [1, 29]  # 28 articles and one DeleteCitation
    stats = PubMedIndex(config.index_dir).stats()
    assert stats["encoder"] == "test/hashing-encoder" and stats["files"] == 2 and stats["dim"] == 256


def test_manifest_of_an_unknown_format_is_refused(config, encoder):
    ingest([NEJM], config, encoder)
    path = IndexDir(config.index_dir).require_current() / MANIFEST
    path.write_text(path.read_text().replace('"format_version": 1', '"format_version": 99'))
    with pytest.raises(ValueError, match="rebuild"):
        PubMedIndex(config.index_dir)


@pytest.mark.parametrize("other", [OtherEncoder(), HashingEncoder(dim=128)], ids=["name", "dim"])
def test_opening_with_another_encoder_raises(config, encoder, other):
    ingest([NEJM], config, encoder)
    with pytest.raises(ValueError, match="test/hashing-encoder"):
        PubMedIndex(config.index_dir, encoder=other)


@pytest.mark.parametrize("other", [OtherEncoder(), HashingEncoder(dim=128)], ids=["name", "dim"])
def test_ingesting_with_another_encoder_is_refused_and_changes_nothing(config, encoder, other):
    ingest([NEJM], config, encoder)
    before = snapshot(config.index_dir)
    with pytest.raises(ValueError, match="new --index-dir"):
        ingest([UPDATE], config, other)
    assert other.calls == 0
    assert snapshot(config.index_dir) == before


def test_missing_index(tmp_path):
    with pytest.raises(IndexNotFound, match="python -m ingest"):
        PubMedIndex(tmp_path / "nothing")


# --- atomicity ------------------------------------------------------------------------------------


def assert_intact(index_dir: Path, before: dict[str, str], documents: int) -> None:
    assert snapshot(index_dir) == before
    index = PubMedIndex(index_dir, encoder=HashingEncoder())
    assert len(index) == documents
    assert index.search("mild asthma budesonide formoterol", k=1)[0].pmid == "29768149"


def test_unreadable_source_leaves_index_byte_identical(tmp_path, config, encoder):
    ingest([NEJM], config, encoder)
    before = snapshot(config.index_dir)
    assert any(name.endswith(VECTORS) for name in before)
    with pytest.raises(SourceError) as info:
        ingest([DATA / "pubmed2.xml", truncated_gzip(tmp_path)], config, encoder)
    assert "truncated.xml.gz" in str(info.value)
    assert_intact(config.index_dir, before, documents=1)


def test_encoder_crash_mid_ingest_leaves_index_byte_identical(config):
    config = replace(config, batch_size=1)  # 4 texts per encoder call, so 23 abstracts take 6 calls
    ingest([NEJM], config, HashingEncoder())
    before = snapshot(config.index_dir)
    crashing = CrashingEncoder()
    with pytest.raises(RuntimeError, match="simulated crash"):
        ingest([UPDATE], config, crashing)
    assert crashing.invocations == 2
    assert_intact(config.index_dir, before, documents=1)
    # and the same file goes in cleanly afterwards
    assert ingest([UPDATE], config, HashingEncoder()).added == UPDATE_PMIDS


def test_failed_first_ingest_leaves_no_index(tmp_path, config, encoder):
    with pytest.raises(SourceError):
        ingest([NEJM, truncated_gzip(tmp_path)], config, encoder)
    assert snapshot(config.index_dir) == {}
    with pytest.raises(IndexNotFound):
        PubMedIndex(config.index_dir)


def test_stale_staging_folders_are_cleaned_at_next_ingest(config, encoder):
    ingest([NEJM], config, encoder)
    stale = config.index_dir / ".staging-deadbeef"
    stale.mkdir()
    (stale / METADATA).write_bytes(b"half-written")
    ingest([UPDATE], config, encoder)
    assert not list(config.index_dir.glob(".staging-*"))
    assert len(PubMedIndex(config.index_dir, encoder=encoder)) == UPDATE_PMIDS + 1


def test_write_lock_makes_a_second_writer_fail(config, encoder):
    with IndexDir(config.index_dir).write_lock(), pytest.raises(IndexBusy, match="another ingest"):
        ingest([NEJM], config, encoder)
    assert encoder.calls == 0
    assert ingest([NEJM], config, encoder).added == 1  # the lock is released with the ``with``


def test_generations_rotate_and_old_readers_keep_working(tmp_path, config, encoder):
    ingest([NEJM], config, encoder)
    reader = PubMedIndex(config.index_dir, encoder=encoder)
    ingest([DATA / "pubmed2.xml"], config, encoder)
    ingest([UPDATE], config, encoder)
    assert sorted(p.name for p in config.index_dir.glob("gen-*")) == ["gen-000002", "gen-000003"]
    assert (config.index_dir / "CURRENT").read_text().strip() == "gen-000003"
    assert len(reader) == 1  # opened on gen-000001: its vectors are in memory
    assert len(PubMedIndex(config.index_dir, encoder=encoder)) == UPDATE_PMIDS + 3


@pytest.mark.parametrize("folder", ["run#2", "what?"])
def test_index_dir_with_uri_characters(tmp_path, encoder, folder):
    config = Config(index_dir=tmp_path / folder / "index")
    ingest([NEJM], config, encoder)
    assert len(PubMedIndex(config.index_dir, encoder=encoder)) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [folder]


# --- FAISS vectors --------------------------------------------------------------------------------


def unit_vectors(n: int, dim: int, seed: int) -> np.ndarray:
    vectors = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


@pytest.mark.parametrize("dim", [8, 64, 384])
def test_vector_index_add_search_remove_save_load(tmp_path, dim):
    vectors = unit_vectors(50, dim, seed=dim)
    ids = np.random.default_rng(0).choice(40_000_000, size=50, replace=False).astype(np.int64)
    index = VectorIndex.create(dim)
    index.add(ids, vectors)
    assert (len(index), index.dim) == (50, dim)

    scores, found = index.search(vectors[:5], 3)
    assert found[:, 0].tolist() == ids[:5].tolist()
    np.testing.assert_allclose(scores[:, 0], 1.0, atol=1e-5)
    assert (scores[:, 0] >= scores[:, 1]).all()

    assert index.remove(ids[:10]) == 10
    assert index.remove(np.array([], dtype=np.int64)) == 0
    assert index.remove(ids[:10]) == 0
    assert len(index) == 40
    _, found = index.search(vectors[:10], 40)
    assert not set(found.ravel().tolist()) & set(ids[:10].tolist())

    index.save(tmp_path / "v.faiss")
    loaded = VectorIndex.load(tmp_path / "v.faiss")
    assert (len(loaded), loaded.dim) == (40, dim)
    query = unit_vectors(3, dim, seed=dim + 1)
    np.testing.assert_array_equal(loaded.search(query, 7)[1], index.search(query, 7)[1])
    np.testing.assert_allclose(loaded.search(query, 7)[0], index.search(query, 7)[0])


def test_vector_index_pads_when_asking_for_more_than_it_holds():
    index = VectorIndex.create(16)
    index.add(np.array([7, 9]), unit_vectors(2, 16, seed=1))
    _, found = index.search(unit_vectors(1, 16, seed=2), 4)
    assert sorted(found[0, :2].tolist()) == [7, 9]
    assert found[0, 2:].tolist() == [-1, -1]


def test_vector_scores_are_cosine_similarities():
    vectors = unit_vectors(20, 32, seed=3)
    index = VectorIndex.create(32)
    index.add(np.arange(100, 120), vectors)
    scores, found = index.search(vectors[:1], 20)
    np.testing.assert_allclose(scores[0], vectors[found[0] - 100] @ vectors[0], atol=1e-5)


# --- SQLite metadata ------------------------------------------------------------------------------

FULL = Article(
    pmid="29768149",
    title="Inhaled Combined Budesonide–Formoterol as Needed in Mild Asthma",
    sections=(Section("BACKGROUND", "β2-agonist 200 μg."), Section("", "Unlabelled 'quote' \"double\".")),
    journal="N Engl J Med",
    year=2018,
    authors=("O'Byrne PM", "Müller K"),
    publication_types=("Journal Article", "Randomized Controlled Trial"),
    mesh=("Asthma", "Budesonide, Formoterol Fumarate Drug Combination"),
    doi="10.1056/NEJMoa1715274",
    version=3,
)
BARE = Article(pmid="1", title="T", sections=(Section("", "x"),))


@pytest.mark.parametrize("article", [FULL, BARE], ids=["full", "bare"])
def test_metadata_store_round_trips_an_article_exactly(tmp_path, article):
    path = tmp_path / METADATA
    store = MetadataStore(path)
    store.upsert(article, indexed_hash=None)
    store.commit()
    store.close()
    reader = MetadataStore(path, read_only=True)
    assert reader.get([article.pmid]) == {article.pmid: article}
    assert reader.get([int(article.pmid)])[article.pmid].year == article.year
    assert list(reader.iter_articles()) == [article]
    assert reader.state(article.pmid) == (article.text_hash, None)
    reader.close()


def test_metadata_store_bookkeeping(tmp_path):
    store = MetadataStore(tmp_path / METADATA)
    store.upsert(FULL, indexed_hash=None)
    store.upsert(BARE, indexed_hash=BARE.text_hash)
    assert store.count() == 2 and store.pending() == [(29768149, False)]
    store.mark_indexed([29768149])
    assert store.pending() == [] and store.state(FULL.pmid) == (FULL.text_hash, FULL.text_hash)
    store.upsert(replace(FULL, title="Changed"), indexed_hash=FULL.text_hash)
    assert store.pending() == [(29768149, True)]  # its vector is outdated
    assert store.count() == 2 and store.get([FULL.pmid])[FULL.pmid].title == "Changed"
    assert store.delete("1") and not store.delete("1")
    assert store.state("1") is None and store.get([1, 2, 3]) == {}


def test_metadata_store_get_many(tmp_path):
    store = MetadataStore(tmp_path / METADATA)
    for pmid in range(1, 1201):  # more than one 500-id chunk
        store.upsert(replace(BARE, pmid=str(pmid)), indexed_hash=None)
    assert sorted(map(int, store.get(range(1, 1300)))) == list(range(1, 1201))


def test_read_only_store_refuses_writes(tmp_path):
    store = MetadataStore(tmp_path / METADATA)
    store.upsert(BARE, indexed_hash=None)
    store.commit()
    store.close()
    reader = MetadataStore(tmp_path / METADATA, read_only=True)
    import sqlite3

    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        reader.upsert(FULL, indexed_hash=None)
