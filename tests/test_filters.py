"""Search filters (index/filters.py): the same semantics in Python and SQL, applied inside search,
and reachable from Python, ``python -m index search`` and ``python -m chatbot ask``."""

from __future__ import annotations

import argparse
import json

import pytest

from config import Config
from index.filters import Filters, add_filter_flags, filters_from_args
from index.search import PubMedIndex
from index.writer import ingest_files
from ingest import Article, Section, read_source
from tests.conftest import HashingEncoder

RECORDS = [
    {"pmid": "1", "title": "Asthma trial", "abstract": "Inhaled budesonide in asthma.", "year": 2018,
     "journal": "Lancet (London, England)", "publication_types": ["Randomized Controlled Trial"], "mesh": ["Asthma"]},
    {"pmid": "2", "title": "Asthma review", "abstract": "Asthma treatment reviewed.", "year": 2012,
     "journal": "Thorax", "publication_types": ["Review"], "mesh": ["Asthma", "Humans"]},
    {"pmid": "3", "title": "Asthma phase 3", "abstract": "A phase III asthma trial.", "year": 2020,
     "journal": "The New England journal of medicine", "publication_types": ["Clinical Trial, Phase III"],
     "mesh": ["Asthma", "Child"]},
    {"pmid": "4", "title": "Retracted asthma", "abstract": "Asthma results retracted.", "year": 2019,
     "journal": "Thorax", "publication_types": ["Journal Article", "Retracted Publication"], "mesh": []},
    {"pmid": "5", "title": "Undated asthma", "abstract": "An asthma report without a year.",
     "journal": "Chest", "publication_types": ["Case Reports"], "mesh": ["Asthma"]},
]  # fmt: skip
CASES = {
    "none": (Filters(), {"1", "2", "3", "4", "5"}),
    "from": (Filters(year_from=2019), {"3", "4"}),
    "to": (Filters(year_to=2018), {"1", "2"}),
    "range": (Filters(year_from=2018, year_to=2019), {"1", "4"}),
    "type": (Filters(publication_types=("randomized controlled trial",)), {"1"}),
    "types_or": (Filters(publication_types=("Review", "Case Reports")), {"2", "5"}),
    "qualified_type": (Filters(publication_types=("Clinical Trial",)), {"3"}),
    "exclude": (Filters(exclude_types=("Retracted Publication",)), {"1", "2", "3", "5"}),
    "journal_part": (Filters(journals=("lancet",)), {"1"}),
    "journals_or": (Filters(journals=("THORAX", "chest")), {"2", "4", "5"}),
    "mesh": (Filters(mesh=("child",)), {"3"}),
    "and": (Filters(mesh=("Asthma",), year_from=2015), {"1", "3"}),
    "nothing": (Filters(journals=("nature",)), set()),
}


@pytest.fixture(scope="module")
def index(tmp_path_factory) -> PubMedIndex:
    folder = tmp_path_factory.mktemp("filters")
    source = folder / "records.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in RECORDS), encoding="utf-8")
    ingest_files(
        [source], Config(index_dir=folder / "index"), read=read_source, encoder=HashingEncoder(), progress=False
    )
    return PubMedIndex(folder / "index", encoder=HashingEncoder())


@pytest.mark.parametrize("name", CASES)
def test_python_and_sql_agree_with_the_expected_set(index, name):
    filters, expected = CASES[name]
    assert {a.pmid for a in index.store.iter_articles() if filters.matches(a)} == expected
    assert {str(p) for p in filters.allowed_pmids(index.store.db)} == expected


@pytest.mark.parametrize("retriever", ["dense", "bm25", "hybrid"])
@pytest.mark.parametrize("name", CASES)
def test_search_returns_only_and_all_passing_articles(index, name, retriever):
    filters, expected = CASES[name]
    hits = index.search("asthma", k=10, filters=filters, retriever=retriever)
    assert {h.pmid for h in hits} == expected  # every passing article contains "asthma"
    assert [h.rank for h in hits] == list(range(1, len(hits) + 1))


def test_narrow_filter_still_fills_k_on_a_real_index(demo_index):
    index = PubMedIndex(demo_index, encoder=HashingEncoder())
    articles = list(index.store.iter_articles())
    reviews = {a.pmid for a in articles if "Review" in a.publication_types}
    assert 5 <= len(reviews) < len(articles) // 3
    hits = index.search("treatment of patients", k=5, filters=Filters(publication_types=("Review",)))
    assert len(hits) == 5 and {h.pmid for h in hits} <= reviews


def test_empty_filters_are_falsy_and_single_strings_are_one_value():
    assert not Filters() and Filters(year_to=2000)
    assert Filters(mesh="Asthma").mesh == ("Asthma",)  # not ("A", "s", ...)
    assert Filters(journals=["  Thorax ", ""]).journals == ("Thorax",)
    assert Filters(year_from=2001, mesh=("Asthma",)).as_dict() == {"year_from": 2001, "mesh": ["Asthma"]}


def test_empty_year_range_is_refused():
    with pytest.raises(ValueError, match="empty"):
        Filters(year_from=2020, year_to=2010)


def test_undated_article_fails_year_bounds():
    undated = Article("9", "T", (Section("", "x"),), year=None)
    assert Filters().matches(undated) and not Filters(year_from=1900).matches(undated)


def test_sql_special_characters_are_literal(index):
    assert len(Filters(publication_types=("%",)).allowed_pmids(index.store.db)) == 0
    assert len(Filters(journals=("%",)).allowed_pmids(index.store.db)) == 0


def test_command_line_flags():
    parser = argparse.ArgumentParser()
    add_filter_flags(parser)
    args = parser.parse_args(
        [
            "--year-from",
            "2015",
            "--publication-type",
            "Review",
            "--publication-type",
            "Meta-Analysis",
            "--mesh",
            "Asthma",
        ]
    )
    assert filters_from_args(args) == Filters(
        year_from=2015, publication_types=("Review", "Meta-Analysis"), mesh=("Asthma",)
    )
    assert not filters_from_args(parser.parse_args([]))


def test_facets_for_a_filter_ui(index):
    facets = index.facets()
    assert facets["years"] == (2012, 2020)
    assert ("Asthma", 4) in facets["mesh"] and facets["mesh"][0] == ("Asthma", 4)
    assert facets["journals"][0] == ("Thorax", 2)


def test_index_search_cli_applies_filters(index, monkeypatch, capsys):
    from index.__main__ import main

    monkeypatch.setattr("index.search.load_encoder", lambda *a, **k: HashingEncoder())
    code = main(["search", "asthma", "--index-dir", str(index.index_dir), "--json", "--journal", "thorax"])
    assert code == 0
    assert {h["pmid"] for h in json.loads(capsys.readouterr().out)} == {"2", "4"}


def test_filters_reach_the_chatbot(index: PubMedIndex):
    from chatbot.chat import Chatbot
    from tests.conftest import ScriptedGenerator

    bot = Chatbot(index, ScriptedGenerator("Yes [1]."), Config(top_k=3, min_score=0.0), encoder=HashingEncoder())
    answer = bot.ask("asthma", filters=Filters(year_to=2015))
    assert [h.pmid for h in answer.sources] == ["2"]
