"""Signals the evidence gate could use besides its two, measured: does any separate better?

The searches of ``benchmarks/abstention.py`` (each dev question's top 5, hybrid, first stage, with
its own abstracts in the index and without them), and for each a handful of signals that the
shipped gate (``chatbot/gate.py``: best cosine + 0.35 x IDF-weighted word coverage of the top 3)
does not use:

- ``coverage_top1``: the IDF-weighted coverage of the first hit alone;
- ``bm25_hits``: the best BM25 score of the 5 hits over the query's most a document could score,
  ``(k1 + 1) x`` the summed IDF of its words; ``bm25_best``: the same for the best abstract of the
  whole index (a hit or not); ``bm25_z``: that best score as a z-score over the 200 best;
- ``cos_margin1`` / ``cos_margin5``: the best cosine over the index minus the next one / the mean
  of the next five; ``cos_z``: the best cosine as a z-score over the 200 best;
- ``agree``: dense and BM25 rank the same abstract first.

Reported: each signal's ROC AUC (answerable vs unanswerable) per dataset, and a logistic
regression (numpy, L2 1.0, standardised signals) over several sets of signals, fitted on one half
of both dev sets (even- or odd-numbered questions), its decision threshold chosen there as the
one whose worst of the four rates is best, measured on the other half: held-out worst rates, and
the coefficients of the fit on the even half.

    python -m benchmarks.gate_signals --embedding-cache emb.sqlite --work DIR
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from benchmarks._common import machine_info, write_result
from benchmarks.abstention import auc, dev_index, dev_set_parser, on_dev_sets
from chatbot.eval import EvalQuestion, Unindexed, Without
from chatbot.gate import COVERAGE_HITS, assess, question_coverage, word_weights
from index.bm25 import K1
from index.search import PubMedIndex

TOP = 200  # abstracts whose scores make the z-scores
SIGNAL_SETS = {
    "similarity + coverage (uniform)": ("similarity", "coverage_uniform"),
    "similarity + coverage (IDF, shipped signals)": ("similarity", "coverage"),
    "+ BM25 of the hits": ("similarity", "coverage", "bm25_hits"),
    "+ cosine margin": ("similarity", "coverage", "cos_margin5"),
    "+ BM25 of the hits + cosine margin": ("similarity", "coverage", "bm25_hits", "cos_margin5"),
    "all": (
        "similarity",
        "coverage",
        "coverage_uniform",
        "coverage_top1",
        "bm25_hits",
        "bm25_best",
        "bm25_z",
        "cos_margin1",
        "cos_margin5",
        "cos_z",
        "agree",
    ),
}


def signals(index: PubMedIndex, question: EvalQuestion, all_vectors: np.ndarray, hide: bool) -> dict[str, float]:
    """The signals of one search: ``hide`` searches without the question's own abstracts."""
    text, bm25 = question.question, index.bm25
    source = Unindexed(index, question.gold) if hide else index
    hits = index.search(text, k=5, filters=Without(question.gold) if hide else None)
    gate = assess(text, hits, index=source)
    weights = word_weights(text, source)
    cosines = all_vectors @ index.query_encoder.encode([text])[0]
    lexical = bm25.scores(text).astype(np.float64)
    if hide:
        hidden = bm25.rows(np.asarray([int(p) for p in question.gold], dtype=np.int64))
        cosines[hidden], lexical[hidden] = -1.0, 0.0
    most = (K1 + 1) * sum(weights.values()) or 1.0
    hit_rows = bm25.rows(np.asarray([int(h.pmid) for h in hits], dtype=np.int64))
    top_cos, top_bm25 = np.sort(cosines)[::-1][:TOP], np.sort(lexical)[::-1][:TOP]
    return {
        "similarity": gate.similarity,
        "coverage": gate.coverage,
        "coverage_uniform": assess(text, hits).coverage,
        "coverage_top1": question_coverage(text, hits[:1], weights=weights) if hits else 0.0,
        "bm25_hits": float(lexical[hit_rows].max()) / most if len(hit_rows) else 0.0,
        "bm25_best": float(top_bm25[0]) / most,
        "bm25_z": float((top_bm25[0] - top_bm25.mean()) / (top_bm25.std() + 1e-9)),
        "cos_margin1": float(top_cos[0] - top_cos[1]),
        "cos_margin5": float(top_cos[0] - top_cos[1:6].mean()),
        "cos_z": float((top_cos[0] - top_cos.mean()) / (top_cos.std() + 1e-9)),
        "agree": float(np.argmax(cosines) == np.argmax(lexical)),
    }


def measure(name: str, args: argparse.Namespace, encoder, work: Path) -> list[tuple[dict, dict]]:
    questions, index = dev_index(name, args.distractors, encoder, work)
    all_vectors = index.vectors.vectors(index.bm25.pmids)  # rows in the BM25 index's (PMID) order
    return [
        (signals(index, q, all_vectors, hide=False), signals(index, q, all_vectors, hide=True))
        for q in questions[: args.limit]
    ]


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1.0, steps: int = 50) -> np.ndarray:
    """Weights (intercept first) of an L2-regularised logistic regression, by Newton's method."""
    design = np.hstack([np.ones((len(x), 1)), x])
    w = np.zeros(design.shape[1])
    penalty = np.diag([0.0] + [l2] * x.shape[1])
    for _ in range(steps):
        p = 1 / (1 + np.exp(-design @ w))
        gradient = design.T @ (p - y) + penalty @ w
        hessian = design.T @ (design * (p * (1 - p))[:, None]) + penalty
        w -= np.linalg.solve(hessian, gradient)
    return w


def _rows(by_set: dict[str, list], keys: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x, y, names = [], [], []
    for name, pairs in by_set.items():
        for answerable, unanswerable in pairs:
            x += [[answerable[k] for k in keys], [unanswerable[k] for k in keys]]
            y += [1, 0]
            names += [name, name]
    return np.asarray(x), np.asarray(y, dtype=float), np.asarray(names)


def _worst(score: np.ndarray, y: np.ndarray, names: np.ndarray, threshold: float) -> float:
    rates = []
    for name in dict.fromkeys(names):
        mine = names == name
        rates += [np.mean(score[mine & (y == 1)] >= threshold), np.mean(score[mine & (y == 0)] < threshold)]
    return float(min(rates))


def held_out(by_set: dict[str, list], keys: Sequence[str]) -> dict[str, object]:
    """Fit on each half, choose the threshold there, measure on the other half."""
    result: dict[str, object] = {"signals": list(keys)}
    for half in (0, 1):
        fit = {name: pairs[half::2] for name, pairs in by_set.items()}
        test = {name: pairs[1 - half :: 2] for name, pairs in by_set.items()}
        x, y, names = _rows(fit, keys)
        mean, std = x.mean(axis=0), x.std(axis=0) + 1e-9
        w = fit_logistic((x - mean) / std, y)
        score = w[0] + ((x - mean) / std) @ w[1:]
        threshold = max(np.quantile(score, np.linspace(0.2, 0.8, 601)), key=lambda t: _worst(score, y, names, t))
        xt, yt, names_t = _rows(test, keys)
        held = w[0] + ((xt - mean) / std) @ w[1:]
        side = "even" if half == 0 else "odd"
        result[f"fitted_on_{side}"] = {
            "worst_fitted": _worst(score, y, names, threshold),
            "worst_held_out": _worst(held, yt, names_t, threshold),
        }
        if half == 0:
            result["coefficients_even_half"] = {  # on standardised signals
                "intercept": float(w[0]),
                **{k: float(c) for k, c in zip(keys, w[1:], strict=True)},
            }
    return result


def run(args: argparse.Namespace) -> dict[str, object]:
    by_set = on_dev_sets(args, measure)
    keys = SIGNAL_SETS["all"]
    aucs = {
        name: {k: auc([a[k] for a, _ in pairs], [u[k] for _, u in pairs]) for k in keys}
        for name, pairs in by_set.items()
    }
    return {
        "benchmark": "gate_signals",
        "coverage_hits": COVERAGE_HITS,
        "auc": aucs,
        "logistic_regression": {label: held_out(by_set, ks) for label, ks in SIGNAL_SETS.items()},
        "machine": machine_info(),
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = dev_set_parser(__doc__.split("\n\n")[0], work="the indexes of benchmarks/abstention.py (reused)")
    parser.add_argument("--limit", type=int, default=None, help="only the first Q questions of each set")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    result = run(args)
    path = write_result(args.out, "gate_signals", result)
    for name, aucs in result["auc"].items():
        print(name, " ".join(f"{k} {v:.3f}" for k, v in aucs.items()))
    for label, fit in result["logistic_regression"].items():
        even, odd = fit["fitted_on_even"], fit["fitted_on_odd"]
        print(f"{label}: held-out worst {even['worst_held_out']:.3f} / {odd['worst_held_out']:.3f}")
    print(f"Result: {path}")


if __name__ == "__main__":
    main()
