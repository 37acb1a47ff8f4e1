"""Print the support check's verdicts on hand-written answer sentences about two real demo abstracts.

The abstracts are PMID 33989641 (IV ibuprofen vs paracetamol after lumbar disc surgery) and PMID
34082712 (opioid-free anaesthesia in cardiac surgery) from the bundled demo corpus; the encoder
is the packaged all-MiniLM-L6-v2 (the offline encoder). The output is the table in
docs/MODELS.md. Run from the repository root: ``python -m scripts.support_examples``.
"""

from __future__ import annotations

from pathlib import Path

from chatbot.support import check_support
from index.encoder import MINILM_ID, load_encoder
from index.search import Hit
from ingest.records import Article
from ingest.sources import read_source

DEMO_CORPUS = Path(__file__).resolve().parent.parent / "data" / "demo" / "pubmed_demo.xml.gz"
PMIDS = ("33989641", "34082712")
SENTENCES = [
    (
        "Pain scores and morphine consumption in the 24 hours after lumbar disk surgery were significantly "
        "reduced by IV ibuprofen compared with controls and paracetamol [1].",
        "close to the abstract's own words",
    ),
    (
        "After lumbar disc surgery, patients given intravenous ibuprofen needed less morphine and reported "
        "less pain [1].",
        "a paraphrase",
    ),
    (
        "Intravenous ibuprofen did not reduce pain scores or morphine consumption after lumbar disk surgery [1].",
        "the finding negated",
    ),
    ("Paracetamol caused fewer side effects than placebo in children with fever [1].", "a claim [1] does not make"),
    (
        "Pain scores and morphine consumption in the 24 hours after lumbar disk surgery were significantly "
        "reduced by IV ibuprofen compared with controls and paracetamol [2].",
        "the right claim, the wrong source",
    ),
    (
        "Opioid-free anaesthesia with dexmedetomidine was feasible in cardiac surgery and may lower "
        "postoperative morphine consumption.",
        "uncited, but from [2]",
    ),
    ("Regular exercise improves sleep quality in older adults.", "uncited, from nowhere"),
]


def main() -> None:
    found = {e.pmid: e for e in read_source(DEMO_CORPUS) if isinstance(e, Article) and e.pmid in PMIDS}
    sources = [Hit(found[pmid], 1.0, n) for n, pmid in enumerate(PMIDS, start=1)]
    encoder = load_encoder(MINILM_ID)
    print("| answer sentence | what it is | verdict | score | shown as |")
    print("|---|---|---|---|---|")
    for sentence, what in SENTENCES:
        checked = check_support(sentence, sources, encoder)
        [verdict] = checked.sentences
        print(f"| {sentence} | {what} | {verdict.status} | {verdict.score:.2f} | `{checked.text[-40:]}` |")


if __name__ == "__main__":
    main()
