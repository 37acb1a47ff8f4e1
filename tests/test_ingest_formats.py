"""MEDLINE text (.nbib / PubMed export .txt) and CSV/TSV readers, and how sources pick a reader."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import pytest

from config import Config
from index.writer import ingest_files
from ingest import Article, Section, Skipped, SourceError, expand_sources, read_source
from ingest.csv_table import read_csv
from ingest.medline import read_medline, sections
from ingest.sources import kind
from tests.conftest import HashingEncoder

DATA = Path(__file__).parent / "data"
MEDLINE = DATA / "medline"


def articles(path: Path) -> dict[str, Article]:
    return {e.pmid: e for e in read_source(path) if isinstance(e, Article)}


# --- MEDLINE: real PubMed exports (Biopython's test files) -----------------------------------------


def test_medline_single_record_all_fields():
    (article,) = read_medline(MEDLINE / "pubmed_result1.txt")
    assert article == Article(
        pmid="12230038",
        title="The Bio* toolkits--a brief overview.",
        sections=(Section("", article.sections[0].text),),
        journal="Briefings in bioinformatics",
        year=2002,
        authors=("Mangalam H",),
        publication_types=("Journal Article",),
        mesh=(
            "Computational Biology",
            "Computer Systems",
            "Humans",
            "Internet",
            "Programming Languages",
            "Software",
            "User-Computer Interface",
        ),
    )
    text = article.sections[0].text
    assert text.startswith("Bioinformatics research is often difficult to do with commercial software. The Open Source")
    assert text.endswith("particularly from the point of view of the beginning biologist programmer.")
    assert "  " not in text and "\n" not in text  # continuation lines joined with one space


def test_medline_several_records_structured_abstracts_and_dois():
    found = articles(MEDLINE / "pubmed_result2.txt")
    assert list(found) == ["16403221", "16377612", "14871861", "14630660"]
    scop = found["16403221"]
    assert [s.label for s in scop.sections] == ["BACKGROUND", "RESULTS", "CONCLUSION"]
    assert scop.sections[0].text.startswith("Benchmarking algorithms in structural bioinformatics")
    assert scop.sections[2].text.endswith("use in structural genomics easier and more principled.")
    assert scop.doi == "10.1186/1471-2105-7-10"  # from AID "... [doi]", not the [pii]
    assert scop.authors == ("Casbon JA", "Crooks GE", "Saqi MA") and scop.year == 2006
    assert "Information Storage and Retrieval" in scop.mesh  # "/*methods" qualifier removed
    assert (
        found["16377612"].title == "GenomeDiagram: a python package for the visualization of large-scale genomic data."
    )
    assert [s.label for s in found["16377612"].sections] == ["SUMMARY", "AVAILABILITY", "SUPPLEMENTARY INFORMATION"]
    assert found["14630660"].sections[0].label == ""


def test_medline_multiline_mesh_and_lid_doi():
    (article,) = read_medline(MEDLINE / "pubmed_result3.txt")
    assert article.doi == "10.1118/1.4748329"
    assert "High-Intensity Focused Ultrasound Ablation" in article.mesh
    assert [s.label for s in article.sections] == ["PURPOSE", "METHODS", "RESULTS", "CONCLUSIONS"]
    assert article.conclusion.startswith("Unlike traditional scanning methods")


MEDLINE_RECORD = """PMID- 555
TI  - Budesonide-formoterol as needed
      in mild asthma.
AB  - BACKGROUND: Patients with mild asthma. METHODS: A 52-week trial. CONCLUSIONS: It
      worked.
DP  - 2018 May 17
JT  - The New England journal of medicine
AU  - O'Byrne PM
"""


def test_medline_and_xml_of_the_same_citation_embed_the_same_text(tmp_path):
    medline = tmp_path / "one.nbib"
    medline.write_text(MEDLINE_RECORD)
    xml = tmp_path / "one.xml"
    xml.write_text(
        '<PubmedArticleSet><PubmedArticle><MedlineCitation><PMID Version="1">555</PMID><Article>'
        "<Journal><JournalIssue><PubDate><Year>2018</Year></PubDate></JournalIssue>"
        "<Title>The New England journal of medicine</Title></Journal>"
        "<ArticleTitle>Budesonide-formoterol as needed in mild asthma.</ArticleTitle><Abstract>"
        '<AbstractText Label="BACKGROUND">Patients with mild asthma.</AbstractText>'
        '<AbstractText Label="METHODS">A 52-week trial.</AbstractText>'
        '<AbstractText Label="CONCLUSIONS">It worked.</AbstractText></Abstract>'
        "<AuthorList><Author><LastName>O'Byrne</LastName><Initials>PM</Initials></Author></AuthorList>"
        "</Article></MedlineCitation></PubmedArticle></PubmedArticleSet>"
    )
    (from_medline,), (from_xml,) = read_source(medline), read_source(xml)
    assert from_medline.text_hash == from_xml.text_hash
    assert from_medline == from_xml


@pytest.mark.parametrize(
    "abstract, labels",
    [
        ("Plain text. No heading here.", [""]),
        ("OBJECTIVE: Find. RESULTS: Found it. CONCLUSIONS: Done.", ["OBJECTIVE", "RESULTS", "CONCLUSIONS"]),
        ("We used HIV: a virus. Then more.", [""]),  # a heading only counts at the start of a sentence
        ("Intro first. RESULTS: later.", [""]),  # text before the first heading: keep it unsplit
        ("", []),
    ],
)
def test_medline_abstract_headings(abstract, labels):
    assert [s.label for s in sections(abstract)] == labels


def test_medline_bad_records_are_skipped_with_line_numbers(tmp_path):
    path = tmp_path / "bad.nbib"
    path.write_text(
        "PMID- 1\nTI  - Good one.\nAB  - Text.\n\n"
        "PMID- abc\nTI  - Bad PMID.\n\n"
        "PMID- 3\nAB  - No title.\n\n"
        "PMID- 4\nTI  - Broken line.\n   stray indentation\n\n"
        "PMID- 5\nTI  - Last.\n"
    )
    events = list(read_source(path))
    assert [type(e).__name__ for e in events] == ["Article", "Skipped", "Skipped", "Skipped", "Article"]
    skipped = [e for e in events if isinstance(e, Skipped)]
    assert [e.source for e in skipped] == [f"{path}:5", f"{path}:8", f"{path}:11"]
    assert [e.pmid for e in skipped] == ["abc", "3", "4"]
    assert "title" in skipped[1].reason and "line 13" in skipped[2].reason


@pytest.mark.parametrize("content", ["<PubmedArticleSet/>\n", "pmid,title\n1,x\n", "{}\n"], ids=["xml", "csv", "json"])
def test_non_medline_file_is_a_source_error(tmp_path, content):
    path = tmp_path / "export.nbib"
    path.write_text(content)
    with pytest.raises(SourceError, match="not a MEDLINE tag line") as info:
        list(read_source(path))
    assert info.value.source == str(path)


def test_medline_gz_and_crlf(tmp_path):
    path = tmp_path / "export.nbib.gz"
    path.write_bytes(gzip.compress(MEDLINE_RECORD.replace("\n", "\r\n").encode()))
    (article,) = read_source(path)
    assert article.title == "Budesonide-formoterol as needed in mild asthma." and article.year == 2018


def test_txt_is_medline_only_when_it_starts_like_a_pubmed_export(tmp_path):
    export = tmp_path / "pubmed-asthma-set.txt"
    shutil.copy(MEDLINE / "pubmed_result2.txt", export)
    (tmp_path / "notes.txt").write_text("shopping list\n")
    assert kind(export) == "medline" and kind(tmp_path / "notes.txt") == ""
    assert expand_sources([str(tmp_path)]) == [export]
    with pytest.raises(SourceError, match="unsupported file type"):
        expand_sources([str(tmp_path / "notes.txt")])


def test_medline_ingests_into_an_index(config):
    summary = ingest_files(
        [MEDLINE / "pubmed_result1.txt", MEDLINE / "pubmed_result2.txt", MEDLINE / "pubmed_result3.txt"],
        config,
        read=read_source,
        encoder=HashingEncoder(),
        progress=False,
    )
    assert (summary.added, summary.without_abstract, summary.skipped) == (6, 0, 0)


# --- CSV / TSV ------------------------------------------------------------------------------------


def test_csv_all_columns_any_order_and_quoting(tmp_path):
    path = tmp_path / "records.csv"
    path.write_text(
        "Title,PMID,Abstract,Year,Journal,Authors,MeSH,Publication_Types,DOI\n"
        '"Aspirin, and stroke",101,"Line one\nline two, ""quoted"".",2019-05,Stroke,Doe J; Roe A,'
        "Aspirin; Stroke,Review,10.1/x\n"
    )
    (article,) = read_csv(path)
    assert article == Article(
        pmid="101",
        title="Aspirin, and stroke",
        sections=(Section("", 'Line one line two, "quoted".'),),
        journal="Stroke",
        year=2019,
        authors=("Doe J", "Roe A"),
        publication_types=("Review",),
        mesh=("Aspirin", "Stroke"),
        doi="10.1/x",
    )


def test_pubmed_web_csv_export_columns(tmp_path):
    """PubMed's "Save > CSV" has no abstract: rows are read (and counted as without abstract)."""
    path = tmp_path / "csv-asthma-set.csv"
    path.write_text(
        "PMID,Title,Authors,Citation,First Author,Journal/Book,Publication Year,Create Date,PMCID,NIHMS ID,DOI\n"
        "29768149,Inhaled Combined Budesonide-Formoterol as Needed in Mild Asthma.,"
        "\"O'Byrne PM, FitzGerald JM, Bateman ED.\",N Engl J Med. 2018,O'Byrne PM,N Engl J Med,2018,"
        "2018/05/18,,,10.1056/NEJMoa1715274\n"
    )
    (article,) = read_source(path)
    assert article.authors == ("O'Byrne PM", "FitzGerald JM", "Bateman ED")
    assert (article.journal, article.year, article.doi, article.sections) == (
        "N Engl J Med",
        2018,
        "10.1056/NEJMoa1715274",
        (),
    )


def test_tsv_and_bad_rows_with_line_numbers(tmp_path):
    path = tmp_path / "records.tsv"
    path.write_text("pmid\ttitle\tabstract\n1\tOne\tA.\n\nx\tBad\tB.\n3\t\tC.\n4\tFour\t\n")
    events = list(read_source(path))
    assert [type(e).__name__ for e in events] == ["Article", "Skipped", "Skipped", "Article"]
    assert [e.source for e in events if isinstance(e, Skipped)] == [f"{path}:4", f"{path}:5"]
    assert events[-1].sections == ()


@pytest.mark.parametrize(
    "content, problem",
    [("title,abstract\nT,A\n", "no pmid column"), ("", "no pmid or title column"), ("a;b\n1;2\n", "no pmid")],
    ids=["no-pmid", "empty", "semicolons"],
)
def test_csv_without_required_header_is_a_source_error(tmp_path, content, problem):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(SourceError, match=problem) as info:
        list(read_source(path))
    assert str(path) in str(info.value) and "pmid,title,abstract" in str(info.value)


def test_csv_gz_and_not_utf8(tmp_path):
    good = tmp_path / "r.csv.gz"
    good.write_bytes(gzip.compress(b"pmid,title,abstract\n9,Gz,x\n"))
    assert [e.pmid for e in read_source(good)] == ["9"]
    bad = tmp_path / "latin1.csv"
    bad.write_bytes("pmid,title\n1,caf\xe9\n".encode("latin-1"))
    with pytest.raises(SourceError, match="cannot be read"):
        list(read_source(bad))


def test_csv_ingests_into_an_index(tmp_path):
    path = tmp_path / "r.csv"
    path.write_text("pmid,title,abstract\n1,Asthma,Wheeze and cough.\n2,No abstract,\nx,bad,row\n")
    summary = ingest_files(
        [path], Config(index_dir=tmp_path / "index"), read=read_source, encoder=HashingEncoder(), progress=False
    )
    assert (summary.added, summary.without_abstract, summary.skipped, summary.embedded) == (1, 1, 1, 1)
