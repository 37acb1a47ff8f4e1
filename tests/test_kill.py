"""``kill -9`` during an ingest, then the same command again: the index ends identical to an
uninterrupted run (same PMIDs, same vectors, same metadata), and embeddings already computed
are reused rather than computed again.

The ingest runs in a real subprocess (``tests/ingest_driver.py``: the real CLI with the hashing
encoder, slowed down so that each moment can be caught) and is killed with SIGKILL when the index
directory shows it has reached a given step. The run adds 400 demo abstracts, an update file
with versions and deletions, a revised copy of an already indexed file and a deletion file on
top of an existing index, so additions, replacements and deletions are all interrupted. Two of the
base index's three vectors go (one replaced, one deleted), so its vector segment and its metadata
segment are each rewritten by a merge (``index/segments.py``, ``index/meta_segments.py``) in the
same run: "merging" kills the ingest inside the vector merge, "metadata-merge" once the metadata
merge has begun (its output file exists; the driver then holds the process after the merge, so
the kill lands inside it or just after it, before the commit), "bm25-segment" while a BM25
segment's term frequencies are written (``index/bm25_segments.py``: its arrays exist, not yet its
``.json``). The BM25 results after the rerun are those of the uninterrupted run.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from config import Config
from index.bm25 import open_for_generation
from index.manifest import Manifest
from index.meta_segments import open_generation as open_metadata
from index.segments import open_generation
from index.storage import MANIFEST, RESUME_CACHE, IndexDir
from index.writer import ingest_files
from ingest import read_source
from tests.conftest import DEMO_CORPUS, REPO, HashingEncoder

DATA = Path(__file__).parent / "data"
NEJM = DATA / "pubmed-29768149.xml"
UPDATE = DATA / "pubmed_update_sample.xml.gz"
PUBMED2 = DATA / "pubmed2.xml"
DEMO_RECORDS = 400
BATCH = 4  # the driver's windows are 32 texts: 13 encoder calls for the demo slice alone


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> list[Path]:
    from lxml import etree

    folder = tmp_path_factory.mktemp("kill-sources")
    records = []
    with gzip.open(DEMO_CORPUS) as corpus:
        for _, element in etree.iterparse(corpus, tag="PubmedArticle"):
            records.append(etree.tostring(element))
            if len(records) == DEMO_RECORDS:
                break
    demo = folder / "demo400.xml.gz"
    demo.write_bytes(gzip.compress(b"<PubmedArticleSet>" + b"\n".join(records) + b"</PubmedArticleSet>"))
    revised = folder / "pubmed2-revised.xml"
    revised.write_text(PUBMED2.read_text().replace("<AbstractText>", "<AbstractText>Revised. ", 1))
    deletion = folder / "delete.xml"
    deletion.write_text(
        '<PubmedArticleSet><DeleteCitation><PMID Version="1">29768149</PMID></DeleteCitation></PubmedArticleSet>'
    )
    return [demo, UPDATE, revised, deletion]


@pytest.fixture(scope="module")
def base_index(tmp_path_factory) -> Path:
    """The index before the interrupted command: NEJM and pubmed2.xml."""
    index_dir = tmp_path_factory.mktemp("kill-base") / "index"
    ingest_files(
        [NEJM, PUBMED2], Config(index_dir=index_dir), read=read_source, encoder=HashingEncoder(), progress=False
    )
    return index_dir


def start(sources: list[Path], index_dir: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PUBMED_RAG_")}
    command = [sys.executable, "-m", "tests.ingest_driver", *map(str, sources), "--index-dir", str(index_dir)]
    command += ["--batch-size", str(BATCH), "--quiet", "--json"]
    return subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def complete(sources: list[Path], index_dir: Path) -> dict[str, object]:
    proc = start(sources, index_dir)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    return json.loads(out.strip().splitlines()[-1])


def kill_when(proc: subprocess.Popen, reached: Callable[[], bool], timeout: float = 60) -> bool:
    """SIGKILL ``proc`` as soon as ``reached()``; False if it finished first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        if reached():
            proc.kill()  # SIGKILL: no handler, no cleanup
            proc.wait()
            return True
        time.sleep(0.002)
    proc.kill()
    raise AssertionError("the ingest neither finished nor reached the step in time")


# --- moments --------------------------------------------------------------------------------------


def stagings(index_dir: Path) -> list[Path]:
    return list(index_dir.glob(".staging-*"))


def cached_vectors(index_dir: Path) -> int:
    total = 0
    for staging in stagings(index_dir):
        try:
            db = sqlite3.connect(f"file:{staging / RESUME_CACHE}?mode=ro", uri=True, timeout=0.05)
            total += db.execute("SELECT COUNT(*) FROM vectors").fetchone()[0]
            db.close()
        except sqlite3.Error:
            pass
    return total


MOMENTS: dict[str, Callable[[Path], bool]] = {
    "reading": lambda d: bool(stagings(d)),
    "first-vectors": lambda d: cached_vectors(d) >= 32,
    "half-embedded": lambda d: cached_vectors(d) >= 200,
    "writing-generation": lambda d: any(any(s.glob("vectors*.faiss")) for s in stagings(d)),
    "merging": lambda d: any(merging(s) for s in stagings(d)),
    "metadata-merge": lambda d: any((s / "articles-000002.sqlite").exists() for s in stagings(d)),
    "bm25-segment": lambda d: any(bm25_half_written(s) for s in stagings(d)),
    "renamed-not-current": lambda d: (d / "gen-000002").exists(),
}


def bm25_half_written(staging: Path) -> bool:
    """A BM25 segment of this ingest has its arrays but not yet its ``.json`` (written last)."""
    try:
        return any(
            not p.with_name(p.name.replace(".vocab.npy", ".json")).exists() for p in staging.glob("bm25/*.vocab.npy")
        )
    except FileNotFoundError:
        return False


def merging(staging: Path) -> bool:
    """A merge has written its segment and not yet removed the ones it replaces: besides the new
    segment, a second segment file of this ingest's own (the old ones are hard links)."""
    try:
        return sum(p.stat().st_nlink == 1 for p in staging.glob("vectors*.faiss")) >= 2
    except FileNotFoundError:
        return False


# --- comparison -----------------------------------------------------------------------------------


def contents(index_dir: Path) -> dict[str, object]:
    """Everything an index means: rows (with their indexed text), vectors by PMID, manifest."""
    generation = IndexDir(index_dir).require_current()
    store = open_metadata(generation)
    rows = store.db.execute("SELECT * FROM articles ORDER BY pmid").fetchall()
    store.close()
    segmented = open_generation(generation)
    ids = segmented.ids()
    vectors = segmented.vectors(ids)
    manifest = Manifest.load(generation / MANIFEST)
    bm25 = open_for_generation(generation)
    return {
        "bm25": [bm25.search(query, 10) for query in ("cancer", "randomized trial outcome", "influenza vaccine")],
        "rows": rows,
        "vectors": {int(i): v.tobytes() for i, v in zip(ids, vectors, strict=True)},
        "manifest": (manifest.encoder, manifest.dim, manifest.documents),
        "files": [(f.name, f.sha256, f.records) for f in manifest.files],
        "leftovers": sorted(p.name for p in index_dir.iterdir() if p.name.startswith((".staging", ".CURRENT"))),
    }


@pytest.fixture(scope="module")
def reference(sources, base_index, tmp_path_factory) -> dict[str, object]:
    index_dir = tmp_path_factory.mktemp("kill-reference") / "index"
    shutil.copytree(base_index, index_dir)
    summary = complete(sources, index_dir)
    assert summary["added"] > 300 and summary["replaced"] == 1 and summary["deleted"] == 1 and not summary["resumed"]
    return {"summary": summary, "index": contents(index_dir)}


def assert_same_as_reference(index_dir: Path, reference: dict[str, object]) -> None:
    got, want = contents(index_dir), reference["index"]
    assert got["rows"] == want["rows"]
    assert got["vectors"].keys() == want["vectors"].keys()
    assert got["vectors"] == want["vectors"]  # bit for bit
    assert got["bm25"] == want["bm25"] and any(got["bm25"])
    assert (got["manifest"], got["files"], got["leftovers"]) == (want["manifest"], want["files"], [])


# --- tests ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("moment", list(MOMENTS))
def test_kill_then_same_command_equals_uninterrupted_run(moment, sources, base_index, reference, tmp_path):
    index_dir = tmp_path / "index"
    shutil.copytree(base_index, index_dir)
    assert kill_when(start(sources, index_dir), lambda: MOMENTS[moment](index_dir)), f"finished before {moment}"
    assert (index_dir / "CURRENT").read_text().strip() == "gen-000001"  # the live index never changed

    summary = complete(sources, index_dir)

    assert_same_as_reference(index_dir, reference)
    expected = dict(reference["summary"])
    assert {k: v for k, v in summary.items() if k != "resumed"} == {k: v for k, v in expected.items() if k != "resumed"}
    if moment in ("half-embedded", "writing-generation", "merging", "metadata-merge", "bm25-segment"):
        assert summary["resumed"] >= 192  # whole 32-text windows embedded before the kill were reused
    if moment == "renamed-not-current":
        assert summary["resumed"] == 0  # the cache is dropped before the rename: all is embedded again


def test_killed_three_times_then_completed(sources, base_index, reference, tmp_path):
    index_dir = tmp_path / "index"
    shutil.copytree(base_index, index_dir)
    for moment in ("first-vectors", "half-embedded", "writing-generation", "merging"):
        assert kill_when(start(sources, index_dir), lambda m=moment: MOMENTS[m](index_dir)), moment
        assert len(stagings(index_dir)) == 1  # each run adopted the previous cache and removed the old folder
    summary = complete(sources, index_dir)
    assert_same_as_reference(index_dir, reference)
    assert summary["resumed"] > 300


def test_rerun_after_completion_is_a_no_op(sources, base_index, reference, tmp_path):
    index_dir = tmp_path / "index"
    shutil.copytree(base_index, index_dir)
    complete(sources, index_dir)
    again = complete(sources, index_dir)
    assert again["sources"] == [] and again["added"] == again["embedded"] == 0
    assert_same_as_reference(index_dir, reference)


def test_cache_of_another_encoder_is_not_used(sources, base_index, tmp_path):
    """A dead run's cache made with different settings is emptied, not mixed in."""
    index_dir = tmp_path / "index"
    shutil.copytree(base_index, index_dir)
    assert kill_when(start(sources, index_dir), lambda: MOMENTS["half-embedded"](index_dir))
    (staging,) = stagings(index_dir)
    db = sqlite3.connect(staging / RESUME_CACHE)
    db.execute("UPDATE meta SET value = 'other/encoder|max_seq_length=256' WHERE key = 'identity'")
    db.execute("UPDATE vectors SET vector = zeroblob(length(vector))")
    db.commit()
    db.close()
    summary = complete(sources, index_dir)
    assert summary["resumed"] == 0
    assert not np.any([np.all(np.frombuffer(v, np.float32) == 0) for v in contents(index_dir)["vectors"].values()])
