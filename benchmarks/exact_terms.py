"""Exact terms (``index/exact.py``) on the dev sets: how often they fire and what they do to R@1/MRR.

``hybrid`` (first stage, no reranking) on ``benchmarks/retrieval.py``'s corpora, three ways in one
run: without exact terms, with the abstracts holding a rare identifier moved to the very top
(``PINNED_AFTER`` 0), and moved to just after the fused first hit (``PINNED_AFTER`` 1, shipped).
Also counts the questions with a rare identifier and those whose gold abstract holds it.

    python -m benchmarks.exact_terms --embedding-cache emb.sqlite --work DIR
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
from benchmarks.abstention import dev_index, dev_set_parser
from benchmarks.retrieval import Question, metrics
from config import Config
from index import exact as exact_module
from index import hybrid
from index.search import PubMedIndex

K = 10


def settings(index: PubMedIndex, questions: Sequence[Question]) -> dict[str, dict[str, float]]:
    rows = {}
    original = exact_module.rare_identifier_rows
    for name, after, on in (("off", 1, False), ("first", 0, True), ("after the first hit (shipped)", 1, True)):
        hybrid.PINNED_AFTER = after
        exact_module.rare_identifier_rows = original if on else (lambda *a, **k: np.zeros(0, dtype=np.int64))
        try:
            ranked = [[h.pmid for h in index.search(q.text, k=K, rerank=False)] for q in questions]
        finally:
            exact_module.rare_identifier_rows = original
            hybrid.PINNED_AFTER = 1
        rows[name] = metrics(ranked, questions)
    return rows


def fired(index: PubMedIndex, questions: Sequence[Question]) -> dict[str, int]:
    with_rows = [(q, exact_module.rare_identifier_rows(index.bm25, q.text)) for q in questions]
    hits = [(q, set(index.bm25.pmids[rows].astype(str).tolist())) for q, rows in with_rows if len(rows)]
    return {"questions_with_rare_identifier": len(hits), "gold_holds_it": sum(bool(p & q.gold) for q, p in hits)}


def run(args: argparse.Namespace) -> dict[str, object]:
    encoder = minilm(Config(), args.embedding_cache)
    out: dict[str, object] = {"benchmark": "exact_terms", "datasets": {}}
    with tempfile.TemporaryDirectory(prefix="bench-exact-") as tmp:
        work = args.work or Path(tmp)
        for name in ("pubmedqa", "bioasq"):
            evals, index = dev_index(name, args.distractors, encoder, work)
            questions = [Question(q.question, q.gold) for q in evals]
            out["datasets"][name] = {**fired(index, questions), "hybrid": settings(index, questions)}
    out["machine"] = machine_info()
    return out


def main(argv: Sequence[str] | None = None) -> None:
    parser = dev_set_parser(__doc__.split("\n\n")[0], work="the indexes of benchmarks/abstention.py (reused)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    result = run(args)
    path = write_result(args.out, "exact_terms", result)
    rows = []
    for name, d in result["datasets"].items():
        for setting, m in d["hybrid"].items():
            rows.append([name, setting, *(f"{v:.3f}" for v in m.values())])
        print(
            f"{name}: {d['questions_with_rare_identifier']} questions with a rare identifier, gold holds it in "
            f"{d['gold_holds_it']}"
        )
    print(markdown_table(["dev set", "exact terms", *next(iter(result["datasets"].values()))["hybrid"]["off"]], rows))
    print(f"Machine: {machine_line(result['machine'])}\nResult: {path}")


if __name__ == "__main__":
    main()
