"""Which extra relevance signals could lift retrieval past the default ``hybrid``, measured.

``benchmarks/retrieval.py`` measures the retrievers the project ships; this script measures the
candidates that were tried for the issue #5 targets and not (or not yet) shipped, on the same
corpora and questions, each against the shipped ``hybrid`` in the same run:

- other dense representations of a long abstract (the index stores the normalised mean of its
  256-token windows): the first window only (truncation), the best window (max over windows, one
  vector per window), and a mean that weights the first window ``w`` times;
- sentence-level max-sim: the best cosine of the question with one sentence of the abstract,
  used to rescore the fused top ``K`` (what a query-time sentence reranker would do);
- a bigram BM25 as a third fused signal (phrase matches);
- the oracle that always picks whichever of dense and BM25 is right at rank 1.

Fusion is ``index/fusion.py``'s weighted z-scores over the union of each signal's top 100, like
``hybrid``. Scores are computed with numpy over all documents (no index), so this is an
experiment harness, not the product path; its ``hybrid`` row equals ``benchmarks/retrieval.py``'s.

Window and sentence vectors are cached by text hash (``--unit-cache``, SQLite float32), so a
rerun embeds nothing: the first run encodes ~13k windows and ~64k sentences (about 45 CPU-minutes
on 2 cores for MiniLM).

    python -m benchmarks.retrieval_signals --unit-cache units.sqlite
"""

from __future__ import annotations

import argparse
import itertools
import logging
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from benchmarks._cached_encoder import CachedEncoder
from benchmarks._common import machine_info, machine_line, markdown_table, write_result
from benchmarks.retrieval import DISTRACTOR_FILE, Question, load_bioasq, load_distractors, load_pubmedqa, metrics
from index.chunking import long_text_encoder, split_text
from index.encoder import MINILM_ID, load_encoder
from index.fusion import z_score_fusion
from index.hybrid import CANDIDATES, DENSE_WEIGHT
from ingest.records import Article

SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9(\[])")


def datasets(distractors: int) -> dict[str, tuple[list[Question], list[Article]]]:
    qp, dp = load_pubmedqa(None)
    qb, db = load_bioasq(None)
    dist, _ = load_distractors(DISTRACTOR_FILE, distractors, {d.pmid for d in dp} | {d.pmid for d in db})
    return {"pubmedqa": (qp, dp + dist), "bioasq": (qb, db + dist)}


class Units:
    """Each document's window and sentence vectors (rows of one matrix, ``owner`` = document row)."""

    def __init__(self, texts: list[str], cache: Path | None) -> None:
        raw = load_encoder(MINILM_ID, backend="torch")  # the fp32 vectors benchmarks/retrieval.py uses
        windowed = long_text_encoder(raw)
        offsets = windowed._offsets(texts)
        windows, sentences = [], []
        for row, (text, offs) in enumerate(zip(texts, offsets, strict=True)):
            windows += [(row, w) for w in split_text(text, offs, windowed.max_tokens, windowed.overlap)]
            sentences += [(row, s.strip()) for s in SENTENCE.split(text) if s.strip()]
        encoder = CachedEncoder(raw, cache) if cache else raw
        self.window_owner = np.asarray([r for r, _ in windows])
        self.windows = encoder.encode([w for _, w in windows])
        self.sentence_owner = np.asarray([r for r, _ in sentences])
        self.sentences = encoder.encode([s for _, s in sentences])

    def pooled(self, first_weight: float) -> np.ndarray:
        """Mean of each document's windows, its first window weighted ``first_weight`` (inf = first only)."""
        first = np.r_[True, np.diff(self.window_owner) != 0]
        if np.isinf(first_weight):
            vectors = self.windows[first]
        else:
            weights = np.where(first, first_weight, 1.0)[:, None]
            vectors = np.zeros((self.window_owner.max() + 1, self.windows.shape[1]), dtype=np.float32)
            np.add.at(vectors, self.window_owner, self.windows * weights)
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)

    def best(self, queries: np.ndarray, kind: str) -> np.ndarray:
        """(queries x documents) best cosine of a query with one window or sentence of the document."""
        if kind == "window":
            owner, vectors = self.window_owner, self.windows
        else:
            owner, vectors = self.sentence_owner, self.sentences
        sims = queries @ vectors.T
        starts = np.r_[0, np.flatnonzero(np.diff(owner)) + 1]
        return np.maximum.reduceat(sims, starts, axis=1)


def bm25_scores(documents: list[str], queries: list[str], *, bigrams: bool = False) -> np.ndarray:
    import bm25s
    import Stemmer

    logging.getLogger("bm25s").setLevel(logging.WARNING)

    def tokens(texts: list[str]) -> list[list[str]]:
        words = bm25s.tokenize(
            texts, stopwords="en", stemmer=Stemmer.Stemmer("english"), return_ids=False, show_progress=False
        )
        return [[f"{a}_{b}" for a, b in itertools.pairwise(t)] for t in words] if bigrams else words

    model = bm25s.BM25()  # lucene, k1 1.5, b 0.75: index/bm25.py's settings
    model.index(tokens(documents), show_progress=False)
    out = np.zeros((len(queries), len(documents)), dtype=np.float32)
    for row, query in enumerate(tokens(queries)):
        known = [t for t in query if t in model.vocab_dict]
        if known:
            out[row] = model.get_scores(known)
    return out


def fuse(signals: Sequence[np.ndarray], weights: Sequence[float], pool: Sequence[int] = (0, 1)) -> list[np.ndarray]:
    """Per query, document rows ordered by weighted z-scores over the union of the ``pool`` signals' top 100."""
    orders = []
    for q in range(len(signals[0])):
        cand = np.unique(np.concatenate([np.argpartition(-signals[i][q], CANDIDATES)[:CANDIDATES] for i in pool]))
        ranked = [c for c, _ in z_score_fusion(cand.tolist(), [s[q, cand] for s in signals], weights)]
        orders.append(np.asarray(ranked))
    return orders


def rescore_top(orders: list[np.ndarray], signals: Sequence[np.ndarray], weights: Sequence[float], k: int):
    """Reorder each query's first ``k`` rows by the weighted z-scores of ``signals`` over those ``k``."""
    out = []
    for q, order in enumerate(orders):
        top = order[:k].tolist()
        fused = [c for c, _ in z_score_fusion(top, [s[q, top] for s in signals], weights)]
        out.append(np.asarray(fused + order[k:].tolist()))
    return out


def evaluate(orders: list[np.ndarray], pmids: list[str], questions: list[Question]) -> dict[str, float]:
    return metrics([[pmids[i] for i in order[:10]] for order in orders], questions)


def ranked(scores: np.ndarray) -> list[np.ndarray]:
    return [np.argsort(-row, kind="stable")[:CANDIDATES] for row in scores]


def run(args: argparse.Namespace) -> dict[str, object]:
    data = datasets(args.distractors)
    texts = list(dict.fromkeys(a.text for _, arts in data.values() for a in arts))
    row_of = {t: i for i, t in enumerate(texts)}
    units = Units(texts, args.unit_cache)
    query_encoder = load_encoder(MINILM_ID, backend="torch")
    results: dict[str, dict[str, dict[str, float]]] = {}
    for name, (questions, articles) in data.items():
        rows = np.asarray([row_of[a.text] for a in articles])
        pmids = [a.pmid for a in articles]
        queries = query_encoder.encode([q.text for q in questions])
        documents, asked = [a.text for a in articles], [q.text for q in questions]
        mean, bm25 = queries @ units.pooled(1.0)[rows].T, bm25_scores(documents, asked)
        hybrid = fuse([mean, bm25], [DENSE_WEIGHT, 1 - DENSE_WEIGHT])
        signals = {
            "dense: mean of windows (the index)": ranked(mean),
            "bm25": ranked(bm25),
            "hybrid (default)": hybrid,
        }
        for label, weight in (("first window only", np.inf), ("first window weighted 3x", 3.0)):
            dense = queries @ units.pooled(weight)[rows].T
            signals[f"dense: {label}"] = ranked(dense)
            signals[f"hybrid with dense = {label}"] = fuse([dense, bm25], [DENSE_WEIGHT, 1 - DENSE_WEIGHT])
        best_window = units.best(queries, "window")[:, rows]
        signals["dense: best window (max)"] = ranked(best_window)
        signals["hybrid with dense = best window"] = fuse([best_window, bm25], [DENSE_WEIGHT, 1 - DENSE_WEIGHT])
        best_sentence = units.best(queries, "sentence")[:, rows]
        signals["dense: best sentence (max)"] = ranked(best_sentence)
        signals[f"hybrid, top {args.rescore} rescored with best sentence"] = rescore_top(
            hybrid, [mean, bm25, best_sentence], [0.4, 0.15, 0.45], args.rescore
        )
        bigram = bm25_scores(documents, asked, bigrams=True)
        signals["hybrid + bigram BM25"] = fuse([mean, bm25, bigram], [0.8, 0.15, 0.05])
        results[name] = {label: evaluate(orders, pmids, questions) for label, orders in signals.items()}
        either = [
            pmids[d[0]] in q.gold or pmids[b[0]] in q.gold
            for d, b, q in zip(signals["dense: mean of windows (the index)"], signals["bm25"], questions, strict=True)
        ]
        results[name]["oracle: dense or bm25 right at rank 1"] = {"R@1": float(np.mean(either))}
    return {
        "benchmark": "retrieval_signals",
        "distractors": args.distractors,
        "results": results,
        "machine": machine_info(),
    }


def table(result: dict[str, object]) -> str:
    pqa, bio = result["results"]["pubmedqa"], result["results"]["bioasq"]
    rows = [
        [label, pqa[label]["R@1"], pqa[label].get("MRR@10"), bio[label]["R@1"], bio[label].get("MRR@10")]
        for label in pqa
    ]
    return markdown_table(["signal", "PubMedQA R@1", "MRR@10", "BioASQ R@1", "MRR@10"], rows)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--distractors", type=int, default=5000, help="distractor abstracts (default 5000)")
    parser.add_argument("--rescore", type=int, default=20, help="fused candidates rescored by best sentence")
    parser.add_argument("--unit-cache", type=Path, help="SQLite file keeping window/sentence vectors between runs")
    parser.add_argument("--out", type=Path, help="result JSON (default benchmarks/results/retrieval_signals.json)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    result = run(args)
    print(table(result))
    print(machine_line(result["machine"]))
    print("wrote", write_result(args.out, "retrieval_signals", result))


if __name__ == "__main__":
    main()
