"""NCBI sources against a local HTTP server on 127.0.0.1 serving fixture answers (no real network):
E-utilities search/fetch with the history server and date splitting, update/baseline downloads
with MD5 checks, rate limiting, retries with backoff, and the ``python -m ingest`` options."""

from __future__ import annotations

import gzip
import hashlib
import json
from dataclasses import replace
from datetime import date
from pathlib import Path

import pytest

from config import Config
from index.writer import ingest_files
from ingest import SourceError, read_source
from ingest.eutils import ESEARCH_LIMIT, EUtils, download_query, query_folder
from ingest.ncbi_files import ingested_names, new_files
from tests.conftest import HashingEncoder
from tests.local_server import Answer, Server, fast_client, local_server  # noqa: F401 (the server fixture)
from tests.test_ingest_failures import run_ingest

DATA = Path(__file__).parent / "data"
EFETCH_FILES = [DATA / "pubmed-29768149.xml", DATA / "pubmed1.xml", DATA / "pubmed2.xml", DATA / "pubmed4.xml"]


@pytest.fixture
def config(tmp_path, server) -> Config:
    return Config(
        index_dir=tmp_path / "index",
        download_dir=tmp_path / "downloads",
        eutils_url=server.url + "eutils/",
        pubmed_files_url=server.url + "pubmed/",
        ncbi_email="dev@example.org",
    )


# --- a fake PubMed: esearch over dated records, efetch from the history server --------------------


class FakePubMed:
    """PMIDs with publication dates; efetch returns real efetch XML for them, in order."""

    def __init__(self, server: Server, dated: dict[str, date], bodies: dict[str, bytes]) -> None:
        self.dated, self.bodies, self.history = dated, bodies, {}
        server.routes["/eutils/esearch.fcgi"] = self.esearch
        server.routes["/eutils/efetch.fcgi"] = self.efetch

    def esearch(self, params: dict[str, str]) -> Answer:
        first = date(*map(int, params.get("mindate", "1000/1/1").split("/")))
        last = date(*map(int, params.get("maxdate", "9999/12/31").split("/")))
        pmids = [p for p, day in self.dated.items() if first <= day <= last]
        key = str(len(self.history) + 1)
        self.history[key] = pmids
        result = {"count": str(len(pmids)), "retmax": "0", "querykey": key, "webenv": "MCID_TEST"}
        return 200, json.dumps({"esearchresult": result}).encode(), {"Content-Type": "application/json"}

    def efetch(self, params: dict[str, str]) -> Answer:
        pmids = self.history[params["query_key"]]
        start, count = int(params["retstart"]), int(params["retmax"])
        assert start + count <= ESEARCH_LIMIT, "PubMed refuses records past 10,000"
        records = b"".join(self.bodies[p] for p in pmids[start : start + count])
        return 200, b"<?xml version='1.0'?>\n<PubmedArticleSet>" + records + b"</PubmedArticleSet>", {}


def efetch_records() -> dict[str, bytes]:
    """Each PubmedArticle of the efetch samples, as bytes, by PMID."""
    from lxml import etree

    records = {}
    for path in EFETCH_FILES:
        for element in etree.parse(str(path)).getroot().iter("PubmedArticle"):
            records[element.findtext("MedlineCitation/PMID")] = etree.tostring(element)
    return records


def test_query_is_fetched_in_batches_through_the_history_server(server, config):
    records = efetch_records()
    FakePubMed(server, dict.fromkeys(records, date(2018, 5, 17)), records)
    paths = download_query("asthma budesonide", replace(config, ncbi_api_key="SECRET"), fast_client(), batch=2)
    assert [p.name for p in paths] == ["all-00000.xml", "all-00001.xml", "all-00002.xml"]
    assert paths[0].parent == config.download_dir / "eutils" / query_folder("asthma budesonide")
    (search,) = server.paths("/eutils/esearch.fcgi")
    assert (search["term"], search["usehistory"], search["db"]) == ("asthma budesonide", "y", "pubmed")
    fetches = server.paths("/eutils/efetch.fcgi")
    assert [(f["retstart"], f["retmax"]) for f in fetches] == [("0", "2"), ("2", "2"), ("4", "2")]
    assert all(f["WebEnv"] == "MCID_TEST" and f["query_key"] == "1" and f["retmode"] == "xml" for f in fetches)
    for params in [search, *fetches]:
        assert (params["tool"], params["email"], params["api_key"]) == ("pubmed-rag", "dev@example.org", "SECRET")
    pmids = [e.pmid for path in paths for e in read_source(path)]
    assert pmids == list(records)  # every record once, in the search's order


def test_more_than_10000_results_are_split_by_publication_date(server, config, monkeypatch):
    monkeypatch.setattr("ingest.eutils.ESEARCH_LIMIT", 2)  # 6 records, at most 2 per search
    records = efetch_records()
    days = [date(1990, 1, 1), date(1995, 6, 1), date(2001, 1, 1), date(2001, 1, 1), date(2010, 3, 3)]
    days += [date(2020, 12, 31)]
    FakePubMed(server, dict(zip(records, days, strict=True)), records)
    client = fast_client()
    paths = download_query("asthma", config, client)
    searches = server.paths("/eutils/esearch.fcgi")
    assert searches[0].get("mindate") is None  # the whole query first: 6 > 2
    dated = searches[1:]
    assert all(s["datetype"] == "pdat" and s["mindate"] and s["maxdate"] for s in dated)
    fetches = server.paths("/eutils/efetch.fcgi")
    assert all(int(f["retmax"]) <= 2 for f in fetches) and len(fetches) >= 3
    pmids = sorted(e.pmid for path in paths for e in read_source(path))
    assert pmids == sorted(records)  # nothing lost, nothing twice


def test_esearch_error_names_the_query(server, config):
    server.routes["/eutils/esearch.fcgi"] = lambda p: (
        200,
        b'{"esearchresult": {"ERROR": "bad"}, "error": "Invalid query"}',
        {},
    )
    with pytest.raises(SourceError, match=r"pubmed:bad query.*Invalid query"):
        download_query("bad query", config, fast_client())


def test_efetch_answer_that_is_not_pubmed_xml_fails(server, config):
    records = efetch_records()
    FakePubMed(server, dict.fromkeys(records, date(2018, 5, 17)), records)
    server.routes["/eutils/efetch.fcgi"] = lambda p: (
        200,
        b"<eFetchResult><ERROR>Unable to obtain query #1</ERROR></eFetchResult>",
        {},
    )
    with pytest.raises(SourceError, match="Unable to obtain query #1"):
        download_query("asthma", config, fast_client())


def test_eutils_rate_depends_on_the_api_key(config):
    assert EUtils(config).client.min_interval == pytest.approx(1 / 3)
    assert EUtils(replace(config, ncbi_api_key="k")).client.min_interval == pytest.approx(1 / 10)


# --- update and baseline files --------------------------------------------------------------------


def update_file(pmid: str, title: str) -> bytes:
    return gzip.compress(
        f'<PubmedArticleSet><PubmedArticle><MedlineCitation><PMID Version="1">{pmid}</PMID><Article>'
        f"<Journal><Title>J</Title></Journal><ArticleTitle>{title}</ArticleTitle><Abstract><AbstractText>"
        f"{title} abstract.</AbstractText></Abstract></Article></MedlineCitation></PubmedArticle>"
        "</PubmedArticleSet>".encode()
    )


def serve_folder(server: Server, folder: str, files: dict[str, bytes], md5: dict[str, str] | None = None) -> None:
    links = "".join(f'<a href="{n}">{n}</a> <a href="{n}.md5">{n}.md5</a>\n' for n in files)
    listing = f"<html><body><a href='../'>Parent</a>\n<pre>{links}README.txt</pre></body></html>".encode()
    server.routes[f"/pubmed/{folder}/"] = lambda p: (200, listing, {"Content-Type": "text/html"})
    for name, body in files.items():
        digest = (md5 or {}).get(name, hashlib.md5(body).hexdigest())
        server.routes[f"/pubmed/{folder}/{name}"] = lambda p, b=body: (200, b, {})
        server.routes[f"/pubmed/{folder}/{name}.md5"] = lambda p, n=name, d=digest: (
            200,
            f"MD5({n})= {d}\n".encode(),
            {},
        )


UPDATES = {
    "pubmed24n0002.xml.gz": update_file("2", "Second version"),
    "pubmed24n0001.xml.gz": update_file("2", "First version"),
    "pubmed24n0003.xml.gz": update_file("3", "Third"),
}


def test_new_update_files_are_downloaded_verified_and_ordered(server, config):
    serve_folder(server, "updatefiles", UPDATES)
    paths = new_files("updates", config, {"pubmed24n0001.xml.gz"}, client=fast_client())
    assert [p.name for p in paths] == ["pubmed24n0002.xml.gz", "pubmed24n0003.xml.gz"]
    assert all(p.read_bytes() == UPDATES[p.name] for p in paths)
    assert not list(config.download_dir.rglob("*.part"))
    downloads = len(server.paths("/pubmed/updatefiles/pubmed24n0002.xml.gz"))
    new_files("updates", config, {"pubmed24n0001.xml.gz"}, client=fast_client())  # already downloaded: reused
    assert len(server.paths("/pubmed/updatefiles/pubmed24n0002.xml.gz")) == downloads == 1


def test_md5_mismatch_is_an_error_and_the_download_is_removed(server, config):
    serve_folder(server, "baseline", UPDATES, md5={"pubmed24n0003.xml.gz": "0" * 32})
    with pytest.raises(SourceError, match="MD5") as info:
        new_files("baseline", config, set(), client=fast_client())
    assert "pubmed24n0003.xml.gz" in str(info.value)
    assert not (config.download_dir / "baseline" / "pubmed24n0003.xml.gz").exists()


def test_cli_pubmed_updates_applies_files_in_order_then_is_a_no_op(server, config):
    serve_folder(server, "updatefiles", UPDATES)
    flags = ["--index-dir", config.index_dir, "--download-dir", config.download_dir]
    flags += ["--pubmed-files-url", config.pubmed_files_url, "--quiet", "--json"]
    first = run_ingest("--pubmed-updates", "--max-files", "2", *flags)
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["added"] == 1  # PMID 2, twice
    second = run_ingest("--pubmed-updates", *flags)
    assert second.returncode == 0, second.stderr
    assert [Path(s).name for s in json.loads(second.stdout)["sources"]] == ["pubmed24n0003.xml.gz"]
    assert ingested_names(config.index_dir) == set(UPDATES)
    from tests.test_index import stored

    assert stored(config.index_dir)["2"].title == "Second version"  # the later file won
    third = run_ingest("--pubmed-updates", *flags)
    assert third.returncode == 0 and json.loads(third.stdout)["sources"] == []


def test_cli_pubmed_query_source(server, config):
    records = efetch_records()
    FakePubMed(server, dict.fromkeys(records, date(2018, 5, 17)), records)
    result = run_ingest(
        "pubmed:asthma",
        *("--index-dir", config.index_dir, "--download-dir", config.download_dir),
        *("--eutils-url", config.eutils_url, "--quiet", "--json"),
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["added"] == 5  # 6 records, one without an abstract


def test_cli_unreachable_ncbi_fails_cleanly(config):
    result = run_ingest(
        "--pubmed-updates", "--index-dir", config.index_dir, "--pubmed-files-url", "http://127.0.0.1:9/"
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr and "cannot connect" in result.stderr
    assert not config.index_dir.exists() or not list(config.index_dir.glob("gen-*"))


def test_query_batches_ingest_like_files(server, config):
    records = efetch_records()
    FakePubMed(server, dict.fromkeys(records, date(2018, 5, 17)), records)
    paths = download_query("asthma", config, fast_client())
    summary = ingest_files(paths, config, read=read_source, encoder=HashingEncoder(), progress=False)
    assert summary.added == 5 and summary.without_abstract == 1
