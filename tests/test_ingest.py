"""Parsing PubMed XML (efetch, update files) and JSON Lines into events, and checking sources."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from ingest import Article, Deletion, Section, Skipped, SourceError, expand_sources, read_source
from ingest.jsonl import read_jsonl
from ingest.pubmed_xml import read_pubmed_xml

DATA = Path(__file__).parent / "data"
NEJM = DATA / "pubmed-29768149.xml"
UPDATE = DATA / "pubmed_update_sample.xml.gz"
EFETCH = sorted(DATA.glob("pubmed[0-9].xml"))


def articles(path: Path) -> dict[str, Article]:
    return {e.pmid: e for e in read_source(path) if isinstance(e, Article)}


def record(
    pmid: str = "123",
    title: str = "<ArticleTitle>A title.</ArticleTitle>",
    abstract: str = "<AbstractText>Text.</AbstractText>",
    extra="",
):
    """One minimal PubmedArticle, as NCBI writes it (only the elements the reader needs)."""
    pmid_el = f'<PMID Version="1">{pmid}</PMID>' if pmid is not None else ""
    return (
        f"<PubmedArticle><MedlineCitation>{pmid_el}<Article>"
        f"<Journal><JournalIssue><PubDate><Year>2020</Year></PubDate></JournalIssue><Title>J</Title></Journal>"
        f"{title}<Abstract>{abstract}</Abstract>{extra}</Article></MedlineCitation></PubmedArticle>"
    )


def write_xml(path: Path, *records: str) -> Path:
    path.write_text("<?xml version='1.0'?>\n<PubmedArticleSet>" + "".join(records) + "</PubmedArticleSet>\n")
    return path


# --- efetch samples -------------------------------------------------------------------------------


def test_structured_abstract_keeps_section_labels_in_order():
    article = articles(NEJM)["29768149"]
    assert [s.label for s in article.sections] == ["BACKGROUND", "METHODS", "RESULTS", "CONCLUSIONS"]
    assert article.sections[0].text == (
        "In patients with mild asthma, as-needed use of an inhaled glucocorticoid plus a fast-acting \u03b2 2-agonist"
        " may be an alternative to conventional treatment strategies."
    )  # the <sub>2</sub> is kept as text; the indentation around it collapses to one space
    assert article.sections[1].text.startswith("We conducted a 52-week, double-blind trial")
    assert article.sections[3].text.endswith("NCT02149199 .).")
    assert article.abstract.startswith("BACKGROUND: In patients with mild asthma")
    assert "\nCONCLUSIONS: In patients with mild asthma, as-needed budesonide-formoterol" in article.abstract


def test_efetch_bibliographic_fields():
    article = articles(NEJM)["29768149"]
    assert article.title == "Inhaled Combined Budesonide-Formoterol as Needed in Mild Asthma."
    assert article.journal == "The New England journal of medicine"
    assert article.year == 2018
    assert article.doi == "10.1056/NEJMoa1715274"
    assert article.authors[:3] == ("O'Byrne PM", "FitzGerald JM", "Bateman ED")
    assert len(article.authors) == 10
    assert len(article.mesh) == 23
    assert {"Asthma", "Budesonide", "Formoterol Fumarate", "Terbutaline"} <= set(article.mesh)
    assert article.mesh[0] == "Administration, Inhalation" and article.mesh[-1] == "Young Adult"
    assert article.publication_types[:3] == ("Clinical Trial, Phase III", "Comparative Study", "Journal Article")
    assert "Randomized Controlled Trial" in article.publication_types
    assert article.version == 1
    assert article.text.startswith(article.title + "\nBACKGROUND: ")


def test_efetch_record_without_abstract_is_still_yielded():
    found = articles(DATA / "pubmed1.xml")
    assert list(found) == ["12091962", "9997"]
    no_abstract = found["12091962"]
    assert no_abstract.sections == () and no_abstract.abstract == ""
    assert no_abstract.year == 1990 and no_abstract.authors == ("Olivero JM",)
    assert no_abstract.doi == ""
    assert no_abstract.publication_types == ("Journal Article", "Review")
    assert no_abstract.mesh[0] == "AIDS Serodiagnosis" and len(no_abstract.mesh) == 19


def test_doi_falls_back_to_article_id_list():
    # 9997 has no ELocationID, only <ArticleId IdType="doi"> under PubmedData.
    assert articles(DATA / "pubmed1.xml")["9997"].doi == "10.1016/0005-2795(76)90109-4"


@pytest.mark.parametrize("path", EFETCH, ids=lambda p: p.name)
def test_every_efetch_sample_parses_to_complete_articles(path):
    events = list(read_pubmed_xml(path))
    assert events and all(isinstance(e, Article) for e in events)
    for article in events:
        assert article.pmid.isdigit() and article.title and article.journal
        assert 1900 < article.year < 2030
        assert article.authors


def test_inline_markup_inside_abstract_and_title_is_kept_as_text():
    article = articles(DATA / "pubmed4.xml")["27797938"]
    assert article.title == (
        "Leucocyte telomere length, genetic variants at the TERT gene region and risk of pancreatic cancer."
    )
    objective, _, results, _ = article.sections
    assert "telomerase reverse transcriptase (TERT) gene region" in objective.text
    assert "95% CI 1.07 to 2.78; ptrend=0.048)" in results.text
    assert "r2<0.25" in results.text


def test_inline_markup_handwritten(tmp_path):
    path = write_xml(
        tmp_path / "inline.xml",
        record(
            title="<ArticleTitle>CO<sub>2</sub> in <i>E. coli</i></ArticleTitle>",
            abstract="<AbstractText>Levels of Ca<sup>2+</sup> rose in <i>TP53</i>-null cells.</AbstractText>",
        ),
    )
    (article,) = read_source(path)
    assert article.title == "CO2 in E. coli"
    assert article.sections == (Section("", "Levels of Ca2+ rose in TP53-null cells."),)


# --- update files ---------------------------------------------------------------------------------


def test_update_sample_versions_come_in_document_order():
    events = list(read_source(UPDATE))
    assert sum(isinstance(e, Article) for e in events) == 28
    versions = {}
    for event in events:
        if isinstance(event, Article):
            versions.setdefault(event.pmid, []).append(event.version)
    assert versions["30271887"] == [1, 2, 3, 4]
    assert versions["33728380"] == [1, 2]
    assert versions["34017925"] == [1, 2]
    assert len(versions) == 23
    # version 4 of 30271887 appears after version 1 of 33728380 and 34017925: plain document order
    order = [(e.pmid, e.version) for e in events if isinstance(e, Article)]
    assert order.index(("33728380", 1)) < order.index(("30271887", 4)) < order.index(("33728380", 2))


def test_later_version_can_change_the_text():
    v1, v2 = (e for e in read_source(UPDATE) if isinstance(e, Article) and e.pmid == "34017925")
    assert v1.title.startswith("luox: novel open-access") and v2.title.startswith("luox: novel validated")
    assert v1.text_hash != v2.text_hash
    assert v2.doi.endswith(".2")


def test_delete_citation_is_the_last_event_with_twenty_pmids():
    events = list(read_source(UPDATE))
    deletion = events[-1]
    assert isinstance(deletion, Deletion)
    assert len(deletion.pmids) == 20 and len(set(deletion.pmids)) == 20
    assert deletion.pmids[0] == "31688362" and deletion.pmids[-1] == "34096142"
    assert all(p.isdigit() for p in deletion.pmids)
    assert not set(deletion.pmids) & {e.pmid for e in events if isinstance(e, Article)}
    assert sum(isinstance(e, Deletion) for e in events) == 1


def test_empty_article_title_falls_back_to_vernacular_title(tmp_path):
    path = write_xml(
        tmp_path / "vernacular.xml",
        record(
            pmid="555",
            title="<ArticleTitle></ArticleTitle>",
            extra="<VernacularTitle>Behandlung des Asthmas bei Kindern.</VernacularTitle>",
        ),
    )
    (article,) = read_source(path)
    assert article.pmid == "555"
    assert article.title == "Behandlung des Asthmas bei Kindern."


def test_record_without_any_title_is_skipped(tmp_path):
    path = write_xml(tmp_path / "untitled.xml", record(pmid="556", title="<ArticleTitle/>"))
    (event,) = read_source(path)
    assert isinstance(event, Skipped) and event.pmid == "556" and "title" in event.reason


@pytest.mark.parametrize("pmid", [None, "", "abc"], ids=["missing", "empty", "non-numeric"])
def test_record_without_numeric_pmid_is_skipped_and_reading_goes_on(tmp_path, pmid):
    path = write_xml(tmp_path / "nopmid.xml", record(pmid=pmid), record(pmid="777"))
    skipped, article = read_source(path)
    assert isinstance(skipped, Skipped)
    assert skipped.source == f"{path}:2" and "PMID" in skipped.reason  # the line where the record starts
    assert skipped.pmid == (pmid or "?")
    assert isinstance(article, Article) and article.pmid == "777"


def test_version_attribute_and_empty_abstract_sections(tmp_path):
    text = record(pmid="42", abstract='<AbstractText Label="AIM"> </AbstractText><AbstractText>Only.</AbstractText>')
    path = write_xml(tmp_path / "v.xml", text.replace('Version="1"', 'Version="3"'))
    (article,) = read_source(path)
    assert article.version == 3
    assert article.sections == (Section("", "Only."),)  # a blank section is dropped


def test_gzip_detected_by_content_not_name(tmp_path):
    path = tmp_path / "really_gzip.xml"
    path.write_bytes(gzip.compress(NEJM.read_bytes()))
    assert [e.pmid for e in read_source(path)] == ["29768149"]


# --- JSON Lines -----------------------------------------------------------------------------------


def jsonl_line(**fields) -> str:
    return json.dumps(fields) + "\n"


def test_jsonl_full_record(tmp_path):
    path = tmp_path / "records.jsonl"
    path.write_text(
        jsonl_line(
            pmid=101,
            title=" Aspirin and stroke ",
            abstract="Aspirin reduced stroke.",
            year="2019",
            journal="Stroke",
            mesh=["Aspirin", "Stroke"],
            publication_types="Review",
            authors=["Doe J"],
            doi="10.1/x",
        )
    )
    (article,) = read_jsonl(path)
    assert article == Article(
        pmid="101",
        title="Aspirin and stroke",
        sections=(Section("", "Aspirin reduced stroke."),),
        journal="Stroke",
        year=2019,
        authors=("Doe J",),
        publication_types=("Review",),
        mesh=("Aspirin", "Stroke"),
        doi="10.1/x",
    )


def test_jsonl_without_abstract_and_bad_year(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text(jsonl_line(pmid="7", title="T", year="n.d."))
    (article,) = read_jsonl(path)
    assert article.sections == () and article.year is None


def test_jsonl_bad_lines_are_skipped_with_line_numbers(tmp_path):
    path = tmp_path / "mixed.jsonl"
    path.write_text(
        jsonl_line(pmid="1", title="First", abstract="a")
        + "\n"  # blank lines are ignored, but still counted
        + "{not json\n"
        + jsonl_line(pmid="x1", title="Bad pmid")
        + jsonl_line(pmid="4", title="")
        + "[1, 2]\n"
        + jsonl_line(pmid="2", title="Second", abstract="b")
    )
    events = list(read_source(path))
    assert [type(e).__name__ for e in events] == ["Article", "Skipped", "Skipped", "Skipped", "Skipped", "Article"]
    assert [e.source for e in events if isinstance(e, Skipped)] == [f"{path}:{n}" for n in (3, 4, 5, 6)]
    assert [e.pmid for e in events if isinstance(e, Skipped)] == ["?", "x1", "4", "?"]
    assert "invalid JSON" in events[1].reason
    assert "title" in events[3].reason
    assert [e.pmid for e in events if isinstance(e, Article)] == ["1", "2"]


def test_jsonl_gz(tmp_path):
    path = tmp_path / "r.jsonl.gz"
    path.write_bytes(gzip.compress(jsonl_line(pmid="9", title="Gz", abstract="x").encode()))
    assert [e.pmid for e in read_source(path)] == ["9"]


@pytest.mark.parametrize(
    "content", ["pmid,title\n1,a\n", "<PubmedArticleSet/>\n", "[1, 2, 3]\n"], ids=["csv", "xml", "array"]
)
def test_non_jsonl_file_is_a_source_error(tmp_path, content):
    path = tmp_path / "not.jsonl"
    path.write_text(content)
    with pytest.raises(SourceError) as info:
        list(read_source(path))
    assert str(path) in str(info.value) and info.value.source == str(path)


def test_jsonl_not_utf8_is_a_source_error(tmp_path):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(
        jsonl_line(pmid="1", title="ok").encode() + '{"pmid": "2", "title": "caf\xe9"}\n'.encode("latin-1")
    )
    with pytest.raises(SourceError, match="cannot be read"):
        list(read_source(path))


# --- sources --------------------------------------------------------------------------------------


def test_expand_folder_recursively_sorted_and_supported_only(tmp_path):
    (tmp_path / "sub").mkdir()
    for name in ("b.xml", "a.jsonl", "sub/c.xml.gz", "notes.txt", "d.ndjson", "e.XML"):
        (tmp_path / name).write_text("")
    found = expand_sources([str(tmp_path)])
    assert found == sorted(found)
    assert {p.relative_to(tmp_path).as_posix() for p in found} == {
        "a.jsonl",
        "b.xml",
        "sub/c.xml.gz",
        "d.ndjson",
        "e.XML",
    }


def test_expand_glob_and_order_of_specs(tmp_path):
    for name in ("u2.xml", "u1.xml", "x.jsonl"):
        (tmp_path / name).write_text("")
    found = expand_sources([str(tmp_path / "x.jsonl"), str(tmp_path / "u*.xml")])
    assert [p.name for p in found] == ["x.jsonl", "u1.xml", "u2.xml"]


def test_expand_real_data_folder():
    found = expand_sources([str(DATA)])
    assert {p.name for p in found} >= {"pubmed-29768149.xml", "pubmed_update_sample.xml.gz", "pubmed1.xml"}


@pytest.mark.parametrize(
    "make, problem",
    [
        (lambda d: d / "missing.xml", "no such file"),
        (lambda d: d / "nothing-*.xml", "no file matches"),
        (lambda d: (d / "notes.txt").write_text("x") and d / "notes.txt", "unsupported file type"),
        (lambda d: (d / "data.docx").write_text("x") and d / "data.docx", "supported: .xml"),
        (lambda d: (d / "empty").mkdir() or d / "empty", "no supported file"),
    ],
    ids=["missing", "glob-without-match", "txt", "docx", "empty-folder"],
)
def test_expand_sources_rejects_with_the_path_in_the_message(tmp_path, make, problem):
    bad = make(tmp_path)
    good = tmp_path / "good.xml"
    good.write_text("")
    with pytest.raises(SourceError) as info:
        expand_sources([str(good), str(bad)])
    assert str(bad) in str(info.value)
    assert problem in str(info.value)


# --- unreadable files -----------------------------------------------------------------------------


def truncated_gzip(tmp_path: Path) -> Path:
    data = UPDATE.read_bytes()
    path = tmp_path / "truncated.xml.gz"
    path.write_bytes(data[: len(data) // 2])
    return path


def test_truncated_gzip_raises_source_error_when_iterated(tmp_path):
    path = truncated_gzip(tmp_path)
    events = read_source(path)  # lazy: nothing read yet
    with pytest.raises(SourceError) as info:
        list(events)
    assert info.value.source == str(path) and str(path) in str(info.value)


def test_truncated_gzip_yields_leading_records_before_failing(tmp_path):
    seen = []
    with pytest.raises(SourceError):
        for event in read_source(truncated_gzip(tmp_path)):
            seen.append(event)
    assert seen and seen[0].pmid == "10704411"
    assert len(seen) < 28


@pytest.mark.parametrize(
    "content",
    [b"this is not xml\n", b"", b"<PubmedArticleSet><PubmedArticle><MedlineCitation>"],
    ids=["text", "empty", "unclosed"],
)
def test_non_xml_file_named_xml_raises_source_error(tmp_path, content):
    path = tmp_path / "x.xml"
    path.write_bytes(content)
    with pytest.raises(SourceError) as info:
        list(read_source(path))
    assert str(path) in str(info.value)
    assert "not well-formed" in str(info.value)


def test_xml_entities_are_not_expanded(tmp_path):
    path = tmp_path / "xxe.xml"
    secret = tmp_path / "secret.txt"
    secret.write_text("TOPSECRET")
    path.write_text(
        f'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY s SYSTEM "file://{secret}">]>'
        "<PubmedArticleSet>" + record(title="<ArticleTitle>T &s;</ArticleTitle>") + "</PubmedArticleSet>"
    )
    events = list(read_source(path))
    assert all("TOPSECRET" not in (e.title if isinstance(e, Article) else e.reason) for e in events)
