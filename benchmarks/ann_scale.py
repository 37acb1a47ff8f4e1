"""Vector search at 1M abstracts: flat vs HNSW vs IVF-PQ, through the project's own index code.

What is measured, per index type, on the same vectors in the same run: build time, single-query
latency p50/p95 (k=10, one query at a time as the chatbot asks, FAISS on ``--threads`` threads:
1 by default, so that a 2-core machine serves two questions at once) as wall time and as the CPU
time the query used (the CPU figure does not grow when other processes compete for the cores),
bytes per abstract (serialised index size / N: what must sit in memory to search), and recall@10
against exact flat search (the baseline), over 1,000 queries.

Vectors. Uniform random vectors are the worst case for product quantisation (no structure to
exploit) and unlike any embedding, so the documented run uses *real* MiniLM embeddings tiled and
perturbed (``--real-cache``): the packaged MiniLM's vectors of the 6,705 evaluation abstracts
(from ``python -m benchmarks.retrieval --embedding-cache FILE``), each synthetic vector a random
mix of two of them (the first weighted 0.5-1) plus 0.2 x the difference of two more,
renormalised; the queries are the 792 real PubMedQA and BioASQ dev questions. Without it, the
vectors are clustered synthetic ones (``--clusters`` random centres plus isotropic noise,
``--spread``), or uniform with ``--uniform``: both much harder for PQ than real embeddings.

Run from the repository root (about 15 minutes per index type on 2 shared cores, 5 GB of memory)::

    python -m benchmarks.retrieval --embedding-cache emb.sqlite     # once: embeds the corpora
    python -m benchmarks.ann_scale --real-cache emb.sqlite --kinds ivfpq
    python -m benchmarks.ann_scale --real-cache emb.sqlite --kinds hnsw --out ann_scale_real_hnsw.json
    python -m benchmarks.ann_scale --n 100000      # clustered synthetic vectors, a quick check
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from benchmarks._common import machine_info, machine_line, markdown_table, percentile, ratio, timed, write_result
from index import ann
from index.ann import AnnIndex, build_ann
from index.vectors import VectorIndex

DIM = 384
QUERIES = 1000
TIMED = 200  # of them timed one by one (flat search at 1M costs ~20-40 ms each)
THREADS = 1  # FAISS threads per timed query (--threads)
K = 10


def clustered_vectors(n: int, *, clusters: int, spread: float, seed: int, uniform: bool = False) -> np.ndarray:
    """Unit vectors around random topic centres (or uniform on the sphere with ``uniform``)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, DIM)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    out = np.empty((n, DIM), dtype=np.float32)
    for start in range(0, n, 100_000):
        stop = min(start + 100_000, n)
        noise = rng.standard_normal((stop - start, DIM)).astype(np.float32)
        block = noise if uniform else centres[rng.integers(0, clusters, stop - start)] + spread * noise / np.sqrt(DIM)
        out[start:stop] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out


def latencies(search: Callable[[np.ndarray], np.ndarray], queries: np.ndarray) -> tuple[list[float], list[float]]:
    """Wall and CPU milliseconds of each query, searched one at a time."""
    wall, cpu = [], []
    for query in queries:
        start, start_cpu = time.perf_counter(), time.process_time()
        search(query[None])
        wall.append((time.perf_counter() - start) * 1000)
        cpu.append((time.process_time() - start_cpu) * 1000)
    return wall, cpu


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / K for f, t in zip(found, truth, strict=True)]))


def measure(name: str, search, queries, truth, *, build_s: float, size: int, n: int, note: str) -> dict[str, object]:
    """Recall over every query, latency over the first ``TIMED`` searched one by one on ``THREADS``."""
    import faiss

    found = truth if name.startswith("flat") else np.stack([search(q[None]) for q in queries])
    cores = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(THREADS)
    try:
        wall, cpu = latencies(search, queries[:TIMED])
    finally:
        faiss.omp_set_num_threads(cores)  # builds and batch searches use every core
    return {
        "index": name,
        "build_s": build_s,
        "p50_ms": percentile(wall, 50),
        "p95_ms": percentile(wall, 95),
        "cpu_p50_ms": percentile(cpu, 50),
        "cpu_p95_ms": percentile(cpu, 95),
        "bytes_per_abstract": size / n,
        "recall@10": recall(found, truth),
        "note": note,
    }


def run(args: argparse.Namespace) -> dict[str, object]:
    if args.real_cache:
        real_docs, queries = real_vectors(args.real_cache)
        vectors, gen_s = timed(lambda: mixed_real(real_docs, args.n, seed=0))
    else:
        vectors, gen_s = timed(
            lambda: clustered_vectors(args.n, clusters=args.clusters, spread=args.spread, seed=0, uniform=args.uniform)
        )
        queries = _queries(args)
    ids = np.arange(1, args.n + 1, dtype=np.int64) * 7  # PMID-like ids, not row numbers
    flat = VectorIndex.create(DIM)
    start = time.perf_counter()
    flat.add(ids, vectors)
    flat_s = time.perf_counter() - start
    del vectors  # the flat index holds its own copy
    truth = np.concatenate([flat.search(queries[i : i + 100], K)[1] for i in range(0, len(queries), 100)])
    rows: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory(prefix="bench-ann-") as tmp:
        flat.save(Path(tmp) / "vectors.faiss")
        flat_size = (Path(tmp) / "vectors.faiss").stat().st_size
        search_flat = lambda q: flat.search(q, K)[1][0]  # noqa: E731
        note = "IndexIDMap2(IndexFlatIP): the baseline"
        rows.append(
            measure("flat (exact)", search_flat, queries, truth, build_s=flat_s, size=flat_size, n=args.n, note=note)
        )
        for kind in args.kinds:
            rows.extend(_approximate(kind, flat, queries, truth, Path(tmp), args.n, flat_size))
    baseline = rows[0]
    for row in rows:
        row["cpu_p95_vs_flat"] = ratio(row["cpu_p95_ms"], baseline["cpu_p95_ms"])
        row["bytes_vs_flat"] = ratio(row["bytes_per_abstract"], baseline["bytes_per_abstract"])
    return {
        "benchmark": "ann_scale",
        "settings": {
            "n": args.n,
            "threads": args.threads,
            "dim": DIM,
            "queries": len(queries),
            "k": K,
            "vectors": "real MiniLM mixed" if args.real_cache else "uniform" if args.uniform else "clustered",
            "clusters": args.clusters,
            "spread": args.spread,
            "generate_s": gen_s,
            "hnsw": {"M": ann.HNSW_M, "efConstruction": ann.HNSW_EF_CONSTRUCTION, "efSearch": ann.HNSW_EF_SEARCH},
            "ivfpq": {
                "nlist": ann.nlist_for(args.n),
                "bytes": ann.pq_bytes_for(DIM),
                "nprobe": ann.NPROBE,
                "refine": ann.REFINE,
            },
        },
        "rows": rows,
        "machine": machine_info(),
    }


def real_vectors(cache: Path) -> tuple[np.ndarray, np.ndarray]:
    """The packaged MiniLM's vectors of the evaluation corpora's 6,705 abstracts and of the 792
    PubMedQA + BioASQ dev questions, from ``python -m benchmarks.retrieval --embedding-cache``."""
    from benchmarks.retrieval import DISTRACTOR_FILE, load_bioasq, load_distractors, load_pubmedqa
    from index.encoder import MINILM_ID
    from index.vector_cache import VectorCache

    questions, pubmedqa = load_pubmedqa(None)
    bioasq_questions, bioasq = load_bioasq(None)
    distractors, _ = load_distractors(DISTRACTOR_FILE, 5000, {d.pmid for d in pubmedqa + bioasq})
    store = VectorCache(cache, f"{MINILM_ID}|benchmark")  # the identity CachedEncoder writes
    digest = lambda text: hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]  # noqa: E731
    docs = store.get([digest(a.text) for a in pubmedqa + bioasq + distractors], DIM)
    return docs, store.get([digest(q.text) for q in questions + bioasq_questions], DIM)


def mixed_real(real: np.ndarray, n: int, *, seed: int) -> np.ndarray:
    """``n`` vectors spread over the real embeddings' own directions: each is a random mix of two
    real abstracts (the first weighted 0.5-1) plus 0.2 x the difference of two more, renormalised."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, DIM), dtype=np.float32)
    for start in range(0, n, 100_000):
        m = min(100_000, n - start)
        first, second, plus, minus = (rng.integers(0, len(real), m) for _ in range(4))
        a = rng.uniform(0.5, 1.0, (m, 1)).astype(np.float32)
        block = a * real[first] + (1 - a) * real[second] + 0.2 * (real[plus] - real[minus])
        out[start : start + m] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out


def _queries(args: argparse.Namespace) -> np.ndarray:
    """Fresh vectors around the index's own centres (the same seed draws the same centres first)."""
    if args.uniform:
        return clustered_vectors(QUERIES, clusters=1, spread=0, seed=1, uniform=True)
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((args.clusters, DIM)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    fresh = np.random.default_rng(1)
    noise = fresh.standard_normal((QUERIES, DIM)).astype(np.float32)
    block = centres[fresh.integers(0, args.clusters, QUERIES)] + args.spread * noise / np.sqrt(DIM)
    return block / np.linalg.norm(block, axis=1, keepdims=True)


def _approximate(kind: str, flat: VectorIndex, queries, truth, tmp: Path, n: int, flat_size: int) -> list[dict]:
    index, build_s = timed(lambda: build_ann(flat, kind))
    path = tmp / f"{kind}.faiss"
    index.save(path)
    loaded = AnnIndex.load(path, kind)  # memory-mapped, as PubMedIndex opens it
    size = path.stat().st_size
    rows = []
    if kind == "hnsw":
        rows.append(
            measure(
                "HNSW",
                lambda q: loaded.search(q, K)[1][0],
                queries,
                truth,
                build_s=build_s,
                size=size,
                n=n,
                note=f"IndexHNSWFlat M={ann.HNSW_M}, efSearch={ann.HNSW_EF_SEARCH}",
            )
        )
        return rows
    rows.append(
        measure(
            "IVF-PQ, codes only",
            lambda q: loaded.search(q, K)[1][0],
            queries,
            truth,
            build_s=build_s,
            size=size,
            n=n,
            note=f"{ann.pq_bytes_for(DIM)}-byte codes, nprobe={ann.NPROBE}",
        )
    )
    mapped_flat = VectorIndex.load(tmp / "vectors.faiss", mmap=True)
    loaded.exact = mapped_flat.vectors
    rows.append(
        measure(
            "IVF-PQ + exact rescoring (default)",
            lambda q: loaded.search(q, K)[1][0],
            queries,
            truth,
            build_s=build_s,
            size=size,
            n=n,
            note=f"top {ann.REFINE * K} rescored from the memory-mapped flat file ({flat_size / n:.0f} B on disk)",
        )
    )
    return rows


def table(result: dict[str, object]) -> str:
    rows = result["rows"]
    assert isinstance(rows, list)
    header = ["index", "build (s)", "p50 / p95 wall (ms)", "p50 / p95 CPU (ms)", "p95 CPU / flat", "bytes/abstract"]
    header.append("recall@10 vs flat")
    return markdown_table(
        header,
        [
            [
                r["index"],
                r["build_s"],
                f"{r['p50_ms']:.1f} / {r['p95_ms']:.1f}",
                f"{r['cpu_p50_ms']:.1f} / {r['cpu_p95_ms']:.1f}",
                r["cpu_p95_vs_flat"],
                round(r["bytes_per_abstract"]),
                r["recall@10"],
            ]
            for r in rows
        ],
    )


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="vectors (default: 1,000,000)")
    parser.add_argument("--clusters", type=int, default=4096, help="topic centres (default: 4096)")
    parser.add_argument("--spread", type=float, default=1.7, help="noise around a centre (default: 1.7)")
    parser.add_argument("--uniform", action="store_true", help="uniform random unit vectors (PQ's worst case)")
    parser.add_argument(
        "--real-cache",
        type=Path,
        default=None,
        help="vectors from real MiniLM embeddings, read from benchmarks.retrieval's --embedding-cache file",
    )
    parser.add_argument("--threads", type=int, default=1, help="FAISS threads per query (default: 1)")
    parser.add_argument("--kinds", nargs="+", default=["hnsw", "ivfpq"], choices=["hnsw", "ivfpq"])
    parser.add_argument("--out", type=Path, default=None, help="JSON result (default: benchmarks/results/...)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    global THREADS
    args = parse_args(argv)
    THREADS = args.threads
    logging.basicConfig(level=logging.WARNING)
    result = run(args)
    kind = "_real" if args.real_cache else "_uniform" if args.uniform else ""
    path = write_result(args.out, "ann_scale" + kind, result)
    print(table(result))
    machine = result["machine"]
    assert isinstance(machine, dict)
    print(f"\nMachine: {machine_line(machine)}\nResult: {path}")


if __name__ == "__main__":
    main()
