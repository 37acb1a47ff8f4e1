"""What a run does with bad input: every unreadable source is reported, nothing is committed, the
index stays byte-identical; malformed records are skipped (or, with ``strict``, fail their file);
the summary says added / replaced / deleted / unchanged / skipped / failed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from config import Config
from index.writer import ingest_files
from ingest import SourceError, read_source
from ingest.records import IngestFailed
from tests.conftest import REPO, HashingEncoder
from tests.test_index import UPDATE, snapshot, stored, truncated_gzip

DATA = Path(__file__).parent / "data"
NEJM = DATA / "pubmed-29768149.xml"


def ingest(paths, config, encoder=None, **options):
    return ingest_files(
        list(paths), config, read=read_source, encoder=encoder or HashingEncoder(), progress=False, **options
    )


@pytest.fixture
def indexed(config) -> Config:
    ingest([NEJM], config)
    return config


def not_xml(folder: Path) -> Path:
    path = folder / "notes.xml"
    path.write_text("not xml at all\n")
    return path


def test_every_bad_source_is_reported_and_nothing_is_written(tmp_path, indexed):
    before = snapshot(indexed.index_dir)
    bad_gzip, bad_xml = truncated_gzip(tmp_path), not_xml(tmp_path)
    with pytest.raises(IngestFailed) as info:
        ingest([bad_gzip, DATA / "pubmed2.xml", bad_xml, DATA / "pubmed4.xml"], indexed)
    failed = info.value
    assert [e.source for e in failed.errors] == [str(bad_gzip), str(bad_xml)]  # both, in order
    assert isinstance(failed, SourceError) and failed.source == str(bad_gzip)
    message = str(failed)
    assert message.startswith("2 sources could not be read; nothing was written")
    assert str(bad_gzip) in message and str(bad_xml) in message and "not well-formed" in message
    assert failed.summary.failed == 2
    assert snapshot(indexed.index_dir) == before  # byte-identical: no staging, no cache left


def test_files_after_a_failed_one_are_still_read(tmp_path, indexed):
    """The good files after the failure are read (so their own problems show), just not committed."""
    with pytest.raises(IngestFailed) as info:
        ingest([truncated_gzip(tmp_path), DATA / "pubmed2.xml"], indexed)
    assert info.value.summary.added == 0  # counts are only settled for a committed run
    assert "11748933" not in stored(indexed.index_dir)


def test_malformed_record_is_skipped_and_counted(tmp_path, config, caplog):
    path = tmp_path / "mixed.jsonl"
    path.write_text('{"pmid": "1", "title": "Asthma", "abstract": "Wheeze."}\n{"pmid": "x2", "title": "bad"}\n')
    summary = ingest([path], config)
    assert (summary.added, summary.skipped, summary.failed) == (1, 1, 0)
    assert f"{path}:2" in caplog.text and "PMID x2" in caplog.text


def test_strict_fails_the_file_of_a_malformed_record(tmp_path, indexed):
    before = snapshot(indexed.index_dir)
    path = tmp_path / "mixed.jsonl"
    path.write_text('{"pmid": "1", "title": "Asthma", "abstract": "Wheeze."}\n{"pmid": "x2", "title": "bad"}\n')
    with pytest.raises(IngestFailed) as info:
        ingest([path, DATA / "pubmed2.xml"], indexed, strict=True)
    (error,) = info.value.errors
    assert error.source == f"{path}:2" and "PMID x2" in str(error) and "--strict" in str(error)
    assert snapshot(indexed.index_dir) == before


def test_summary_counts_every_kind_of_change(tmp_path, config):
    ingest([DATA / "pubmed2.xml", NEJM], config)
    revised = tmp_path / "revised.xml"
    revised.write_text((DATA / "pubmed2.xml").read_text().replace("<AbstractText>", "<AbstractText>New. ", 1))
    deletion = tmp_path / "delete.xml"
    deletion.write_text(
        '<PubmedArticleSet><DeleteCitation><PMID Version="1">29768149</PMID></DeleteCitation></PubmedArticleSet>'
    )
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"pmid": "7", "title": "T", "abstract": "A."}\n{"pmid": "?"}\n')
    summary = ingest([revised, deletion, bad], config)
    counts = {k: v for k, v in summary.as_dict().items() if k != "sources"}
    assert counts == {
        "added": 1,
        "replaced": 1,
        "unchanged": 1,
        "deleted": 1,
        "skipped": 1,
        "without_abstract": 0,
        "embedded": 2,
        "failed": 0,
        "resumed": 0,
    }


# --- the command line -----------------------------------------------------------------------------


def run_ingest(*args: object) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PUBMED_RAG_")}
    return subprocess.run(
        [sys.executable, "-m", "tests.ingest_driver", *map(str, args)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_reports_all_failures_with_a_summary_and_exit_2(tmp_path, indexed):
    before = snapshot(indexed.index_dir)
    bad_gzip, bad_xml = truncated_gzip(tmp_path), not_xml(tmp_path)
    result = run_ingest(bad_gzip, UPDATE, bad_xml, "--index-dir", indexed.index_dir, "--quiet", "--json")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "\nerror: 2 sources could not be read" in "\n" + result.stderr
    assert str(bad_gzip) in result.stderr and str(bad_xml) in result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1])["failed"] == 2
    assert snapshot(indexed.index_dir) == before


def test_cli_strict_and_plain_summary(tmp_path, indexed):
    path = tmp_path / "mixed.csv"
    path.write_text("pmid,title,abstract\n1,Asthma,Wheeze.\nx,Bad,Row.\n")
    lenient = run_ingest(path, "--index-dir", indexed.index_dir)
    assert lenient.returncode == 0, lenient.stderr
    assert f"{path}:3 (PMID x)" in lenient.stderr
    last = lenient.stdout.strip().splitlines()[-1]
    assert last.startswith("Done: added 1, replaced 0, unchanged 0, deleted 0, skipped 1,") and "failed 0" in last
    path.write_text("pmid,title,abstract\n2,Asthma,Wheeze.\nx,Bad,Row.\n")
    strict = run_ingest(path, "--index-dir", indexed.index_dir, "--strict", "--quiet")
    assert strict.returncode == 2 and f"{path}:3: malformed record (PMID x)" in strict.stderr
    assert strict.stdout.startswith("Nothing written (1 failed): added 0")
