"""Applying a daily update's vectors to a large index: segments in place vs the full-copy path.

One run, both paths from the same first generation, each in its own fresh process (so its peak
memory and I/O are its own), through the project's code:

- *full copy* (the layout before issue #15): load ``vectors.faiss`` whole, ``remove_ids`` /
  ``add_with_ids``, write it whole as the next generation, and update IVF-PQ by copying the live
  ``ann.faiss`` into RAM and writing it whole (``ann.build_for_generation``), as ``index/writer.py``
  and ``index/derived.py`` did;
- *segments* (``index/segments.py``, ``index/ann_segments.py``): hard-link the live segments,
  tombstone the changed PMIDs, write the update as one new segment and encode only it into IVF-PQ,
  as the writer does now (then the merges its policy asks for: none for one daily update).

Both fsync what they wrote, as a commit does. Embedding is excluded (the update's vectors are
precomputed), and so are the metadata copy and the BM25 rebuild, which this run does not touch.
Measured per path: wall time, peak RSS (VmHWM), bytes written (``/proc/self/io``: ``wchar``, what
the process wrote; ``write_bytes``, what it sent to storage) and the size of the files it created.
Then: exact top-10 of 1,000 queries on the segmented generation vs the full-copy one (the same
vectors, as a from-scratch build holds them), IVF-PQ recall@10 of both against exact search, and
whether any deleted PMID is returned.

``--part metadata`` does the same for the SQLite store with real records (a base of
``--meta-n`` baseline abstracts, cloned under new PMIDs, then the real update file), and then for
BM25 on that updated store: *full rebuild* (what every ingest did before: ``BM25Index.write`` over
the whole store, bm25s's precomputed weights) vs *segments in place* (``index/bm25_segments.py``:
the live segment's term frequencies linked, the update's metadata segment tokenised), followed by
``--queries`` queries (dev-set questions and update titles) scored on both: identical top 10,
largest score difference, and each one's scoring time per query (``--no-bm25`` skips it).

Vectors are clustered synthetic ones (``benchmarks/ann_scale.py``). The update: ``--update``
records, one third revisions of indexed PMIDs and two thirds new PMIDs, plus ``--deleted``
deletions, as ``benchmarks/pubmed_scale.py`` shapes it. Run from the repository root::

    python -m benchmarks.update_in_place --n 2000000 --update 30000
    python -m benchmarks.update_in_place --n 100000 --update 3000     # a quick check
    python -m benchmarks.update_in_place --part metadata --meta-n 200000 --queries 1000  # metadata + BM25
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from benchmarks._common import machine_info, machine_line, markdown_table, write_result
from benchmarks.ann_scale import DIM, K, clustered_vectors, recall

PMID_STEP = 7  # PMID-like ids, not row numbers


def io_counters() -> dict[str, int]:
    fields = {}
    for line in Path("/proc/self/io").read_text().splitlines():
        name, value = line.split(":")
        fields[name] = int(value)
    return fields


def peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def created_bytes(folder: Path) -> int:
    """Bytes of the files a path created in ``folder`` (hard links to the previous one excluded)."""
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and p.stat().st_nlink == 1)


# --- the two update paths, each run in a child process ---------------------------------------------


def full_copy(gen1: Path, gen2: Path, update: Path) -> None:
    from index import ann
    from index.ann import VectorChanges
    from index.vectors import VectorIndex

    removed, added, vectors = _load_update(update)
    flat = VectorIndex.load(gen1 / "vectors.faiss")  # as the writer did: the whole index in RAM
    flat.remove(np.union1d(removed, added))
    flat.add(added, vectors)
    flat.save(gen2 / "vectors.faiss")
    del flat
    mapped = VectorIndex.load(gen2 / "vectors.faiss", mmap=True)
    kind = ann.build_for_generation(gen2, mapped, "ivfpq", previous=gen1, changes=VectorChanges(removed, added))
    assert kind == "ivfpq" and ann.Training.load(gen2 / ann.TRAINING_FILE).added_since == len(added), "retrained"


def segments(gen1: Path, gen2: Path, update: Path) -> None:
    from index.ann import Training, VectorChanges
    from index.ann_segments import build_for_segments
    from index.segments import SegmentedVectors, write_segments

    removed, added, vectors = _load_update(update)
    names = json.loads((gen1 / "segments.json").read_text())
    blocks = ((added[i : i + 4096], vectors[i : i + 4096]) for i in range(0, len(added), 4096))
    written = write_segments(gen2, gen1, names, DIM, np.union1d(removed, added), blocks)
    staged = SegmentedVectors.open(gen2, written.names, DIM, eager=False)
    changes = VectorChanges(removed, added)
    kind = build_for_segments(gen2, staged, "ivfpq", previous=gen1, changes=changes, written=written)
    assert kind == "ivfpq" and Training.load(gen2 / "ann.json").added_since == len(added), "retrained"
    (gen2 / "segments.json").write_text(json.dumps(written.names))


def _load_update(update: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    data = np.load(update)
    return data["removed"], data["added"], data["vectors"]


def child(path_name: str, gen1: Path, gen2: Path, update: Path, out: Path) -> None:
    before, start = io_counters(), time.perf_counter()
    paths = {"full_copy": full_copy, "segments": segments, "meta_full_copy": meta_full_copy}
    paths["meta_segments"] = meta_segments
    paths.update(bm25_full=bm25_full, bm25_segments=bm25_in_place)
    paths[path_name](gen1, gen2, update)
    for path in gen2.rglob("*"):  # durable, as IndexDir.commit makes a generation
        if path.is_file() and path.stat().st_nlink == 1:
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
    wall = time.perf_counter() - start
    after = io_counters()
    report = {
        "wall_s": wall,
        "peak_rss_mb": peak_rss_mb(),
        "wchar_mb": (after["wchar"] - before["wchar"]) / 2**20,
        "write_bytes_mb": (after["write_bytes"] - before["write_bytes"]) / 2**20,
        "created_mb": created_bytes(gen2) / 2**20,
    }
    out.write_text(json.dumps(report), encoding="utf-8")


def run_child(path_name: str, gen1: Path, gen2: Path, update: Path) -> dict[str, float]:
    gen2.mkdir()
    return run_child_in(path_name, gen1, gen2, update)


def run_child_in(path_name: str, gen1: Path, gen2: Path, update: Path) -> dict[str, float]:
    out = gen2.parent / f"{path_name}.json"
    command = [sys.executable, "-m", "benchmarks.update_in_place", "--child", path_name]
    subprocess.run([*command, str(gen1), str(gen2), str(update), str(out)], check=True)
    return json.loads(out.read_text(encoding="utf-8"))


# --- metadata: the same comparison for the SQLite store, with real update-file records ---------------

UPDATE_FILE = "pubmed21n1298.xml.gz"  # a real daily update file (shared/data/pubmed): 18,446 abstracts
BASELINE_FILE = "pubmed20n0014.xml.gz"  # a real baseline file: 14,832 abstracts, cloned to fill the base


def real_articles(name: str) -> list:
    from ingest import Article, read_source
    from tests.conftest import SHARED

    return [e for e in read_source(SHARED / "data" / "pubmed" / name) if isinstance(e, Article) and e.sections]


def base_articles(n: int):
    """``n`` real baseline abstracts, cycled, with PMIDs 1..n (``PMID_STEP`` apart)."""
    from dataclasses import replace

    real = real_articles(BASELINE_FILE)
    for i in range(n):
        yield replace(real[i % len(real)], pmid=str((i + 1) * PMID_STEP))


def update_articles(n_base: int) -> list:
    """The real update file's abstracts: every third becomes a revision of an indexed PMID (as in a
    daily file, most of which revise), the rest keep their own (new) PMIDs."""
    from dataclasses import replace

    rng = np.random.default_rng(4)
    out = []
    for i, article in enumerate(real_articles(UPDATE_FILE)):
        if i % 3 == 0:
            article = replace(article, pmid=str(int(rng.integers(1, n_base + 1)) * PMID_STEP))
        out.append(article)
    return out


def apply_update(store, update: list, deleted: list[int]) -> None:
    """What the writer's reading does to the store for each record (index/writer.py ``_Reading``)."""
    for article in update:
        state = store.state(article.pmid)
        store.touch(article.pmid)
        store.upsert(article, indexed_hash=state[1] if state else None)
    for pmid in deleted:
        if store.state(str(pmid)) is not None:
            store.delete(str(pmid))
    store.mark_indexed([pmid for pmid, _ in store.pending()])
    store.commit()


def meta_full_copy(gen1: Path, gen2: Path, update: Path) -> None:
    import sqlite3

    from index.store import MetadataStore

    source = sqlite3.connect((gen1 / "articles.sqlite").resolve().as_uri() + "?mode=ro", uri=True)
    target = sqlite3.connect(gen2 / "articles.sqlite")
    with target:
        source.backup(target)  # what IndexDir.begin did
    source.close()
    target.close()
    store = MetadataStore(gen2 / "articles.sqlite")
    apply_update(store, *_meta_update(update))
    store.close()


def meta_segments(gen1: Path, gen2: Path, update: Path) -> None:
    from index import meta_segments as meta

    store = meta.stage(gen2, gen1, [["articles.sqlite", -1]], 1)
    apply_update(store, *_meta_update(update))
    store.count()
    pairs, _ = meta.finish(gen2, store)
    (gen2 / "meta.json").write_text(json.dumps(pairs))


def _meta_update(update: Path) -> tuple[list, list[int]]:
    from ingest import Article
    from ingest.jsonl import read_jsonl

    events = [e for e in read_jsonl(update) if isinstance(e, Article)]
    return events, json.loads(update.with_suffix(".deleted.json").read_text())


# --- BM25: a full bm25s rebuild of the updated store vs term frequencies of the update's rows ----------


def bm25_full(gen1: Path, gen2: Path, update: Path) -> None:
    """What every ingest did before: the whole updated store re-tokenised and re-weighted."""
    from index import meta_segments as meta
    from index.bm25 import BM25_DIR, BM25Index

    store = meta.open_store(gen2, json.loads((gen2 / "meta.json").read_text()))
    BM25Index.write(gen2 / BM25_DIR, store.iter_articles())
    store.close()


def bm25_in_place(gen1: Path, gen2: Path, update: Path) -> None:
    """What an ingest does now (``index/bm25_segments.py``): link the live segments' term
    frequencies, write those of the new metadata segment."""
    from index import bm25_segments

    bm25_segments.stage(gen2, gen1, json.loads((gen2 / "meta.json").read_text()))


def bm25_generation(meta_gen2: Path, gen2: Path) -> None:
    """A folder holding hard links to the updated metadata segments (and their list), for a BM25 path."""
    gen2.mkdir()
    for path in meta_gen2.iterdir():
        if path.is_file() and (path.suffix == ".sqlite" or path.name == "meta.json"):
            os.link(path, gen2 / path.name)


def run_bm25(args: argparse.Namespace, tmp: Path, gen1: Path, result: dict[str, object]) -> None:
    """Both BM25 paths on the metadata run's updated store, then the same queries on both."""
    from index import bm25_segments
    from index import meta_segments as meta
    from index.bm25 import BM25_DIR, BM25Index, tokenize

    tokenize(["warm up the stemmer"])
    start = time.perf_counter()
    store = meta.open_store(gen1, [["articles.sqlite", -1]])
    bm25_segments.write_segment(gen1 / BM25_DIR, 0, store.iter_articles())
    store.close()
    result["bm25_base_build_s"] = time.perf_counter() - start
    result["bm25_base_mb"] = sum(p.stat().st_size for p in (gen1 / BM25_DIR).iterdir()) / 2**20
    for name in ("bm25_full", "bm25_segments"):
        gen2 = tmp / f"{name}-gen2"
        bm25_generation(tmp / "meta-seg-gen2", gen2)
        result[name] = run_child_in(name, gen1, gen2, tmp / "meta-update.jsonl")
    pairs = json.loads((tmp / "meta-seg-gen2" / "meta.json").read_text())
    reader = meta.open_store(tmp / "bm25_segments-gen2", pairs)
    segmented = bm25_segments.open_generation(tmp / "bm25_segments-gen2", pairs, reader)
    reader.close()
    full = BM25Index.load(tmp / "bm25_full-gen2" / BM25_DIR)
    result["bm25_compare"] = compare_bm25(segmented, full, bm25_queries(args.queries, tmp))


def bm25_queries(n: int, tmp: Path) -> list[str]:
    """Dev-set questions (PubMedQA, BioASQ), then titles of the update's records, ``n`` in all."""
    from tests.conftest import SHARED

    found = []
    for name in ("pubmedqa_dev.jsonl", "bioasq_dev.jsonl"):
        path = SHARED / "eval" / name
        if path.exists():
            found += [json.loads(line)["question"] for line in path.read_text(encoding="utf-8").splitlines()]
    for line in (tmp / "meta-update.jsonl").read_text(encoding="utf-8").splitlines():
        found.append(json.loads(line)["title"])
    rng = np.random.default_rng(8)
    return [found[i] for i in rng.choice(len(found), min(n, len(found)), replace=False)]


def compare_bm25(segmented, full, queries: list[str]) -> dict[str, object]:
    """Top 10 (PMIDs, order, scores) and every live article's score, segmented vs fresh build;
    query time of each."""
    same, largest, times = 0, 0.0, {"segmented": 0.0, "full": 0.0}
    rows = segmented.rows(full.pmids)
    assert np.array_equal(segmented.pmids[rows], full.pmids), "not the same live articles"
    for query in queries:
        start = time.perf_counter()
        ours = segmented.scores(query)
        times["segmented"] += time.perf_counter() - start
        start = time.perf_counter()
        theirs = full.scores(query)
        times["full"] += time.perf_counter() - start
        largest = max(largest, float(np.abs(ours[rows] - theirs).max(initial=0.0)))
        same += segmented.search(query, 10, scores=ours) == full.search(query, 10, scores=theirs)
    return {
        "queries": len(queries),
        "identical_top10": same,
        "max_abs_score_difference": largest,
        "documents": int(segmented.documents),
        "query_ms_segmented": 1000 * times["segmented"] / len(queries),
        "query_ms_precomputed": 1000 * times["full"] / len(queries),
    }


def run_metadata(args: argparse.Namespace, tmp: Path) -> dict[str, object]:
    from index.store import MetadataStore

    gen1 = tmp / "meta-gen1"
    gen1.mkdir()
    start = time.perf_counter()
    store = MetadataStore(gen1 / "articles.sqlite")
    for article in base_articles(args.meta_n):
        store.upsert(article, indexed_hash=article.text_hash)
    store.commit()
    store.close()
    update = update_articles(args.meta_n)
    path = tmp / "meta-update.jsonl"
    with open(path, "w") as out:
        for a in update:
            record = {"pmid": a.pmid, "title": a.title, "abstract": a.abstract, "journal": a.journal, "year": a.year}
            record.update(authors=list(a.authors), mesh=list(a.mesh), publication_types=list(a.publication_types))
            out.write(json.dumps(record) + "\n")
    deleted = (np.random.default_rng(6).choice(args.meta_n, args.deleted, replace=False) + 1) * PMID_STEP
    path.with_suffix(".deleted.json").write_text(json.dumps(deleted.tolist()))
    result: dict[str, object] = {
        "rows": args.meta_n,
        "base_s": time.perf_counter() - start,
        "base_mb": (gen1 / "articles.sqlite").stat().st_size / 2**20,
        "update_records": len(update),
        "update_file_mb": (tmp / "meta-update.jsonl").stat().st_size / 2**20,
    }
    result["full_copy"] = run_child("meta_full_copy", gen1, tmp / "meta-full-gen2", path)
    result["segments"] = run_child("meta_segments", gen1, tmp / "meta-seg-gen2", path)
    from index import meta_segments as meta

    full = MetadataStore(tmp / "meta-full-gen2" / "articles.sqlite", read_only=True)
    pairs = json.loads((tmp / "meta-seg-gen2" / "meta.json").read_text())
    segmented = meta.open_store(tmp / "meta-seg-gen2", pairs)
    result["meta_segments"] = pairs
    query = "SELECT * FROM articles ORDER BY pmid"
    result["rows_identical"] = full.db.execute(query).fetchall() == segmented.db.execute(query).fetchall()
    full.close()
    segmented.close()
    if not args.no_bm25:
        run_bm25(args, tmp, gen1, result)
    return result


# --- the run ----------------------------------------------------------------------------------------


def build_first_generation(tmp: Path, ids: np.ndarray, vectors: np.ndarray) -> tuple[Path, Path, dict]:
    """Generation 1 in both layouts: one segment (``vectors.faiss``) with its IVF-PQ file, which is
    also exactly the single-file layout (the same files, hard-linked)."""
    from index.ann_segments import build_for_segments
    from index.segments import SegmentedVectors, write_segments

    seg1, old1 = tmp / "segments-gen1", tmp / "full-gen1"
    seg1.mkdir()
    old1.mkdir()
    timings: dict[str, float] = {}
    start = time.perf_counter()
    blocks = ((ids[i : i + 100_000], vectors[i : i + 100_000]) for i in range(0, len(ids), 100_000))
    written = write_segments(seg1, None, [], DIM, np.zeros(0, dtype=np.int64), blocks)
    timings["flat_s"] = time.perf_counter() - start
    staged = SegmentedVectors.open(seg1, written.names, DIM, eager=False)
    start = time.perf_counter()
    build_for_segments(seg1, staged, "ivfpq", previous=None, changes=None, written=written)
    timings["ivfpq_s"] = time.perf_counter() - start
    (seg1 / "segments.json").write_text(json.dumps(written.names))
    for name in ("vectors.faiss", "ann.faiss", "ann.json"):
        os.link(seg1 / name, old1 / name)
    return seg1, old1, timings


def make_update(args: argparse.Namespace, ids: np.ndarray, tmp: Path) -> tuple[Path, np.ndarray]:
    revised, new = args.update // 3, args.update - args.update // 3
    rng = np.random.default_rng(2)
    touched = rng.choice(ids, size=revised + args.deleted, replace=False)
    revised_ids, deleted_ids = touched[:revised], touched[revised:]
    new_ids = (len(ids) + 1 + np.arange(new, dtype=np.int64)) * PMID_STEP
    added = np.concatenate([revised_ids, new_ids])
    vectors = clustered_vectors(len(added), clusters=args.clusters, spread=args.spread, seed=3)
    path = tmp / "update.npz"
    np.savez(path, removed=touched, added=added, vectors=vectors)
    return path, deleted_ids


def compare(seg2: Path, old2: Path, queries: np.ndarray, deleted: np.ndarray) -> dict[str, object]:
    from index.ann import AnnIndex
    from index.ann_segments import SegmentedAnn
    from index.segments import SegmentedVectors
    from index.vectors import VectorIndex

    names = json.loads((seg2 / "segments.json").read_text())
    segmented = SegmentedVectors.open(seg2, names, DIM)
    scratch = VectorIndex.load(old2 / "vectors.faiss", mmap=True)  # the final vectors in one flat index
    truth = np.concatenate([scratch.search(queries[i : i + 100], K)[1] for i in range(0, len(queries), 100)])
    ours = np.concatenate([segmented.search(queries[i : i + 100], K)[1] for i in range(0, len(queries), 100)])
    seg_ann = SegmentedAnn(seg2, segmented)
    old_ann = AnnIndex.load(old2 / "ann.faiss", "ivfpq", exact=scratch.vectors)
    found_seg = np.stack([seg_ann.search(q[None], K)[1][0] for q in queries])
    found_old = np.stack([old_ann.search(q[None], K)[1][0] for q in queries])
    deep = np.stack([seg_ann.search(q[None], 200)[1][0] for q in queries[:100]])
    return {
        "exact_top10_identical": int(sum(np.array_equal(a, b) for a, b in zip(ours, truth, strict=True))),
        "exact_top10_same_set": int(sum(set(a) == set(b) for a, b in zip(ours, truth, strict=True))),
        "queries": len(queries),
        "live_vectors": (len(segmented), len(scratch)),
        "segments": names,
        "ivfpq_recall@10_segments": recall(found_seg, truth),
        "ivfpq_recall@10_full_copy": recall(found_old, truth),
        "deleted_returned": int(np.isin(deep, deleted).sum()),
    }


def run(args: argparse.Namespace, tmp: Path) -> dict[str, object]:
    ids = np.arange(1, args.n + 1, dtype=np.int64) * PMID_STEP
    vectors = clustered_vectors(args.n, clusters=args.clusters, spread=args.spread, seed=0)
    queries = clustered_vectors(args.queries, clusters=args.clusters, spread=args.spread, seed=1)
    seg1, old1, build = build_first_generation(tmp, ids, vectors)
    del vectors
    update, deleted = make_update(args, ids, tmp)
    result: dict[str, object] = {"n": args.n, "update": args.update, "deleted": args.deleted, "build": build}
    result["update_mb"] = {
        "vectors": args.update * DIM * 4 / 2**20,
        "ivfpq_codes": args.update * 72 / 2**20,
    }
    result["full_copy"] = run_child("full_copy", old1, tmp / "full-gen2", update)
    result["segments"] = run_child("segments", seg1, tmp / "segments-gen2", update)
    result["check"] = compare(tmp / "segments-gen2", tmp / "full-gen2", queries, deleted)
    return result


def table(result: dict[str, object]) -> str:
    rows = []
    paths = [("full_copy", "full copy (before)"), ("segments", "segments in place")]
    if "meta_segments" in result:
        paths = [("full_copy", "metadata: full copy"), ("segments", "metadata: segments")]
    if "bm25_full" in result:
        paths += [("bm25_full", "BM25: full rebuild (before)"), ("bm25_segments", "BM25: segments in place")]
    for name, label in paths:
        r = result[name]
        assert isinstance(r, dict)
        rows.append(
            [label, f"{r['wall_s']:.1f}", f"{r['peak_rss_mb']:.0f}", f"{r['wchar_mb']:.0f}", f"{r['created_mb']:.0f}"]
        )
    header = ["path", "wall s", "peak RSS MB", "written MB (wchar)", "new files MB"]
    return markdown_table(header, rows)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=2_000_000, help="vectors in the index before the update")
    parser.add_argument("--update", type=int, default=30_000, help="records with a (new) vector in the update")
    parser.add_argument("--deleted", type=int, default=1_000, help="PMIDs the update deletes")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--clusters", type=int, default=4096)
    parser.add_argument("--spread", type=float, default=1.7)
    parser.add_argument("--part", choices=["vectors", "metadata"], default="vectors")
    parser.add_argument("--meta-n", type=int, default=200_000, help="metadata rows before the update (--part metadata)")
    parser.add_argument("--no-bm25", action="store_true", help="--part metadata without the BM25 paths")
    parser.add_argument("--tmp", type=Path, default=None, help="working folder (default: a temporary one)")
    parser.add_argument("--out", type=Path, default=None)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--child"]:
        child(argv[1], Path(argv[2]), Path(argv[3]), Path(argv[4]), Path(argv[5]))
        return
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="update-in-place-", dir=args.tmp) as tmp:
        result = run(args, Path(tmp)) if args.part == "vectors" else run_metadata(args, Path(tmp))
    result["machine"] = machine_line(machine_info())
    name = f"update_in_place_{args.n}" if args.part == "vectors" else f"update_in_place_meta_{args.meta_n}"
    path = write_result(args.out, name, result)
    print(json.dumps(result, indent=2))
    print(table(result))
    print(f"written to {path}")


if __name__ == "__main__":
    main()
