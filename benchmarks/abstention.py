"""Calibrate and measure the evidence gate (``chatbot/gate.py``) on both dev sets.

Each dev question is searched twice through ``PubMedIndex.search`` (top ``--top-k``, the chatbot's
default 5; first stage only, ``--rerank`` off, since the gate's similarity is the best cosine of the
top 5 and query-likelihood reranking only reorders those 5): once in the index as built
(answerable: its own abstracts are present) and once with its own abstracts filtered out of the
search (unanswerable: ``chatbot.eval.Without``, the index as if they had never been ingested). The
corpora are ``benchmarks/retrieval.py``'s (dev documents + the first 5,000 abstracts of
``pubmed21n1298.xml.gz``), embedded once with ``--embedding-cache``.

Reported per dataset: the rates of the shipped gate (abstain on unanswerable, answer on
answerable; target both >= 0.9), those of the previous gate (every question word weighing the same,
weight 0.25, threshold 0.78) and of the old rule (answer when any hit reaches ``min_score`` 0.35),
the ROC AUC of each signal, and, for both coverages (IDF-weighted, as shipped, and uniform), a
sweep of ``COVERAGE_WEIGHT`` x ``GATE_THRESHOLD`` (the shipped constants are the sweep's choice,
the setting whose worst rate over both datasets is best) and a split-half check: constants chosen
on the even-numbered questions of both sets, measured on the odd ones, and the other way round.
In the unanswerable search the gate's word weights come from the index's BM25 as if the
question's own abstracts had never been ingested (``chatbot.eval.Unindexed``).

    python -m benchmarks.abstention --embedding-cache emb.sqlite
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import numpy as np

from benchmarks._cached_encoder import minilm
from benchmarks._common import machine_info, machine_line, markdown_table, write_result
from benchmarks.retrieval import (
    DISTRACTOR_FILE,
    build_index,
    load_bioasq,
    load_distractors,
    load_pubmedqa,
    write_corpus,
)
from chatbot.eval import EvalQuestion, Unindexed, Without, abstention_metrics
from chatbot.gate import COVERAGE_WEIGHT, GATE_THRESHOLD, Sufficiency, assess
from config import Config
from index.encoder import Encoder
from index.search import PubMedIndex

OLD_MIN_SCORE = 0.35  # the rule before the gate: answer when any hit reaches this cosine
PREVIOUS_GATE = (0.25, 0.78)  # the first gate (weight, threshold), with every word weighing the same
WEIGHTS = tuple(round(w, 2) for w in np.arange(0.0, 1.001, 0.05))
THRESHOLDS = tuple(round(t, 3) for t in np.arange(0.40, 1.60, 0.005))
COVERAGES = ("idf", "uniform")  # the shipped IDF-weighted word coverage, and every word weighing 1

Pairs = list[tuple[Sufficiency, Sufficiency]]
T = TypeVar("T")


def questions_and_corpus(name: str, distractors: int) -> tuple[list[EvalQuestion], list]:
    questions, docs = (load_bioasq if name == "bioasq" else load_pubmedqa)(None)
    extra, _ = load_distractors(DISTRACTOR_FILE, distractors, {d.pmid for d in docs})
    return [EvalQuestion(q.text, q.gold) for q in questions], docs + extra


def dev_index(name: str, distractors: int, encoder, work: Path) -> tuple[list[EvalQuestion], PubMedIndex]:
    """A dev set's questions and its index in ``work`` (built there once, reused by every #16 benchmark)."""
    questions, articles = questions_and_corpus(name, distractors)
    index_dir = work / f"{name}-index"
    if not (index_dir / "CURRENT").exists():
        write_corpus(articles, work / f"{name}.jsonl")
        build_index(work / f"{name}.jsonl", index_dir, encoder)
    return questions, PubMedIndex(index_dir, encoder=encoder)


def on_dev_sets(
    args: argparse.Namespace, measure: Callable[[str, argparse.Namespace, Encoder, Path], T]
) -> dict[str, T]:
    """``measure`` on each dev set, with the packaged MiniLM and the indexes in ``--work`` (else a temporary folder)."""
    encoder = minilm(Config(), args.embedding_cache)
    with tempfile.TemporaryDirectory(prefix="bench-dev-sets-") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        return {name: measure(name, args, encoder, work) for name in ("pubmedqa", "bioasq")}


def dev_set_parser(description: str, *, work: str) -> argparse.ArgumentParser:
    """The options every dev-set benchmark of issue #16 shares; ``work`` says what --work keeps."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--distractors", type=int, default=5000, help="distractor abstracts (default: 5000)")
    parser.add_argument("--embedding-cache", type=Path, default=None, help="SQLite vectors by text hash")
    parser.add_argument("--work", type=Path, default=None, help=work)
    parser.add_argument("--out", type=Path, default=None, help="JSON result file (default: benchmarks/results/...)")
    return parser


def measure(name: str, args: argparse.Namespace, encoder, work: Path) -> dict[str, Pairs]:
    """(answerable, unanswerable) decisions per question, with each coverage."""
    questions, index = dev_index(name, args.distractors, encoder, work)
    by_coverage: dict[str, Pairs] = {"idf": [], "uniform": []}
    for question in questions[: args.limit]:
        text = question.question
        present = index.search(text, k=args.top_k)
        absent = index.search(text, k=args.top_k, filters=Without(question.gold))
        unindexed = Unindexed(index, question.gold)  # its words' weights as if never ingested
        by_coverage["idf"].append((assess(text, present, index=index), assess(text, absent, index=unindexed)))
        by_coverage["uniform"].append((assess(text, present), assess(text, absent)))
    return by_coverage


def rates(pairs: Sequence[tuple[Sufficiency, Sufficiency]], weight: float, threshold: float) -> tuple[float, float]:
    """(answer on answerable, abstain on unanswerable) of the gate with these constants."""
    answered = np.mean([a.similarity + weight * a.coverage >= threshold for a, _ in pairs])
    abstained = np.mean([u.similarity + weight * u.coverage < threshold for _, u in pairs])
    return float(answered), float(abstained)


def auc(positive: Sequence[float], negative: Sequence[float]) -> float:
    """P(a random answerable question scores above a random unanswerable one), ties counting half."""
    pos, neg = np.asarray(positive)[:, None], np.asarray(negative)[None, :]
    return float(((pos > neg).sum() + 0.5 * (pos == neg).sum()) / (pos.size * neg.size))


def _grid(pairs: Pairs) -> tuple[np.ndarray, np.ndarray]:
    """Answer-on-answerable and abstain-on-unanswerable rates, shape (weights, thresholds)."""
    w, t = np.asarray(WEIGHTS)[:, None, None], np.asarray(THRESHOLDS)[None, :, None]
    sim_a, cov_a = (np.asarray([[a.similarity, a.coverage] for a, _ in pairs]).T)[:, None, None, :]
    sim_u, cov_u = (np.asarray([[u.similarity, u.coverage] for _, u in pairs]).T)[:, None, None, :]
    return (sim_a + w * cov_a >= t).mean(axis=2), (sim_u + w * cov_u < t).mean(axis=2)


def sweep(by_set: dict[str, Pairs]) -> list[dict[str, object]]:
    """Every (weight, threshold) with its four rates, best worst-rate first (ties: lower weight, threshold)."""
    grids = {name: _grid(pairs) for name, pairs in by_set.items()}
    worst = np.min([g for pair in grids.values() for g in pair], axis=0)
    order = np.argsort(-worst, axis=None, kind="stable")
    rows = []
    for flat in order:
        i, j = np.unravel_index(flat, worst.shape)
        four = {name: (float(g[0][i, j]), float(g[1][i, j])) for name, g in grids.items()}
        rows.append({"weight": WEIGHTS[i], "threshold": THRESHOLDS[j], "worst": float(worst[i, j]), "rates": four})
    return rows


def held_out(by_set: dict[str, Pairs]) -> list[dict[str, object]]:
    """Chosen on one half of each dev set (even or odd question numbers), measured on the other."""
    runs = []
    for half in (0, 1):
        fit = {name: pairs[half::2] for name, pairs in by_set.items()}
        test = {name: pairs[1 - half :: 2] for name, pairs in by_set.items()}
        chosen = sweep(fit)[0]
        four = {name: rates(pairs, chosen["weight"], chosen["threshold"]) for name, pairs in test.items()}
        runs.append(
            {
                "fitted_on": "even" if half == 0 else "odd",
                "weight": chosen["weight"],
                "threshold": chosen["threshold"],
                "worst_fitted": chosen["worst"],
                "worst_held_out": min(r for pair in four.values() for r in pair),
                "held_out_rates": four,
            }
        )
    return runs


def signal_aucs(pairs: Sequence[tuple[Sufficiency, Sufficiency]]) -> dict[str, float]:
    return {
        "similarity": auc([a.similarity for a, _ in pairs], [u.similarity for _, u in pairs]),
        "coverage": auc([a.coverage for a, _ in pairs], [u.coverage for _, u in pairs]),
        "evidence": auc([a.evidence for a, _ in pairs], [u.evidence for _, u in pairs]),
    }


def _rates_dict(pairs: Pairs, weight: float, threshold: float) -> dict[str, float]:
    answer, abstain = rates(pairs, weight, threshold)
    return {"answer_on_answerable": answer, "abstain_on_unanswerable": abstain}


def run(args: argparse.Namespace) -> dict[str, object]:
    measured = on_dev_sets(args, measure)
    result: dict[str, object] = {"benchmark": "abstention", "top_k": args.top_k, "datasets": {}}
    for name, by_coverage in measured.items():
        pairs, uniform = by_coverage["idf"], by_coverage["uniform"]
        result["datasets"][name] = {
            "shipped_gate": abstention_metrics(pairs),
            "previous_gate_uniform_0.25_0.78": _rates_dict(uniform, *PREVIOUS_GATE),
            "old_min_score_0.35": {
                "answer_on_answerable": float(np.mean([a.similarity >= OLD_MIN_SCORE for a, _ in pairs])),
                "abstain_on_unanswerable": float(np.mean([u.similarity < OLD_MIN_SCORE for _, u in pairs])),
            },
            "auc": signal_aucs(pairs),
            "auc_uniform_coverage": signal_aucs(uniform)["coverage"],
            "median_similarity": {
                "answerable": float(np.median([a.similarity for a, _ in pairs])),
                "unanswerable": float(np.median([u.similarity for _, u in pairs])),
            },
            "median_coverage": {
                "answerable": float(np.median([a.coverage for a, _ in pairs])),
                "unanswerable": float(np.median([u.coverage for _, u in pairs])),
            },
        }
    result["shipped"] = {"coverage": "idf", "coverage_weight": COVERAGE_WEIGHT, "threshold": GATE_THRESHOLD}
    for coverage in COVERAGES:
        by_set = {name: by_coverage[coverage] for name, by_coverage in measured.items()}
        best = sweep(by_set)
        result[f"sweep_best_{coverage}"] = best[:10]
        result[f"best_by_weight_{coverage}"] = [next(r for r in best if r["weight"] == w) for w in WEIGHTS]
        result[f"held_out_{coverage}"] = held_out(by_set)
    result["machine"] = machine_info()
    return result


def table(result: dict[str, object]) -> str:
    rows = []
    for name, d in result["datasets"].items():
        gate, prev, old, aucs = (
            d["shipped_gate"],
            d["previous_gate_uniform_0.25_0.78"],
            d["old_min_score_0.35"],
            d["auc"],
        )
        rows.append(
            [
                name,
                f"{gate['abstain_on_unanswerable']:.3f}",
                f"{gate['answer_on_answerable']:.3f}",
                f"{prev['abstain_on_unanswerable']:.3f} / {prev['answer_on_answerable']:.3f}",
                f"{old['abstain_on_unanswerable']:.3f} / {old['answer_on_answerable']:.3f}",
                f"{aucs['similarity']:.3f} / {d['auc_uniform_coverage']:.3f} / {aucs['coverage']:.3f}",
            ]
        )
    header = [
        "dev set",
        "gate: abstain on unanswerable",
        "gate: answer on answerable",
        "previous gate (uniform words, 0.25 / 0.78): abstain / answer",
        "min_score 0.35: abstain / answer",
        "AUC similarity / coverage uniform / coverage IDF",
    ]
    return markdown_table(header, rows)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = dev_set_parser(__doc__.split("\n\n")[0], work="keep the two indexes here (reused when present)")
    parser.add_argument("--limit", type=int, default=None, help="only the first Q questions of each set")
    parser.add_argument("--top-k", type=int, default=Config().top_k, help="hits the gate sees (default: top_k)")
    return parser.parse_args(argv)


def _short(row: dict[str, object], key: str = "rates") -> str:
    return " ".join(f"{name} {a:.3f}/{u:.3f}" for name, (a, u) in row[key].items())


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    result = run(args)
    path = write_result(args.out, "abstention", result)
    print(table(result))
    for coverage in COVERAGES:
        print(f"\nBest settings, {coverage} coverage (weight, threshold, worst of the four rates):")
        for row in result[f"best_by_weight_{coverage}"]:
            print(f"  weight {row['weight']}: threshold {row['threshold']}, worst {row['worst']:.3f} {_short(row)}")
        for half in result[f"held_out_{coverage}"]:
            print(
                f"  chosen on the {half['fitted_on']} half: w {half['weight']} t {half['threshold']}, worst there "
                f"{half['worst_fitted']:.3f}, on the other half {half['worst_held_out']:.3f} "
                + _short(half, "held_out_rates")
            )
    print(f"\nMachine: {machine_line(result['machine'])}\nResult: {path}")


if __name__ == "__main__":
    main()
