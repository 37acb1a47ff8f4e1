"""Query-likelihood reranking within a time budget: read only the candidates that can still win.

The ``ql`` reranker adds ``QL_WEIGHT`` x the LM's mean log-probability of the question to each of
the top 5's first-stage z-score. A candidate whose first-stage score trails the best by
``QL_WEIGHT * reach`` or more can only overtake it if its question likelihood beats the best's by
more than ``reach`` nats per token, so it need not be read; when no candidate is that close the
first stage is confident and no LM runs at all (``index.rerank.contenders``). This script measures,
on both dev sets in one run, what each ``reach`` costs in quality (R@1, MRR@10 against reading all
five, today's path) and in LM work (abstracts read per question, share of questions reranked),
then turns the work into seconds with the reranker's own time for 0-5 abstracts on the demo index.

Each (question, abstract) pair is scored once and shared by every ``reach`` (the scores do not
depend on it), so the whole sweep costs one full reranking of each dev set (~15 CPU-minutes).
The timing part runs the real reranker on demo questions; run it with nothing else on the cores.

    python -m benchmarks.rerank_budget --embedding-cache FILE            # both dev sets + timing
    python -m benchmarks.rerank_budget --parts timing                   # the seconds only
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from benchmarks._cached_encoder import minilm
from benchmarks._common import machine_info, machine_line, markdown_table, write_result
from benchmarks.retrieval import (
    DISTRACTOR_FILE,
    Question,
    build_index,
    load_bioasq,
    load_distractors,
    load_pubmedqa,
    metrics,
    rankings,
    write_corpus,
)
from config import Config
from index.rerank import QL_REACH, QL_WEIGHT, QueryLikelihoodReranker, load_reranker
from index.search import PubMedIndex
from ingest.records import Article

REACHES = (float("inf"), 3.0, 2.0, 1.5, 1.25, 1.0, 0.75, 0.5, 0.25, 0.0)
DEMO_QUESTIONS = (
    "Does intravenous paracetamol reduce morphine consumption after surgery?",
    "Is vitamin D supplementation associated with fewer fractures in older adults?",
    "Does aspirin prevent colorectal cancer?",
    "What are the side effects of metformin?",
    "Is smoking associated with periodontitis?",
)


class CountingScores:
    """Memoised ``scores`` that also counts the abstracts each question asked the LM to read."""

    def __init__(self, reranker: QueryLikelihoodReranker) -> None:
        self.score = reranker.scores
        self.memo: dict[tuple[str, str], float] = {}
        self.read: list[int] = []

    def __call__(self, query: str, articles: Sequence[Article]) -> np.ndarray:
        missing = [a for a in articles if (query, a.pmid) not in self.memo]
        if missing:
            values = self.score(query, missing)
            self.memo.update({(query, a.pmid): float(v) for a, v in zip(missing, values, strict=True)})
        self.read.append(len(articles))
        return np.array([self.memo[(query, a.pmid)] for a in articles])


def sweep(dataset: str, args: argparse.Namespace, reranker: QueryLikelihoodReranker) -> dict[str, object]:
    """R@1/MRR and abstracts read per question at each reach, on one dev set."""
    questions, docs = (load_bioasq if dataset == "bioasq" else load_pubmedqa)(args.limit)
    distractors, _ = load_distractors(DISTRACTOR_FILE, args.distractors, {d.pmid for d in docs})
    counter = CountingScores(reranker)
    reranker.scores = counter  # type: ignore[method-assign]  # rerank() calls self.scores
    rows: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-rerank-budget-") as tmp:
        corpus, index_dir = Path(tmp) / "corpus.jsonl", Path(tmp) / "index"
        write_corpus(docs + distractors, corpus)
        encoder = minilm(Config(), args.embedding_cache)
        build_index(corpus, index_dir, encoder)
        index = PubMedIndex(index_dir, encoder=encoder)
        first_stage = metrics(rankings(index, "hybrid", questions), questions)
        rows["first stage only"] = first_stage | _work([0] * len(questions))
        index.reranker = reranker
        for reach in REACHES:
            reranker.reach, counter.read = reach, []
            found = _per_question(index, questions, counter)
            rows[_label(reach)] = metrics(found[0], questions) | _work(found[1])
        lead = [_lead(index, q.text, counter) for q in questions]  # every pair is memoised by now
    reranker.scores = counter.score  # type: ignore[method-assign]
    return {
        "questions": len(questions),
        "corpus": len(docs) + len(distractors),
        "rows": rows,
        "ql_lead_over_first": _percentiles(lead),
    }


def _lead(index: PubMedIndex, query: str, counter: CountingScores) -> float:
    """How far the best question likelihood among the first stage's top 5 exceeds its first hit's
    (nats per token): the reach a candidate needs to overtake the first hit."""
    hits = index.search(query, k=5, rerank=False)
    values = [counter.memo[(query, h.pmid)] for h in hits if (query, h.pmid) in counter.memo]
    return max(values) - values[0] if values else 0.0


def _percentiles(values: Sequence[float]) -> dict[str, float]:
    q = np.percentile(values, [50, 90, 99, 100]) if values else [0.0] * 4
    return {"median": float(q[0]), "p90": float(q[1]), "p99": float(q[2]), "max": float(q[3])}


def _per_question(
    index: PubMedIndex, questions: Sequence[Question], counter: CountingScores
) -> tuple[list[list[str]], list[int]]:
    """Each question's ranking and the abstracts its reranking read (0 when it did not run)."""
    found, read = [], []
    for question in questions:
        counter.read = []
        found.extend(rankings(index, "hybrid", [question]))
        read.append(sum(counter.read))
    return found, read


def _work(read: Sequence[int]) -> dict[str, float]:
    return {
        "read_per_question": statistics.fmean(read),
        "reranked_share": sum(1 for n in read if n) / len(read),
        "read_histogram": {str(n): read.count(n) for n in range(6)},
    }


def _label(reach: float) -> str:
    return "read all 5 (today)" if reach == float("inf") else f"reach {reach:g}"


def timing(reranker: QueryLikelihoodReranker, repeats: int) -> dict[str, float]:
    """Seconds of the LM reading n of a demo question's top abstracts, n = 1..5 (median of repeats)."""
    from app import ensure_index
    from index.search import open_index

    with tempfile.TemporaryDirectory(prefix="bench-rerank-demo-") as tmp:
        config = Config(index_dir=Path(tmp) / "index", rerank="off")
        ensure_index(config)  # the app's own first start: the demo corpus with its shipped vectors
        index = open_index(config)
        hits = {q: [h.article for h in index.search(q, k=5, rerank=False)] for q in DEMO_QUESTIONS}
    reranker.scores(DEMO_QUESTIONS[0], hits[DEMO_QUESTIONS[0]][:2])  # warm-up: first call pays for lazy setup
    seconds = {"0": 0.0}
    for n in range(1, 6):
        runs = []
        for _ in range(repeats):
            for question, articles in hits.items():
                start = time.perf_counter()
                reranker.scores(question, articles[:n])
                runs.append(time.perf_counter() - start)
        seconds[str(n)] = statistics.median(runs)
    return seconds


def expected_seconds(histogram: dict[str, int], seconds: dict[str, float]) -> float:
    total = sum(histogram.values())
    return sum(count * seconds[n] for n, count in histogram.items()) / total if total else 0.0


def table(result: dict[str, object]) -> str:
    sets = result["sets"]
    assert isinstance(sets, dict)
    seconds = result.get("seconds_by_abstracts_read")
    header = ["reranking", *(f"{d} R@1 / MRR@10" for d in sets), *(f"{d} read / reranked" for d in sets)]
    if isinstance(seconds, dict):
        header += [f"{d} s/question" for d in sets]
    names = list(next(iter(sets.values()))["rows"])
    rows = []
    for name in names:
        cells = [name]
        for d in sets:
            r = sets[d]["rows"][name]
            cells.append(f"{r['R@1']:.3f} / {r['MRR@10']:.3f}")
        for d in sets:
            r = sets[d]["rows"][name]
            cells.append(f"{r['read_per_question']:.2f} / {r['reranked_share']:.2f}")
        if isinstance(seconds, dict):
            cells += [f"{expected_seconds(sets[d]['rows'][name]['read_histogram'], seconds):.2f}" for d in sets]
        rows.append(cells)
    return markdown_table(header, rows)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts", default="quality,timing", help="quality, timing or both (default: both)")
    parser.add_argument("--sets", default="pubmedqa,bioasq", help="dev sets for the quality part")
    parser.add_argument("--distractors", type=int, default=5000, help="distractor abstracts (default: 5000)")
    parser.add_argument("--limit", type=int, default=None, help="ask only the first Q questions of each set")
    parser.add_argument("--embedding-cache", type=Path, default=None, help="SQLite vector cache (as retrieval.py)")
    parser.add_argument("--repeats", type=int, default=3, help="timing: runs per (question, n) (default: 3)")
    parser.add_argument("--from-json", type=Path, default=None, help="reuse the quality part of an earlier result")
    parser.add_argument("--out", type=Path, default=None, help="JSON result file (default: benchmarks/results/...)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    reranker = load_reranker("ql")
    if not isinstance(reranker, QueryLikelihoodReranker):
        raise SystemExit("the ql reranker (packaged SmolLM2) is not available here")
    parts = set(args.parts.split(","))
    result: dict[str, object] = json.loads(args.from_json.read_text()) if args.from_json else {}
    result |= {"benchmark": "rerank_budget", "weight": QL_WEIGHT, "shipped_reach": QL_REACH}
    if "quality" in parts:
        result["sets"] = {d: sweep(d, args, reranker) for d in args.sets.split(",")}
    if "timing" in parts:
        result["seconds_by_abstracts_read"] = timing(reranker, args.repeats)
    result["machine"] = machine_info()
    path = write_result(args.out, "rerank_budget", result)
    if "sets" in result:
        print(table(result))
    if "seconds_by_abstracts_read" in result:
        print("seconds by abstracts read:", result["seconds_by_abstracts_read"])
    print(f"Machine: {machine_line(result['machine'])}\nResult: {path}")


if __name__ == "__main__":
    main()
