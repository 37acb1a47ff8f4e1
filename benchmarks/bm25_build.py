"""Memory and time of building a generation's BM25 index: the bounded two-pass build vs plain bm25s.

Baseline (measured in the same run, interleaved): the build as it was before, all token lists of
the collection in memory, then ``bm25s.BM25.index`` and ``BM25.save``. Ours: ``BM25Index.write``
(``index/bm25.py``), two passes over the metadata store in batches. Both read the articles from a
SQLite metadata store as ``build_for_generation`` does, and each build runs in a fresh process:
its peak memory is ``VmHWM`` (peak resident set, heap and mapped file pages) minus what it held
before building (Python, numpy, bm25s, the stemmer, the open store), plus a 5 ms sampler of the
anonymous (heap) part alone. Collections: the first N abstracts of the shared PubMed files (NLM's
update files, 18,445 + 14,832 abstracts). The growth per abstract between two sizes is what
decides whether all of PubMed (~24M) can be built; the run also checks that both builds give
identical scores for real questions. Timing run: use normal priority, from the repository root::

    python -m benchmarks.bm25_build                        # 9,000 / 18,440 / 33,272 abstracts
    python -m benchmarks.bm25_build --sizes 3000 --repeats 1   # a quick check
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from benchmarks._common import SHARED, machine_info, machine_line, markdown_table, write_result

FILES = ("pubmed21n1298.xml.gz", "pubmed20n0014.xml.gz")
PUBMED_ABSTRACTS = 24_000_000
PLAIN_BATCH = 20_000  # what the previous build tokenised at a time


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="9000,18440,33272", help="abstracts per collection, comma-separated")
    parser.add_argument("--repeats", type=int, default=2, help="builds per method and size (median reported)")
    parser.add_argument("--batch", type=int, default=None, help="abstracts per batch of the bounded build")
    parser.add_argument("--questions", type=Path, default=SHARED / "eval" / "pubmedqa_dev.jsonl")
    parser.add_argument("--out", type=Path, default=None, help="result JSON (default benchmarks/results/)")
    parser.add_argument("--child", choices=("plain", "bounded"), help=argparse.SUPPRESS)
    parser.add_argument("--store", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--into", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(_child(args.child, args.store, args.into, args.batch)))
        return
    _run(sorted(int(s) for s in args.sizes.split(",")), args.repeats, args.batch, args.questions, args.out)


def _run(sizes: list[int], repeats: int, batch: int | None, questions: Path, out: Path | None) -> None:
    load_before = os.getloadavg()
    articles = _articles(max(sizes))
    rows, runs = [], {}
    with tempfile.TemporaryDirectory(prefix="bm25-bench-") as tmp:
        for size in sizes:
            store = _store(articles[:size], Path(tmp) / f"store-{size}.sqlite")
            for rep, method in itertools.product(range(repeats), ("plain", "bounded")):  # interleaved
                into = Path(tmp) / f"{method}-{size}"
                runs.setdefault((size, method), []).append(_spawn(method, store, into, batch))
                print(size, method, rep, runs[(size, method)][-1], file=sys.stderr)
            check = _same_scores(Path(tmp) / f"plain-{size}", Path(tmp) / f"bounded-{size}", questions)
            for method in ("plain", "bounded"):
                summary = _summary(runs[(size, method)])
                rows.append({"abstracts": size, "method": method, **summary, **(check if method == "bounded" else {})})
    load_after = os.getloadavg()
    result = {
        "machine": machine_info(),
        "load_average_before": load_before,
        "load_average_after": load_after,
        "bounded_batch": batch or _default_batch(),
        "rows": rows,
        "growth": _growth(rows),
    }
    path = write_result(out, "bm25_build", result)
    print(machine_line(result["machine"]), f"load {load_before[0]:.1f} -> {load_after[0]:.1f}")
    print(_table(rows))
    print(json.dumps(result["growth"], indent=2))
    print("written to", path)


def _default_batch() -> int:
    from index.bm25 import _BUILD_BATCH

    return _BUILD_BATCH


def _articles(n: int) -> list:
    """The first ``n`` abstracts of the shared files, one per PMID, in file order."""
    from ingest import Article, read_source

    seen: dict[str, Article] = {}
    for name in FILES:
        for event in read_source(SHARED / "data" / "pubmed" / name):
            if isinstance(event, Article) and event.sections and event.pmid not in seen:
                seen[event.pmid] = event
                if len(seen) == n:
                    return list(seen.values())
    raise SystemExit(f"only {len(seen)} abstracts in {FILES}; ask for at most that many")


def _store(articles: Iterable, path: Path) -> Path:
    from index.store import MetadataStore

    store = MetadataStore(path)
    for article in articles:
        store.upsert(article, indexed_hash=None)
    store.commit()
    store.close()
    return path


def _spawn(method: str, store: Path, into: Path, batch: int | None) -> dict[str, float]:
    command = [sys.executable, "-m", "benchmarks.bm25_build", "--child", method, "--store", str(store)]
    command += ["--into", str(into)] + (["--batch", str(batch)] if batch else [])
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _child(method: str, store_path: Path, into: Path, batch: int | None) -> dict[str, float]:
    """One build in this fresh process: its CPU and wall time and its memory above the start."""
    from index import bm25
    from index.store import MetadataStore

    bm25.tokenize(["warm up the stemmer and stopwords"])
    store = MetadataStore(store_path, read_only=True)
    sampler = _AnonSampler()
    before = _status()
    cpu, wall = time.process_time(), time.perf_counter()
    if method == "plain":
        _plain_build(store.iter_articles(), into)
    else:
        bm25.BM25Index.write(into, store.iter_articles(), batch=batch or bm25._BUILD_BATCH)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    after = _status()
    sampler.stop()
    store.close()
    num_docs = json.loads((into / "params.index.json").read_text())["num_docs"]
    return {
        "cpu_s": cpu,
        "wall_s": wall,
        "peak_rss_growth_mb": (after["VmHWM"] - before["VmRSS"]) / 1024,
        "peak_anon_growth_mb": (sampler.peak - before["RssAnon"]) / 1024,
        "disk_bytes": sum(p.stat().st_size for p in into.iterdir()),
        "num_docs": num_docs,
        "vocabulary": len(json.loads((into / "vocab.index.json").read_text(encoding="utf-8"))),
    }


def _plain_build(articles: Iterable, into: Path) -> None:
    """The previous build: every document's tokens in memory, then bm25s's index and save."""
    from index.bm25 import K1, B, _bm25s, tokenize

    pmids, tokens, batch = [], [], []
    for article in articles:
        pmids.append(int(article.pmid))
        batch.append(article.text)
        if len(batch) == PLAIN_BATCH:
            tokens += tokenize(batch)
            batch = []
    tokens += tokenize(batch) if batch else []
    model = _bm25s().BM25(k1=K1, b=B)
    model.index(tokens, show_progress=False)
    into.mkdir(parents=True, exist_ok=True)
    np.save(into / "pmids.npy", np.asarray(pmids, dtype=np.int64), allow_pickle=False)
    model.save(str(into), allow_pickle=False, show_progress=False)


def _status() -> dict[str, int]:
    """kB figures of /proc/self/status."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if value.strip().endswith("kB"):
            out[name] = int(value.split()[0])
    return out


class _AnonSampler:
    """Peak of the anonymous (heap) resident memory, sampled every 5 ms in a thread."""

    def __init__(self) -> None:
        self.peak = _status()["RssAnon"]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, _status()["RssAnon"])

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _status()["RssAnon"])


def _same_scores(plain: Path, bounded: Path, questions: Path) -> dict[str, float]:
    """Both indexes loaded as search loads them: score differences and top-10 agreement."""
    from index.bm25 import BM25Index

    a, b = BM25Index.load(plain), BM25Index.load(bounded)
    texts = [json.loads(line)["question"] for line in questions.read_text(encoding="utf-8").splitlines()[:200]]
    diffs = [float(np.abs(a.scores(q) - b.scores(q)).max()) for q in texts]
    same_top = [[p for p, _ in a.search(q, 10)] == [p for p, _ in b.search(q, 10)] for q in texts]
    return {"questions": len(texts), "max_score_diff": max(diffs), "same_top10": sum(same_top) / len(texts)}


def _summary(runs: list[dict[str, float]]) -> dict[str, float]:
    keys = ("cpu_s", "wall_s", "peak_rss_growth_mb", "peak_anon_growth_mb")
    out = {key: statistics.median(run[key] for run in runs) for key in keys}
    out.update(disk_bytes=runs[0]["disk_bytes"], vocabulary=runs[0]["vocabulary"], num_docs=runs[0]["num_docs"])
    return out


def _growth(rows: list[dict]) -> dict[str, dict[str, float]]:
    """Per method: peak memory per abstract at the largest size; the marginal growth per extra
    abstract between the two largest sizes, and that slope times all of PubMed (linear); and the
    growth per extra vocabulary term times the vocabulary that Heaps' law predicts at 24M (what
    bounds the bounded build, whose only growing state is the vocabulary)."""
    out = {}
    for method in ("plain", "bounded"):
        mine = sorted((r for r in rows if r["method"] == method), key=lambda r: r["abstracts"])
        last = mine[-1]
        entry = {
            "peak_bytes_per_abstract": last["peak_rss_growth_mb"] * 2**20 / last["abstracts"],
            "cpu_us_per_abstract": last["cpu_s"] * 1e6 / last["abstracts"],
            "disk_bytes_per_abstract": last["disk_bytes"] / last["abstracts"],
        }
        if len(mine) > 1:
            prev = mine[-2]
            slope = (
                (last["peak_rss_growth_mb"] - prev["peak_rss_growth_mb"])
                * 2**20
                / (last["abstracts"] - prev["abstracts"])
            )
            entry["marginal_bytes_per_abstract"] = slope
            entry["extrapolated_gb_at_24m"] = (
                last["peak_rss_growth_mb"] * 2**20 + slope * (PUBMED_ABSTRACTS - last["abstracts"])
            ) / 1e9
            first = mine[0]  # vocabulary growth (Heaps' law V = K n^beta) fitted on the smallest and largest
            grew = last["vocabulary"] / first["vocabulary"]
            beta = float(np.log(grew) / np.log(last["abstracts"] / first["abstracts"]))
            vocabulary = last["vocabulary"] * (PUBMED_ABSTRACTS / last["abstracts"]) ** beta
            new_terms = last["vocabulary"] - prev["vocabulary"]
            per_term = (last["peak_rss_growth_mb"] - prev["peak_rss_growth_mb"]) * 2**20 / new_terms
            entry["heaps_beta"] = beta
            entry["vocabulary_at_24m"] = vocabulary
            entry["marginal_bytes_per_term"] = per_term
            entry["vocabulary_driven_gb_at_24m"] = (
                last["peak_rss_growth_mb"] * 2**20 + per_term * (vocabulary - last["vocabulary"])
            ) / 1e9
        out[method] = entry
    plain, bounded = (
        sorted((r for r in rows if r["method"] == m), key=lambda r: r["abstracts"])[-1] for m in ("plain", "bounded")
    )
    out["bounded_vs_plain"] = {
        "cpu": bounded["cpu_s"] / plain["cpu_s"],
        "wall": bounded["wall_s"] / plain["wall_s"],
        "peak_memory": bounded["peak_rss_growth_mb"] / plain["peak_rss_growth_mb"],
    }
    return out


def _table(rows: list[dict]) -> str:
    header = [
        "abstracts",
        "build",
        "CPU s",
        "wall s",
        "peak RSS growth (MB)",
        "peak heap growth (MB)",
        "B/abstract (peak)",
        "vocabulary",
    ]
    body = [
        [
            r["abstracts"],
            r["method"],
            r["cpu_s"],
            r["wall_s"],
            r["peak_rss_growth_mb"],
            r["peak_anon_growth_mb"],
            round(r["peak_rss_growth_mb"] * 2**20 / r["abstracts"]),
            r["vocabulary"],
        ]
        for r in rows
    ]
    return markdown_table(header, body)


if __name__ == "__main__":
    main()
