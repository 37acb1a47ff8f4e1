"""The serving index for a PubMed-sized collection: IVF-PQ build, incremental update and serving memory.

One run, with exact flat search as the baseline, through the project's own code (``index/ann.py``,
``index/vectors.py``) and on-disk generations laid out as an ingest writes them:

1. *Build*: the flat index (``vectors.faiss``) of ``--n`` vectors, then IVF-PQ from scratch, timed
   as train (k-means + PQ codebooks on a sample) and add (encoding every vector).
2. *Serve*: a fresh process opens the generation as ``PubMedIndex`` does (flat vectors
   memory-mapped for rescoring, IVF-PQ memory-mapped) and searches the queries one at a time on
   one FAISS thread; its resident memory (VmRSS, split into anonymous heap and mapped file pages)
   is read after opening and after the queries. A second process opens the flat file the way the
   code did before (``IO_FLAG_MMAP``, which FAISS applies to IVF lists only: the flat vectors are
   read into RAM) for comparison, and a third serves exact flat search from the mapped file.
3. *Update*: a second generation in which ``--update`` vectors change as a daily update file
   changes them (a third replaced, two thirds new, plus a third as many deleted); IVF-PQ is
   updated incrementally from the first generation's file (``build_for_generation`` with the
   changes, as an ingest calls it) and, for comparison, rebuilt from scratch; recall@10 of both
   against exact search on the updated vectors, and a check that no deleted PMID is returned.

Vectors are real MiniLM embeddings tiled and perturbed (``--real-cache``, see
``benchmarks/ann_scale.py``), else clustered synthetic ones. Run at normal priority (it is a
timing run), from the repository root::

    python -m benchmarks.pubmed_scale --real-cache emb.sqlite --n 2000000
    python -m benchmarks.pubmed_scale --n 60000 --update 3000      # a quick check (synthetic)
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from benchmarks._common import machine_info, machine_line, markdown_table, percentile, write_result
from benchmarks.ann_scale import DIM, TIMED, K, clustered_vectors, latencies, mixed_real, real_vectors, recall
from index import ann
from index.ann import AnnIndex, VectorChanges
from index.vectors import VectorIndex

PMID_STEP = 7  # PMID-like ids, not row numbers


def rss() -> dict[str, float]:
    """This process's resident memory in MB: total, anonymous (heap) and file-backed (mapped) pages."""
    fields = {"VmRSS": "rss_mb", "RssAnon": "anon_mb", "RssFile": "file_mb"}
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        name = line.split(":")[0]
        if name in fields:
            out[fields[name]] = int(line.split()[1]) / 1024
    return out


def serve(generation: Path, queries_file: Path, mode: str, out: Path) -> None:
    """Child process: open ``generation`` like ``PubMedIndex`` and search each query once."""
    import faiss

    faiss.omp_set_num_threads(1)
    queries = np.load(queries_file)
    report: dict[str, object] = {"mode": mode, "before_open": rss()}
    if mode == "legacy":  # the loading before this change: IO_FLAG_MMAP reads a flat index whole
        flat = VectorIndex(faiss.read_index(str(generation / "vectors.faiss"), faiss.IO_FLAG_MMAP))
    else:
        flat = VectorIndex.load(generation / "vectors.faiss", mmap=True)
    searcher = flat if mode == "flat" else AnnIndex.load(generation / ann.ANN_FILE, "ivfpq", exact=flat.vectors)
    report["invlists"] = (
        type(faiss.downcast_InvertedLists(faiss.extract_index_ivf(searcher.index).invlists)).__name__
        if mode != "flat"
        else ""
    )
    report["after_open"] = rss()
    search = lambda q: searcher.search(q, K)[1][0]  # noqa: E731
    wall, cpu = latencies(search, queries[:TIMED])  # timed first: page cache as a fresh process finds it
    found = np.stack([search(q[None]) for q in queries])
    report.update(after_queries=rss(), wall_ms=wall, cpu_ms=cpu)
    np.save(out.with_suffix(".npy"), found)
    out.write_text(json.dumps(report), encoding="utf-8")


def serve_in_child(generation: Path, queries_file: Path, mode: str) -> tuple[dict, np.ndarray]:
    out = generation.parent / f"serve-{mode}.json"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.pubmed_scale",
            "--serve",
            str(generation),
            str(queries_file),
            mode,
            str(out),
        ],
        check=True,
    )
    return json.loads(out.read_text(encoding="utf-8")), np.load(out.with_suffix(".npy"))


def timed_call(func, *args, **kwargs):
    """``func(*args, **kwargs)`` and its wall-clock seconds."""
    start = time.perf_counter()
    value = func(*args, **kwargs)
    return value, time.perf_counter() - start


def make_vectors(args: argparse.Namespace, count: int) -> tuple[np.ndarray, np.ndarray]:
    if args.real_cache:
        docs, queries = real_vectors(args.real_cache)
        return mixed_real(docs, count, seed=0), queries
    vectors = clustered_vectors(count, clusters=args.clusters, spread=args.spread, seed=0)
    return vectors, clustered_vectors(1000, clusters=args.clusters, spread=args.spread, seed=1)


def exact_truth(flat: VectorIndex, queries: np.ndarray) -> np.ndarray:
    return np.concatenate([flat.search(queries[i : i + 100], K)[1] for i in range(0, len(queries), 100)])


def run(args: argparse.Namespace, tmp: Path) -> dict[str, object]:
    new, replaced, deleted = args.update * 2 // 3, args.update - args.update * 2 // 3, args.update // 3
    vectors, queries = make_vectors(args, args.n + args.update)
    ids = np.arange(1, args.n + 1, dtype=np.int64) * PMID_STEP
    queries_file = tmp / "queries.npy"
    np.save(queries_file, queries)
    gen1, gen2 = tmp / "gen-000001", tmp / "gen-000002"
    gen1.mkdir()
    gen2.mkdir()
    result: dict[str, object] = {}

    # 1. build: flat, then IVF-PQ from scratch (train, add)
    flat = VectorIndex.create(DIM)
    _, result["flat_add_s"] = timed_call(flat.add, ids, vectors[: args.n])
    _, result["flat_save_s"] = timed_call(flat.save, gen1 / "vectors.faiss")
    truth1 = exact_truth(flat, queries)
    mapped1 = VectorIndex.load(gen1 / "vectors.faiss", mmap=True)
    trained, result["train_s"] = timed_call(ann.train_ivfpq, mapped1)
    built, result["add_s"] = timed_call(ann.add_all, trained, mapped1)
    _, result["ann_save_s"] = timed_call(built.save, gen1 / ann.ANN_FILE)
    del trained, built, mapped1
    result["flat_bytes"] = (gen1 / "vectors.faiss").stat().st_size
    result["ivfpq_bytes"] = (gen1 / ann.ANN_FILE).stat().st_size

    # 2. serve: fresh processes opening the generation as PubMedIndex does, and as it did before
    serving = {}
    for mode in ("ivfpq", "legacy", "flat"):
        report, found = serve_in_child(gen1, queries_file, mode)
        report["recall@10"] = recall(found, truth1)
        serving[mode] = report
    result["serving"] = serving

    # 3. update: a daily file's worth of changes, applied incrementally vs a rebuild from scratch
    rng = np.random.default_rng(2)
    touched = rng.choice(ids, size=replaced + deleted, replace=False)
    replaced_ids, deleted_ids = touched[:replaced], touched[replaced:]
    new_ids = (args.n + 1 + np.arange(new, dtype=np.int64)) * PMID_STEP
    added = np.concatenate([replaced_ids, new_ids])
    changes = VectorChanges(removed=touched, added=added)
    flat2, result["flat_load_s"] = timed_call(VectorIndex.load, gen1 / "vectors.faiss")  # as the writer does
    start = time.perf_counter()
    flat2.remove(changes.removed)
    flat2.add(added, vectors[args.n : args.n + len(added)])
    result["flat_update_s"] = time.perf_counter() - start
    _, result["flat_rewrite_s"] = timed_call(flat2.save, gen2 / "vectors.faiss")
    truth2 = exact_truth(flat2, queries)
    del flat2
    mapped2 = VectorIndex.load(gen2 / "vectors.faiss", mmap=True)
    kind, result["incremental_s"] = timed_call(
        ann.build_for_generation, gen2, mapped2, "ivfpq", previous=gen1, changes=changes
    )
    training = ann.Training.load(gen2 / ann.TRAINING_FILE)
    assert kind == "ivfpq" and training is not None and training.added_since == len(added), "did not update"
    result["update"] = {"added": len(added), "replaced": replaced, "new": new, "deleted": deleted}
    incremental = AnnIndex.load(gen2 / ann.ANN_FILE, "ivfpq", exact=mapped2.vectors)
    found_inc = np.stack([incremental.search(q[None], K)[1][0] for q in queries])
    gone = np.isin(np.stack([incremental.search(q[None], 200)[1][0] for q in queries[:100]]), deleted_ids)
    result["deleted_returned"] = int(gone.sum())
    result["incremental_recall@10"] = recall(found_inc, truth2)
    result["incremental_ntotal"] = len(incremental)
    if not args.no_rebuild:
        rebuilt, result["rebuild_s"] = timed_call(ann.build_ann, mapped2, "ivfpq")
        rebuilt.exact = mapped2.vectors
        found_re = np.stack([rebuilt.search(q[None], K)[1][0] for q in queries])
        result["rebuild_recall@10"] = recall(found_re, truth2)
        result["incremental_vs_rebuild_overlap@10"] = recall(found_inc, found_re)
    return result


def summarise(raw: dict[str, object], n: int) -> dict[str, object]:
    serving = raw["serving"]
    assert isinstance(serving, dict)
    rows = []
    for mode, label in (
        ("flat", "flat, exact (baseline; vectors mapped)"),
        ("ivfpq", "IVF-PQ + exact rescoring, as served"),
        ("legacy", "IVF-PQ + rescoring, flat read with IO_FLAG_MMAP (before)"),
    ):
        r = serving[mode]
        rows.append(
            {
                "serving": label,
                "p50_ms": percentile(r["wall_ms"], 50),
                "p95_ms": percentile(r["wall_ms"], 95),
                "cpu_p95_ms": percentile(r["cpu_ms"], 95),
                "rss_open_mb": r["after_open"]["rss_mb"] - r["before_open"]["rss_mb"],
                "anon_after_mb": r["after_queries"]["anon_mb"] - r["before_open"]["anon_mb"],
                "file_after_mb": r["after_queries"]["file_mb"] - r["before_open"]["file_mb"],
                "rss_after_mb": r["after_queries"]["rss_mb"] - r["before_open"]["rss_mb"],
                "recall@10": r["recall@10"],
                "invlists": r["invlists"],
            }
        )
    for row in rows:
        row["anon_bytes_per_abstract"] = row["anon_after_mb"] * 2**20 / n
        row["rss_bytes_per_abstract"] = row["rss_after_mb"] * 2**20 / n
    build = float(raw["train_s"]) + float(raw["add_s"])
    update = raw["update"]
    assert isinstance(update, dict)
    return {
        "rows": rows,
        "build_s": build,
        "train_s": raw["train_s"],
        "add_s": raw["add_s"],
        "add_rate_per_s": n / float(raw["add_s"]),
        "incremental_rate_per_s": update["added"] / float(raw["incremental_s"]),
        "incremental_vs_build": float(raw["incremental_s"]) / build,
        "ivfpq_bytes_per_abstract": int(raw["ivfpq_bytes"]) / n,
        "flat_bytes_per_abstract": int(raw["flat_bytes"]) / n,
    }


def table(summary: dict[str, object]) -> str:
    rows = summary["rows"]
    assert isinstance(rows, list)
    return markdown_table(
        [
            *("serving", "p50 / p95 wall (ms)", "p95 CPU (ms)", "RSS after queries (MB)", "of which heap (MB)"),
            *("heap B/abstract", "recall@10 vs flat"),
        ],
        [
            [
                r["serving"],
                f"{r['p50_ms']:.1f} / {r['p95_ms']:.1f}",
                round(r["cpu_p95_ms"], 1),
                round(r["rss_after_mb"]),
                round(r["anon_after_mb"]),
                round(r["anon_bytes_per_abstract"]),
                r["recall@10"],
            ]
            for r in rows
        ],
    )


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="vectors in the first generation (default: 1M)")
    parser.add_argument("--update", type=int, default=30_000, help="vectors an update adds (default: 30,000)")
    parser.add_argument("--real-cache", type=Path, default=None, help="real MiniLM vectors (see ann_scale.py)")
    parser.add_argument("--clusters", type=int, default=4096, help="synthetic topic centres (default: 4096)")
    parser.add_argument("--spread", type=float, default=1.7, help="synthetic noise around a centre (default: 1.7)")
    parser.add_argument("--no-rebuild", action="store_true", help="skip the from-scratch rebuild after the update")
    parser.add_argument("--tmp", type=Path, default=None, help="folder for the generations (default: system temp)")
    parser.add_argument("--out", type=Path, default=None, help="JSON result (default: benchmarks/results/...)")
    parser.add_argument("--serve", nargs=4, default=None, help=argparse.SUPPRESS)  # the child process
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.serve:
        generation, queries, mode, out = args.serve
        serve(Path(generation), Path(queries), mode, Path(out))
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    with tempfile.TemporaryDirectory(prefix="bench-pubmed-", dir=args.tmp) as tmp:
        raw = run(args, Path(tmp))
    summary = summarise(raw, args.n)
    settings = {
        "n": args.n,
        "update": args.update,
        "vectors": "real MiniLM mixed" if args.real_cache else "clustered",
        "nlist": ann.nlist_for(args.n),
        "pq_bytes": ann.pq_bytes_for(DIM),
        "nprobe": ann.NPROBE,
        "refine": ann.REFINE,
        "timed_queries": TIMED,
    }
    result = {"benchmark": "pubmed_scale", "settings": settings, "summary": summary, "raw": raw}
    result["machine"] = machine_info()
    path = write_result(args.out, "pubmed_scale", result)
    print(table(summary))
    print(json.dumps({k: v for k, v in summary.items() if k != "rows"}, indent=1))
    print(json.dumps({k: v for k, v in raw.items() if k != "serving"}, indent=1))
    machine = result["machine"]
    assert isinstance(machine, dict)
    print(f"\nMachine: {machine_line(machine)}\nResult: {path}")


if __name__ == "__main__":
    main()
