"""Calibrate and measure the evidence gate (``chatbot/gate.py``) on both dev sets.

Each dev question is searched twice through ``PubMedIndex.search`` (top ``--top-k``, the chatbot's
default 5; first stage only, ``--rerank`` off, since the gate's similarity is the best cosine of the
top 5 and query-likelihood reranking only reorders those 5): once in the index as built
(answerable: its own abstracts are present) and once with its own abstracts filtered out of the
search (unanswerable: ``chatbot.eval.Without``, the index as if they had never been ingested). The
corpora are ``benchmarks/retrieval.py``'s (dev documents + the first 5,000 abstracts of
``pubmed21n1298.xml.gz``), embedded once with ``--embedding-cache``.

Reported per dataset: the rates of the shipped gate (abstain on unanswerable, answer on
answerable; target both >= 0.9), those of the old rule (answer when any hit reaches ``min_score``
0.35), the ROC AUC of each signal, and a sweep of ``COVERAGE_WEIGHT`` x ``GATE_THRESHOLD``: the
shipped constants are the sweep's choice, the setting whose worst rate over both datasets is best.

    python -m benchmarks.abstention --embedding-cache emb.sqlite
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path

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
from chatbot.eval import EvalQuestion, abstention_metrics, gate_pairs
from chatbot.gate import COVERAGE_WEIGHT, GATE_THRESHOLD, Sufficiency
from config import Config
from index.search import PubMedIndex

OLD_MIN_SCORE = 0.35  # the rule before the gate: answer when any hit reaches this cosine
WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0)
THRESHOLDS = tuple(round(t, 3) for t in np.arange(0.40, 1.40, 0.01))


def questions_and_corpus(name: str, distractors: int) -> tuple[list[EvalQuestion], list]:
    questions, docs = (load_bioasq if name == "bioasq" else load_pubmedqa)(None)
    extra, _ = load_distractors(DISTRACTOR_FILE, distractors, {d.pmid for d in docs})
    return [EvalQuestion(q.text, q.gold) for q in questions], docs + extra


def measure(name: str, args: argparse.Namespace, encoder, work: Path) -> list[tuple[Sufficiency, Sufficiency]]:
    questions, articles = questions_and_corpus(name, args.distractors)
    index_dir = work / f"{name}-index"
    if not (index_dir / "CURRENT").exists():
        write_corpus(articles, work / f"{name}.jsonl")
        build_index(work / f"{name}.jsonl", index_dir, encoder)
    index = PubMedIndex(index_dir, encoder=encoder)
    return gate_pairs(questions[: args.limit], index, k=args.top_k)


def rates(pairs: Sequence[tuple[Sufficiency, Sufficiency]], weight: float, threshold: float) -> tuple[float, float]:
    """(answer on answerable, abstain on unanswerable) of the gate with these constants."""
    answered = np.mean([a.similarity + weight * a.coverage >= threshold for a, _ in pairs])
    abstained = np.mean([u.similarity + weight * u.coverage < threshold for _, u in pairs])
    return float(answered), float(abstained)


def auc(positive: Sequence[float], negative: Sequence[float]) -> float:
    """P(a random answerable question scores above a random unanswerable one), ties counting half."""
    pos, neg = np.asarray(positive)[:, None], np.asarray(negative)[None, :]
    return float(((pos > neg).sum() + 0.5 * (pos == neg).sum()) / (pos.size * neg.size))


def sweep(by_set: dict[str, list[tuple[Sufficiency, Sufficiency]]]) -> list[dict[str, object]]:
    """Every (weight, threshold) with its four rates, best worst-rate first."""
    rows = []
    for weight in WEIGHTS:
        for threshold in THRESHOLDS:
            four = {name: rates(pairs, weight, threshold) for name, pairs in by_set.items()}
            worst = min(r for pair in four.values() for r in pair)
            rows.append({"weight": weight, "threshold": threshold, "worst": worst, "rates": four})
    return sorted(rows, key=lambda r: -r["worst"])


def signal_aucs(pairs: Sequence[tuple[Sufficiency, Sufficiency]]) -> dict[str, float]:
    return {
        "similarity": auc([a.similarity for a, _ in pairs], [u.similarity for _, u in pairs]),
        "coverage": auc([a.coverage for a, _ in pairs], [u.coverage for _, u in pairs]),
        "evidence": auc([a.evidence for a, _ in pairs], [u.evidence for _, u in pairs]),
    }


def run(args: argparse.Namespace) -> dict[str, object]:
    encoder = minilm(Config(), args.embedding_cache)
    with tempfile.TemporaryDirectory(prefix="bench-abstention-") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        by_set = {name: measure(name, args, encoder, work) for name in ("pubmedqa", "bioasq")}
    best = sweep(by_set)
    result: dict[str, object] = {"benchmark": "abstention", "top_k": args.top_k, "datasets": {}}
    for name, pairs in by_set.items():
        old_answer = np.mean([a.similarity >= OLD_MIN_SCORE for a, _ in pairs])
        old_abstain = np.mean([u.similarity < OLD_MIN_SCORE for _, u in pairs])
        result["datasets"][name] = {
            "shipped_gate": abstention_metrics(pairs),
            "old_min_score_0.35": {"answer_on_answerable": old_answer, "abstain_on_unanswerable": old_abstain},
            "auc": signal_aucs(pairs),
            "median_similarity": {
                "answerable": float(np.median([a.similarity for a, _ in pairs])),
                "unanswerable": float(np.median([u.similarity for _, u in pairs])),
            },
            "median_coverage": {
                "answerable": float(np.median([a.coverage for a, _ in pairs])),
                "unanswerable": float(np.median([u.coverage for _, u in pairs])),
            },
        }
    result["shipped"] = {"coverage_weight": COVERAGE_WEIGHT, "threshold": GATE_THRESHOLD}
    result["sweep_best"] = best[:10]
    result["best_by_weight"] = [next(r for r in best if r["weight"] == w) for w in WEIGHTS]
    result["machine"] = machine_info()
    return result


def table(result: dict[str, object]) -> str:
    rows = []
    for name, d in result["datasets"].items():
        gate, old, aucs = d["shipped_gate"], d["old_min_score_0.35"], d["auc"]
        rows.append(
            [
                name,
                f"{gate['abstain_on_unanswerable']:.3f}",
                f"{gate['answer_on_answerable']:.3f}",
                f"{old['abstain_on_unanswerable']:.3f}",
                f"{old['answer_on_answerable']:.3f}",
                f"{aucs['similarity']:.3f} / {aucs['coverage']:.3f} / {aucs['evidence']:.3f}",
            ]
        )
    header = [
        "dev set",
        "gate: abstain on unanswerable",
        "gate: answer on answerable",
        "min_score 0.35: abstain",
        "min_score 0.35: answer",
        "AUC similarity / coverage / evidence",
    ]
    return markdown_table(header, rows)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--distractors", type=int, default=5000, help="distractor abstracts (default: 5000)")
    parser.add_argument("--limit", type=int, default=None, help="only the first Q questions of each set")
    parser.add_argument("--top-k", type=int, default=Config().top_k, help="hits the gate sees (default: top_k)")
    parser.add_argument("--embedding-cache", type=Path, default=None, help="SQLite vectors by text hash")
    parser.add_argument("--work", type=Path, default=None, help="keep the two indexes here (reused when present)")
    parser.add_argument("--out", type=Path, default=None, help="JSON result file (default: benchmarks/results/...)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    result = run(args)
    path = write_result(args.out, "abstention", result)
    print(table(result))
    print("\nBest settings (weight, threshold, worst of the four rates):")
    for row in result["best_by_weight"]:
        print(f"  weight {row['weight']}: threshold {row['threshold']}, worst {row['worst']:.3f} {row['rates']}")
    print(f"\nMachine: {machine_line(result['machine'])}\nResult: {path}")


if __name__ == "__main__":
    main()
