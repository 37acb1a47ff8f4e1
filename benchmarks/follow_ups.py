"""Follow-up rewriting (``chatbot/rewrite.py``), measured: is the follow-up's gold abstract found?

``benchmarks/data/follow_ups.jsonl`` holds 28 two-turn conversations written by hand from PubMedQA
dev questions: a first question on the topic, then a follow-up that only makes sense after it
("And in the elderly?"); the gold abstract is the dev question's own (its ``pmid``). The first
turn's answer, which the rewriter also reads, is the extractive answer to it (what the app shows
with the offline model), or empty with ``--no-answers``. Each follow-up is searched (hybrid, top
10, first stage only) three ways:

- ``as asked``: the follow-up alone, no rewriting;
- ``fallback``: the deterministic rewrite (the previous question's content words, then the follow-up);
- ``model``: ``rewrite_query`` with the generator (the packaged SmolLM2 offline; asked although
  the chatbot no longer asks that tiny model, ``tiny_model=True``): the model's rewrite when it
  passes the checks, else the fallback; a follow-up that does not look like one is searched as
  asked.

The corpus is ``benchmarks/retrieval.py``'s PubMedQA corpus (dev abstracts + 5,000 distractors).

    python -m benchmarks.follow_ups --embedding-cache emb.sqlite [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path

from benchmarks._cached_encoder import minilm
from benchmarks._common import REPO_ROOT, machine_info, machine_line, markdown_table, write_result
from benchmarks.retrieval import (
    DISTRACTOR_FILE,
    Question,
    build_index,
    load_distractors,
    load_pubmedqa,
    metrics,
    write_corpus,
)
from chatbot.extractive import extractive_answer
from chatbot.rewrite import fallback_query, looks_like_follow_up, rewrite_query
from config import Config
from index.search import PubMedIndex

CONVERSATIONS = REPO_ROOT / "benchmarks" / "data" / "follow_ups.jsonl"
K = 10


def conversations(path: Path = CONVERSATIONS) -> list[dict]:
    with open(path, encoding="utf-8") as lines:
        return [json.loads(line) for line in lines if line.strip()]


def open_pubmedqa_index(work: Path, encoder, distractors: int) -> PubMedIndex:
    index_dir = work / "pubmedqa-index"
    if not (index_dir / "CURRENT").exists():
        _, docs = load_pubmedqa(None)
        extra, _ = load_distractors(DISTRACTOR_FILE, distractors, {d.pmid for d in docs})
        write_corpus(docs + extra, work / "pubmedqa.jsonl")
        build_index(work / "pubmedqa.jsonl", index_dir, encoder)
    return PubMedIndex(index_dir, encoder=encoder)


def first_answer(index: PubMedIndex, question: str, encoder) -> str:
    """What the app answers the first question with the offline model: the quoted evidence."""
    return extractive_answer(question, index.search(question, k=Config().top_k, rerank=False), encoder)


def run(args: argparse.Namespace) -> dict[str, object]:
    from chatbot.generate import open_generator

    encoder = minilm(Config(), args.embedding_cache)
    items = conversations()[: args.limit]
    generator = open_generator(Config())
    with tempfile.TemporaryDirectory(prefix="bench-follow-ups-") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        index = open_pubmedqa_index(work, encoder, args.distractors)
        queries: dict[str, list[str]] = {"as asked": [], "fallback": [], "model": []}
        for item in items:
            history = [(item["first"], first_answer(index, item["first"], encoder) if args.answers else "")]
            queries["as asked"].append(item["follow_up"])
            queries["fallback"].append(fallback_query(item["follow_up"], history))
            queries["model"].append(rewrite_query(item["follow_up"], history, generator, tiny_model=True))
        questions = [Question(item["follow_up"], frozenset({item["pmid"]})) for item in items]
        rankings = {
            name: [[h.pmid for h in index.search(q, k=K, rerank=False)] for q in qs] for name, qs in queries.items()
        }
    return {
        "benchmark": "follow_ups",
        "conversations": len(items),
        "detected_as_follow_ups": sum(looks_like_follow_up(i["follow_up"], [("x", "y")]) for i in items),
        "generator": generator.name,
        "first_answers_in_history": args.answers,
        "metrics": {name: metrics(ranked, questions) for name, ranked in rankings.items()},
        "queries": [{name: q[j] for name, q in queries.items()} for j in range(len(items))],
        "machine": machine_info(),
    }


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--distractors", type=int, default=5000, help="distractor abstracts (default: 5000)")
    parser.add_argument("--limit", type=int, default=None, help="only the first N conversations")
    parser.add_argument("--embedding-cache", type=Path, default=None, help="SQLite vectors by text hash")
    parser.add_argument("--work", type=Path, default=None, help="keep the index here (reused when present)")
    parser.add_argument("--out", type=Path, default=None, help="JSON result file (default: benchmarks/results/...)")
    parser.add_argument(
        "--no-answers",
        dest="answers",
        action="store_false",
        help="leave the first turn's answer empty (saves embedding its sources' sentences)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    result = run(args)
    path = write_result(args.out, "follow_ups", result)
    rows = [[name, *(f"{v:.3f}" for v in m.values())] for name, m in result["metrics"].items()]
    print(markdown_table(["follow-up searched", *next(iter(result["metrics"].values())).keys()], rows))
    print(f"\n{result['conversations']} conversations ({result['detected_as_follow_ups']} detected as follow-ups); ")
    print(f"rewriter: {result['generator']}\nMachine: {machine_line(result['machine'])}\nResult: {path}")


if __name__ == "__main__":
    main()
