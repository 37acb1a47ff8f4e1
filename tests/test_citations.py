"""resolve_citations: [n] markers in generated text -> the PMIDs of the sources the model was shown."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from chatbot.citations import resolve_citations
from index.search import PUBMED_URL, Hit, PubMedIndex
from tests.conftest import HashingEncoder


@pytest.fixture(scope="module")
def sources(demo_index: Path) -> list[Hit]:
    """Five real demo articles, numbered [1]..[5] as the prompt would number them."""
    index = PubMedIndex(demo_index, encoder=HashingEncoder())
    articles = list(itertools.islice(index.store.iter_articles(), 5))
    assert len({a.pmid for a in articles}) == 5
    return [Hit(article, 0.9 - 0.1 * i, i + 1) for i, article in enumerate(articles)]


def test_single_marker_maps_to_the_numbered_source(sources: list[Hit]) -> None:
    resolved = resolve_citations("Aspirin helped [1].", sources)
    assert resolved.text == "Aspirin helped [1]."
    assert resolved.invalid == 0
    [citation] = resolved.citations
    assert (citation.n, citation.pmid) == (1, sources[0].pmid)
    assert citation.title == sources[0].article.title
    assert citation.url == PUBMED_URL.format(pmid=sources[0].pmid)


def test_marker_maps_by_position_not_rank_one(sources: list[Hit]) -> None:
    [citation] = resolve_citations("Claim [4].", sources).citations
    assert (citation.n, citation.pmid) == (4, sources[3].pmid)


@pytest.mark.parametrize(
    ("marker", "numbers", "shown"),
    [
        ("[2, 3]", [2, 3], "[2, 3]"),
        ("[2,3]", [2, 3], "[2, 3]"),
        ("[1-3]", [1, 2, 3], "[1, 2, 3]"),
        ("[1–3]", [1, 2, 3], "[1, 2, 3]"),  # en dash
        ("[1;2]", [1, 2], "[1, 2]"),
        ("[1, 3-5]", [1, 3, 4, 5], "[1, 3, 4, 5]"),
    ],
)
def test_lists_and_ranges_expand(sources: list[Hit], marker: str, numbers: list[int], shown: str) -> None:
    resolved = resolve_citations(f"Finding {marker}.", sources)
    assert resolved.text == f"Finding {shown}."
    assert [c.n for c in resolved.citations] == numbers
    assert [c.pmid for c in resolved.citations] == [sources[n - 1].pmid for n in numbers]
    assert resolved.invalid == 0


@pytest.mark.parametrize("marker", ["[9]", "[0]", "[6]", "[42]"])
def test_out_of_range_marker_is_removed_and_counted(sources: list[Hit], marker: str) -> None:
    resolved = resolve_citations(f"An invented claim {marker}. A true one [2].", sources)
    assert marker not in resolved.text
    assert resolved.text == "An invented claim. A true one [2]."
    assert resolved.invalid == 1
    assert [c.n for c in resolved.citations] == [2]


def test_mixed_list_keeps_only_valid_members(sources: list[Hit]) -> None:
    resolved = resolve_citations("Claim [1, 9].", sources)
    assert resolved.text == "Claim [1]."
    assert resolved.invalid == 1
    assert [(c.n, c.pmid) for c in resolved.citations] == [(1, sources[0].pmid)]


def test_range_past_the_end_counts_each_missing_member(sources: list[Hit]) -> None:
    resolved = resolve_citations("Claim [4-7].", sources)
    assert resolved.text == "Claim [4, 5]."
    assert resolved.invalid == 2
    assert [c.n for c in resolved.citations] == [4, 5]


def test_citations_in_order_of_first_use_and_deduplicated(sources: list[Hit]) -> None:
    resolved = resolve_citations("First [3]. Then [1, 3]. Again [3][1]. Last [2, 2].", sources)
    assert [c.n for c in resolved.citations] == [3, 1, 2]
    assert [c.pmid for c in resolved.citations] == [sources[2].pmid, sources[0].pmid, sources[1].pmid]
    assert "[2]." in resolved.text and "[2, 2]" not in resolved.text


@pytest.mark.parametrize(
    "text",
    [
        "No markers here at all.",
        "Two lines,\n\nwith  double spaces and (parentheses 1-3).",
        "",
    ],
)
def test_text_without_markers_is_unchanged(sources: list[Hit], text: str) -> None:
    resolved = resolve_citations(text, sources)
    assert resolved == type(resolved)(text, (), 0)


def test_no_sources_makes_every_marker_invalid(sources: list[Hit]) -> None:
    resolved = resolve_citations("Claim [1]. Other [2, 3].", [])
    assert resolved.citations == ()
    assert resolved.invalid == 3
    assert "[" not in resolved.text


def test_every_citation_points_at_a_source(sources: list[Hit]) -> None:
    resolved = resolve_citations("A [5]. B [0, 1]. C [3-4]. D [12]. E [2;8].", sources)
    pmids = {h.pmid for h in sources}
    assert resolved.citations and all(c.pmid in pmids for c in resolved.citations)
    assert all(sources[c.n - 1].pmid == c.pmid for c in resolved.citations)
    assert resolved.invalid == 3
