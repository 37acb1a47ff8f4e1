"""Retrieval with long abstracts embedded as pooled token windows versus truncated to the first window.

``index/chunking.py`` embeds an abstract longer than the encoder's token limit as the mean of its
overlapping windows; before, the encoder truncated it to (about) the first window. This measures
what that changes for retrieval on PubMedQA dev (``../shared/eval/pubmedqa_dev.jsonl``): each of the
first ``--questions`` items' abstract (contexts + long answer, no title, the usual setting) among
the first ``--distractors`` abstracts of ``pubmed21n1298.xml.gz``, packaged all-MiniLM-L6-v2, exact
inner-product search. Every window is encoded once; the three document vectors compared are the
first window, the normalised mean of the windows, and (for reference) the best window per query.

    python -m benchmarks.window_pooling --questions 300 --distractors 700
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from benchmarks._common import SHARED, machine_info, markdown_table, timed, write_result
from index.chunking import LongTextEncoder, long_text_encoder, split_text
from index.encoder import MINILM_ID, load_encoder
from ingest.records import Article
from ingest.sources import read_source

QUESTIONS = SHARED / "eval" / "pubmedqa_dev.jsonl"
DISTRACTORS = SHARED / "data" / "pubmed" / "pubmed21n1298.xml.gz"


def corpus(questions: int, distractors: int) -> tuple[list[str], list[str]]:
    """(questions, documents); document i < len(questions) is question i's own abstract."""
    with open(QUESTIONS, encoding="utf-8") as lines:
        items = [json.loads(line) for line in lines if line.strip()][:questions]
    docs = [" ".join(item["contexts"]) + " " + item["long_answer"] for item in items]
    for event in read_source(Path(DISTRACTORS)):
        if len(docs) == len(items) + distractors:
            break
        if isinstance(event, Article) and event.sections:
            docs.append(event.text)
    return [item["question"] for item in items], docs


def windows_of(encoder: LongTextEncoder, docs: Sequence[str]) -> tuple[list[str], np.ndarray]:
    pieces, owners = [], []
    for row, (text, offsets) in enumerate(zip(docs, encoder._offsets(list(docs)), strict=True)):
        windows = split_text(text, offsets, encoder.max_tokens, encoder.overlap)
        pieces += windows
        owners += [row] * len(windows)
    return pieces, np.asarray(owners)


def recall(scores: np.ndarray) -> dict[str, float]:
    """R@1, R@10 and MRR when the right document of query i is document i."""
    own = scores[np.arange(len(scores)), np.arange(len(scores))][:, None]
    ranks = (scores > own).sum(axis=1)
    return {
        "R@1": float((ranks < 1).mean()),
        "R@10": float((ranks < 10).mean()),
        "MRR": float((1 / (ranks + 1)).mean()),
    }


def run(args: argparse.Namespace) -> dict[str, object]:
    encoder = load_encoder(MINILM_ID)
    windowed = long_text_encoder(encoder)
    assert isinstance(windowed, LongTextEncoder)
    questions, docs = corpus(args.questions, args.distractors)
    pieces, owners = windows_of(windowed, docs)
    vectors, encode_s = timed(lambda: encoder.encode(pieces))
    queries = encoder.encode(questions)
    first = vectors[[int(np.flatnonzero(owners == row)[0]) for row in range(len(docs))]]
    pooled = np.zeros_like(first)
    np.add.at(pooled, owners, vectors)
    pooled /= np.linalg.norm(pooled, axis=1, keepdims=True)
    per_window = queries @ vectors.T
    best = np.full((len(queries), len(docs)), -np.inf, dtype=np.float32)
    np.maximum.at(best.T, owners, per_window.T)
    return {
        "benchmark": "window_pooling",
        "settings": {"questions": len(questions), "documents": len(docs), "windows": len(pieces), "encode_s": encode_s},
        "results": {
            "first window only (truncation)": recall(queries @ first.T),
            "mean of windows (default)": recall(queries @ pooled.T),
            "max over windows (reference)": recall(best),
        },
        "machine": machine_info(),
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--questions", type=int, default=300, help="PubMedQA dev questions (default: 300)")
    parser.add_argument("--distractors", type=int, default=700, help="distractor abstracts (default: 700)")
    parser.add_argument("--out", type=Path, default=None, help="JSON result file (default: benchmarks/results/...)")
    args = parser.parse_args(argv)
    result = run(args)
    path = write_result(args.out, "window_pooling", result)
    rows = [[name, r["R@1"], r["R@10"], r["MRR"]] for name, r in result["results"].items()]
    print(markdown_table(["document vector", "R@1", "R@10", "MRR"], rows))
    print(f"{result['settings']}\nResult: {path}")


if __name__ == "__main__":
    main()
