"""Build the retrieval evaluation corpora of ../shared/README.md as JSON Lines for ``python -m ingest``.

- ``pubmedqa_corpus.jsonl``: every PubMedQA dev abstract (``contexts`` + ``long_answer``, no
  title, as the PubMedQA setting prescribes; its year and MeSH terms kept) plus distractors.
- ``bioasq_corpus.jsonl``: one document per BioASQ gold PMID (its expert snippets,
  ``bioasq_dev_docs.jsonl``) plus the same distractors.

Distractors are the first ``--distractors`` abstracts (5,000: the usual setting) of
``pubmed21n1298.xml.gz`` in file order, title + abstract with journal, year, publication types
and MeSH, read with the project's own PubMed reader (a later record of a PMID replaces the
earlier; deleted and abstract-less records skipped). A distractor whose PMID is an evaluation
document is left out, so every gold PMID has exactly the evaluation text. Then, from the repo root::

    python scripts/build_eval_corpora.py --out data/eval
    python -m ingest data/eval/pubmedqa_corpus.jsonl --index-dir data/eval/pubmedqa-index
    python -m chatbot eval ../shared/eval/pubmedqa_dev.jsonl --index-dir data/eval/pubmedqa-index --json
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
EVAL = SHARED / "eval"
DISTRACTOR_FILE = SHARED / "data" / "pubmed" / "pubmed21n1298.xml.gz"
DISTRACTORS = 5000  # the usual setting of ../shared/README.md


def _jsonl(path: Path) -> Iterator[dict]:
    with open(path, encoding="utf-8") as lines:
        yield from (json.loads(line) for line in lines if line.strip())


def pubmedqa_documents(path: Path = EVAL / "pubmedqa_dev.jsonl") -> list[dict]:
    """Each question's abstract without its title: its other sections, then its conclusion."""
    return [
        {
            "pmid": str(item["pmid"]),
            "title": "",
            "abstract": " ".join([*item["contexts"], item["long_answer"]]),
            "year": item.get("year"),
            "mesh": item.get("meshes") or [],
        }
        for item in _jsonl(path)
    ]


def bioasq_documents(path: Path = EVAL / "bioasq_dev_docs.jsonl") -> list[dict]:
    """One document per gold PMID, made of its expert-chosen snippets."""
    return [{"pmid": str(d["pmid"]), "title": d.get("title") or "", "abstract": d["abstract"]} for d in _jsonl(path)]


def distractors(path: Path, count: int, exclude: set[str]) -> tuple[list[dict], int]:
    """The first ``count`` abstracts of a PubMed file, and how many were left out as evaluation PMIDs."""
    sys.path.insert(0, str(REPO))
    from ingest.records import Article, Deletion
    from ingest.sources import read_source

    found: dict[str, dict] = {}
    collisions = 0
    for event in read_source(path):
        if isinstance(event, Deletion):
            for pmid in event.pmids:
                found.pop(pmid, None)
        if not isinstance(event, Article) or not event.sections:
            continue
        if event.pmid in exclude:
            collisions += 1
        elif event.pmid in found or len(found) < count:  # a later record replaces the earlier
            found[event.pmid] = _record(event)
        else:
            break
    return list(found.values()), collisions


def _record(article) -> dict:
    return {
        "pmid": article.pmid,
        "title": article.title,
        "abstract": article.abstract,
        "journal": article.journal,
        "year": article.year,
        "publication_types": list(article.publication_types),
        "mesh": list(article.mesh),
    }


def write_jsonl(records: Iterable[dict], path: Path) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with open(path, "w", encoding="utf-8") as out:
        for record in records:
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
            count += 1
    return count


def build(out: Path, *, count: int = DISTRACTORS, distractor_file: Path = DISTRACTOR_FILE) -> dict[str, int]:
    """Write both corpora into ``out``; the number of documents of each."""
    sets = {"pubmedqa": pubmedqa_documents(), "bioasq": bioasq_documents()}
    evaluation = {d["pmid"] for docs in sets.values() for d in docs}
    extra, collisions = distractors(distractor_file, count, evaluation)
    if collisions:
        print(f"{collisions} distractor PMIDs are evaluation documents and were left out", file=sys.stderr)
    return {name: write_jsonl([*docs, *extra], out / f"{name}_corpus.jsonl") for name, docs in sets.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "data" / "eval", help="output folder (default: data/eval)")
    parser.add_argument("--distractors", type=int, default=DISTRACTORS, help=f"default: {DISTRACTORS}")
    parser.add_argument("--distractor-file", type=Path, default=DISTRACTOR_FILE, help="PubMed XML (.xml or .xml.gz)")
    args = parser.parse_args(argv)
    for name, n in build(args.out, count=args.distractors, distractor_file=args.distractor_file).items():
        print(f"{args.out / (name + '_corpus.jsonl')}: {n} documents")
    return 0


if __name__ == "__main__":
    sys.exit(main())
