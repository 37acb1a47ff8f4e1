"""Select the bundled demo corpus from a real PubMed update file (kept for provenance).

Picks clinically relevant English citations with a substantial abstract (most records of a
2021 update file are not yet MeSH-indexed, so "clinical" is judged from the abstract's words),
at most a few per journal so the demo covers many specialties, and writes the original XML
elements with only their ``ReferenceList`` (cited-reference lists, a third of the bytes)
removed. Run from the repo root:

    python scripts/make_demo_corpus.py ../shared/data/pubmed/pubmed21n1298.xml.gz data/demo/pubmed_demo.xml.gz
"""

from __future__ import annotations

import argparse
import gzip
import re
from collections import Counter

from lxml import etree

CLINICAL = re.compile(
    r"\b(patients?|clinical|treatment|therapy|disease|trial|diagnos\w*|hospital\w*|mortality|infection|"
    r"cancer|surgery|surgical|symptoms?|risk)\b",
    re.IGNORECASE,
)
EXCLUDED_TYPES = {"Comment", "Editorial", "Letter", "Published Erratum", "Retraction of Publication", "News"}


def keep(article) -> bool:
    citation = article.find("MedlineCitation")
    text = " ".join("".join(a.itertext()) for a in citation.iterfind("Article/Abstract/AbstractText"))
    types = {t.text for t in citation.iterfind("Article/PublicationTypeList/PublicationType")}
    return (
        citation.findtext("Article/Language") == "eng"
        and 700 <= len(text) <= 2600
        and len(CLINICAL.findall(text)) >= 3
        and not types & EXCLUDED_TYPES
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("source")
    parser.add_argument("target")
    parser.add_argument("--limit", type=int, default=2000)
    parser.add_argument("--per-journal", type=int, default=3)
    args = parser.parse_args()

    per_journal: Counter[str] = Counter()
    chosen: dict[str, bytes] = {}
    deleted: set[str] = set()
    with gzip.open(args.source) as source:
        select(source, args, per_journal, chosen, deleted)
    records = [xml for pmid, xml in chosen.items() if pmid not in deleted][: args.limit]
    with gzip.open(args.target, "wb", compresslevel=9) as out:
        out.write(b'<?xml version="1.0" encoding="utf-8"?>\n<PubmedArticleSet>\n')
        for xml in records:
            out.write(xml.strip() + b"\n")
        out.write(b"</PubmedArticleSet>\n")
    print(f"wrote {len(records)} records from {len(per_journal)} journals to {args.target}")


def select(source, args, per_journal, chosen, deleted) -> None:
    for _, element in etree.iterparse(source, tag=("PubmedArticle", "DeleteCitation")):
        if element.tag == "DeleteCitation":
            deleted.update(p.text for p in element.iter("PMID"))
        elif keep(element):
            journal = element.findtext("MedlineCitation/Article/Journal/Title") or ""
            pmid = element.findtext("MedlineCitation/PMID")
            if per_journal[journal] < args.per_journal and pmid not in chosen:
                per_journal[journal] += 1
                for references in element.iter("ReferenceList"):
                    references.getparent().remove(references)
                chosen[pmid] = etree.tostring(element, encoding="utf-8")
        element.clear()


if __name__ == "__main__":
    main()
