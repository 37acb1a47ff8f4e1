"""The malformed-input catalogue: every bad source and every damaged index the hardening pass found
(issue #14), run through the real ``python -m ingest`` entry point against a small index.

Each case writes its own small file, runs the command line in this process (the hashing encoder of
``conftest.py`` stands in for the model: nothing is downloaded or loaded) and checks three things:
the exit status, a message that names the input, and an index that is byte-identical afterwards.
A source that cannot be read fails the run (exit 2); a record that cannot be used is skipped with
a warning naming file, line and value (exit 0) and, when nothing usable is left, nothing is
committed. A damaged index is refused before any text is embedded.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

import index.encoding
from chatbot.chat import Chatbot
from config import Config
from index.segments import TOMBSTONES
from index.storage import MANIFEST, METADATA, VECTORS, IndexDir
from index.writer import ingest_files
from ingest import read_source
from ingest.__main__ import main as ingest_main
from tests.conftest import HashingEncoder, ScriptedGenerator
from tests.test_index import snapshot, stored
from tests.test_ingest import record, write_xml

EXISTING = 8454279  # a PMID already in the index: a Unicode-digit twin must not overwrite it
RECORDS = [
    {"pmid": str(EXISTING), "title": "Aspirin after stroke", "abstract": "Aspirin reduced recurrent stroke."},
    {"pmid": "100", "title": "Statins and muscle pain", "abstract": "Muscle symptoms were equally common."},
]
SECOND_METADATA, SECOND_VECTORS = "articles-000001.sqlite", "vectors-000001.faiss"  # the second ingest's segments
ARABIC_INDIC = str(EXISTING).translate(str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩"))
HUGE = "9" * 25  # beyond 64 bits
BOMB = (
    '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
    + "".join(f'<!ENTITY lol{i} "{("&lol%s;" % (i - 1 if i > 1 else "")) * 10}">' for i in range(1, 10))
    + "]>\n<PubmedArticleSet>"
    + record(pmid="300", title="<ArticleTitle>&lol9;</ArticleTitle>")
    + "</PubmedArticleSet>\n"
)


class Case:
    """A source file to write, the exit status expected and what the messages must say."""

    def __init__(self, name: str, content: bytes | str | Callable[[Path], None], status: int, *says: str) -> None:
        self.name, self.content, self.status, self.says = name, content, status, says

    def write(self, folder: Path) -> Path:
        path = folder / self.name
        if callable(self.content):
            self.content(path)
        else:
            path.write_bytes(self.content if isinstance(self.content, bytes) else self.content.encode("utf-8"))
        return path


def _jsonl(*rows: dict) -> str:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def _truncated_gzip(path: Path) -> None:
    data = gzip.compress(("<PubmedArticleSet>" + record() * 50 + "</PubmedArticleSet>").encode())
    path.write_bytes(data[: len(data) // 2])


def _xxe(path: Path) -> None:
    secret = path.with_name("secret.txt")
    secret.write_text("TOPSECRET")
    path.write_text(
        f'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY s SYSTEM "file://{secret}">]>\n'
        "<PubmedArticleSet>" + record(pmid="&s;") + "</PubmedArticleSet>"
    )


def _xml(*records: str) -> Callable[[Path], None]:
    return lambda path: write_xml(path, *records)


CASES = {
    # whole sources that cannot be read: exit 2, every one named, nothing written
    "empty-xml": Case("empty.xml", b"", 2, "empty.xml", "not well-formed"),
    "empty-csv": Case("empty.csv", b"", 2, "empty.csv", "header has no pmid"),
    "truncated-gzip": Case("truncated.xml.gz", _truncated_gzip, 2, "truncated.xml.gz"),
    "binary-xml": Case("binary.xml", bytes(range(256)) * 8, 2, "binary.xml", "not well-formed"),
    "binary-jsonl": Case("binary.jsonl", bytes(range(256)) * 8, 2, "binary.jsonl", "cannot be read"),
    "wrong-encoding-csv": Case("latin1.csv", "pmid,title\n5,Café\n".encode("latin-1"), 2, "latin1.csv", "UTF-8"),
    "wrong-encoding-medline": Case("latin1.nbib", "PMID- 5\nTI  - Café\n".encode("latin-1"), 2, "latin1.nbib"),
    "not-jsonl": Case("notes.jsonl", "just some notes\n", 2, "notes.jsonl", "expected JSON Lines"),
    "wrong-root-xml": Case("other.xml", "<catalog><book id='1'/></catalog>\n", 2, "other.xml", "<catalog>"),
    "csv-unclosed-quote": Case(
        "quote.csv", 'pmid,title,abstract\n500,"Unclosed,Text.\n501,Next,Row.\n', 2, "quote.csv", "line 2"
    ),
    # sources with nothing usable: a warning naming them, exit 0, nothing committed
    "empty-jsonl": Case("empty.jsonl", b"", 0, "empty.jsonl", "no usable record"),
    "empty-medline": Case("empty.nbib", b"\n", 0, "empty.nbib", "no usable record"),
    "empty-pubmed-set": Case("none.xml", "<PubmedArticleSet></PubmedArticleSet>\n", 0, "none.xml", "no usable record"),
    "bad-jsonl-line": Case(
        "bad-line.jsonl", _jsonl({"pmid": "x1", "title": "T"}) + "{not json\n", 0, "bad-line.jsonl:2", "invalid JSON"
    ),
    "xxe": Case("xxe.xml", _xxe, 0, "xxe.xml:2", "no PMID"),  # the entity is never read, so no PMID
    "entity-bomb": Case("bomb.xml", BOMB, 2, "bomb.xml", "amplification"),
    # PMIDs and years that are not ASCII digits in PubMed's range: skipped, naming file, line, value
    "arabic-indic-pmid-xml": Case(
        "arabic.xml",
        _xml(record(pmid=ARABIC_INDIC, title="<ArticleTitle>Other</ArticleTitle>")),
        0,
        "arabic.xml:2",
        ARABIC_INDIC,
    ),
    "arabic-indic-pmid-jsonl": Case(
        "arabic.jsonl",
        _jsonl({"pmid": ARABIC_INDIC, "title": "Other", "abstract": "Replaced?"}),
        0,
        "arabic.jsonl:1",
        ARABIC_INDIC,
    ),
    "superscript-year-csv": Case("year.csv", "pmid,title,abstract,year\n600,T,A.,²⁰²⁰\n", 0, "year.csv:2", "²⁰²⁰"),
    "superscript-pmid-medline": Case("sup.nbib", "PMID- 6²\nTI  - T\nAB  - A.\n", 0, "sup.nbib:1", "6²"),
    "huge-pmid-jsonl": Case(
        "huge.jsonl", _jsonl({"pmid": HUGE, "title": "T", "abstract": "A."}), 0, "huge.jsonl:1", HUGE
    ),
    "huge-year-jsonl": Case(
        "year.jsonl",
        _jsonl({"pmid": "601", "title": "T", "abstract": "A.", "year": int(HUGE)}),
        0,
        "year.jsonl:1",
        HUGE,
    ),
    "huge-pmid-xml": Case("huge.xml", _xml(record(pmid=HUGE)), 0, "huge.xml:2", HUGE),
    "huge-version-xml": Case(
        "version.xml", _xml(record(pmid="602").replace('Version="1"', f'Version="{HUGE}"')), 0, "version.xml:2", HUGE
    ),
    "huge-pmid-deletion": Case(
        "delete.xml", _xml(f"<DeleteCitation><PMID>{HUGE}</PMID></DeleteCitation>"), 0, "delete.xml:2", HUGE
    ),
    # a real file whose name has glob characters is read as that file
    "brackets-in-name": Case("pubmed[1].xml", _xml(record(pmid="x")), 0, "pubmed[1].xml:2"),
}


@pytest.fixture(scope="module")
def base_index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("catalogue")
    source = folder / "base.jsonl"
    source.write_text(_jsonl(*RECORDS), encoding="utf-8")
    config = Config(index_dir=folder / "index")
    ingest_files([source], config, read=read_source, encoder=HashingEncoder(), progress=False)
    revision = folder / "revision.jsonl"  # a second ingest: a second segment of each kind, and a tombstone
    revision.write_text(_jsonl({**RECORDS[1], "abstract": "Muscle symptoms were equally common on placebo."}))
    ingest_files([revision], config, read=read_source, encoder=HashingEncoder(), progress=False)
    return config.index_dir


@pytest.fixture
def live(base_index: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, HashingEncoder]:
    """A fresh copy of the base index, and the encoder the command line will be given (to count calls)."""
    index_dir = tmp_path / "index"
    shutil.copytree(base_index, index_dir)
    encoder = HashingEncoder()
    monkeypatch.setattr(index.encoding, "_load", lambda manifest, config: encoder)
    for name in [n for n in os.environ if n.startswith("PUBMED_RAG_") and n != "PUBMED_RAG_RERANK"]:
        monkeypatch.delenv(name)
    return index_dir, encoder


def ingest(*args: object) -> int:
    return ingest_main([*map(str, args), "--quiet"])


def messages(capsys: pytest.CaptureFixture, caplog: pytest.LogCaptureFixture) -> str:
    return capsys.readouterr().err + caplog.text


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_malformed_source_is_named_and_the_index_stays_byte_identical(case, live, tmp_path, capsys, caplog):
    index_dir, _ = live
    before = snapshot(index_dir)
    path = case.write(tmp_path)
    status = ingest(path, "--index-dir", index_dir)
    said = messages(capsys, caplog)
    assert status == case.status, said
    assert all(text in said for text in case.says), said
    assert "Traceback" not in said and "TOPSECRET" not in said
    assert snapshot(index_dir) == before
    assert stored(index_dir)[str(EXISTING)].title == RECORDS[0]["title"]  # never overwritten by a look-alike


def test_a_missing_path_does_not_hide_the_other_sources_errors(live, tmp_path, capsys, caplog):
    index_dir, encoder = live
    before = snapshot(index_dir)
    missing, bad = tmp_path / "missing.xml", CASES["truncated-gzip"].write(tmp_path)
    good = tmp_path / "good.jsonl"
    good.write_text(_jsonl({"pmid": "700", "title": "T", "abstract": "A."}))
    assert ingest(missing, good, bad, "--index-dir", index_dir) == 2
    said = messages(capsys, caplog)
    assert "2 sources could not be read" in said and str(missing) in said and str(bad) in said, said
    assert said.index(str(missing)) < said.index(str(bad))  # in the order given
    assert snapshot(index_dir) == before and encoder.calls == 0


def test_a_missing_path_and_a_malformed_record_under_strict_are_both_listed(live, tmp_path, capsys, caplog):
    index_dir, _ = live
    bad = CASES["huge-pmid-jsonl"].write(tmp_path)
    assert ingest(tmp_path / "missing.csv", bad, "--index-dir", index_dir, "--strict") == 2
    said = messages(capsys, caplog)
    assert "missing.csv: no such file" in said and f"{bad}:1: malformed record" in said, said


# --- a damaged index: refused before any embedding, nothing left behind ---------------------------


def _live(index_dir: Path) -> Path:
    return IndexDir(index_dir).require_current()


def _garbage(name: str) -> Callable[[Path], Path]:
    def damage(index_dir: Path) -> Path:
        path = _live(index_dir) / name
        path.write_bytes(b"garbage, not what this file should hold\n" * 20)
        return path

    return damage


def _truncate(name: str) -> Callable[[Path], Path]:
    def damage(index_dir: Path) -> Path:
        path = _live(index_dir) / name
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        return path

    return damage


def _index_dir_is_a_file(index_dir: Path) -> Path:
    shutil.rmtree(index_dir)
    index_dir.write_text("not a folder\n")
    return index_dir


def _current_names_a_missing_generation(index_dir: Path) -> Path:
    (index_dir / "CURRENT").write_text("gen-000009\n")
    return index_dir / "CURRENT"


def _articles_table_dropped(index_dir: Path) -> Path:
    path = _live(index_dir) / METADATA
    with sqlite3.connect(path) as db:
        db.execute("DROP TABLE articles")
    return path


def _missing(name: str) -> Callable[[Path], Path]:
    def damage(index_dir: Path) -> Path:
        path = _live(index_dir) / name
        path.unlink()
        return path

    return damage


DAMAGE = {
    "index-dir-is-a-file": _index_dir_is_a_file,
    "current-names-a-missing-generation": _current_names_a_missing_generation,
    "corrupt-manifest": _garbage(MANIFEST),
    "truncated-manifest": _truncate(MANIFEST),
    "garbage-metadata": _garbage(METADATA),
    "truncated-metadata": _truncate(METADATA),
    "metadata-without-articles": _articles_table_dropped,
    "garbage-vectors": _garbage(VECTORS),
    "truncated-vectors": _truncate(VECTORS),
    # the segment layout (index/segments.py, index/meta_segments.py): every file the manifest lists
    "garbage-second-metadata-segment": _garbage(SECOND_METADATA),
    "truncated-second-metadata-segment": _truncate(SECOND_METADATA),
    "missing-second-metadata-segment": _missing(SECOND_METADATA),
    "truncated-second-vector-segment": _truncate(SECOND_VECTORS),
    "missing-second-vector-segment": _missing(SECOND_VECTORS),
    "garbage-segment-ids": _garbage("vectors-000001.ids.npy"),
    "garbage-tombstones": _garbage(TOMBSTONES),
}


def _state(path: Path) -> dict[str, str]:
    return snapshot(path) if path.is_dir() else {"": path.read_text()}


@pytest.mark.parametrize("damage", DAMAGE.values(), ids=DAMAGE.keys())
def test_damaged_index_is_named_before_any_embedding_and_nothing_is_left(damage, live, tmp_path, capsys, caplog):
    index_dir, encoder = live
    damaged = damage(index_dir)
    before = _state(index_dir)
    source = tmp_path / "new.jsonl"
    source.write_text(_jsonl({"pmid": "800", "title": "New", "abstract": "Something new to embed."}))
    assert ingest(source, "--index-dir", index_dir) == 2
    said = messages(capsys, caplog)
    error = [line for line in said.splitlines() if line.startswith("error: ")]
    assert len(error) == 1 and str(damaged) in error[0], said
    assert "Traceback" not in said and encoder.calls == 0  # found before any embedding
    assert _state(index_dir) == before  # no staging folder, no lock left in a damaged folder's place


def test_the_base_index_has_the_segments_the_damage_cases_break(live):
    generation = _live(live[0])
    for name in (METADATA, SECOND_METADATA, VECTORS, SECOND_VECTORS, "vectors-000001.ids.npy", TOMBSTONES):
        assert (generation / name).is_file(), name


@pytest.mark.parametrize("damage", ["garbage-metadata", "truncated-vectors", "corrupt-manifest"])
def test_index_stats_reports_a_damaged_file_instead_of_succeeding(damage, live, capsys):
    from index.__main__ import main as index_main

    index_dir, _ = live
    damaged = DAMAGE[damage](index_dir)
    assert index_main(["stats", "--index-dir", str(index_dir)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and str(damaged) in err and "Traceback" not in err


READ_DAMAGE = [name for name in DAMAGE if name != "index-dir-is-a-file"]  # a file there: "no index in" it


@pytest.mark.parametrize("damage", READ_DAMAGE)
def test_index_search_names_a_damaged_file_instead_of_a_traceback(damage, live, capsys, monkeypatch):
    import index.search
    from index.__main__ import main as index_main

    index_dir, encoder = live
    monkeypatch.setattr(index.search, "load_encoder", lambda *args, **kwargs: encoder)
    damaged = DAMAGE[damage](index_dir)
    assert index_main(["search", "aspirin stroke", "--index-dir", str(index_dir), "--retriever", "dense"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and str(damaged) in err and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1 and encoder.calls == 0  # refused before the query is embedded


@pytest.mark.parametrize("damage", ["current-names-a-missing-generation", "garbage-metadata", "truncated-vectors"])
def test_the_app_names_a_damaged_index_before_loading_anything(damage, live, capsys, monkeypatch):
    import app

    def never(*args, **kwargs):
        raise AssertionError("the app went on to load models with a damaged index")

    monkeypatch.setattr(app, "open_service", never)
    index_dir, _ = live
    damaged = DAMAGE[damage](index_dir)
    assert app.main(["--index-dir", str(index_dir)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and str(damaged) in err and "Traceback" not in err, err


def test_a_search_of_an_intact_index_passes_the_checks(live, capsys, monkeypatch):
    import index.search
    from index.__main__ import main as index_main

    index_dir, encoder = live
    monkeypatch.setattr(index.search, "load_encoder", lambda *args, **kwargs: encoder)
    assert index_main(["search", "aspirin stroke", "--index-dir", str(index_dir), "-k", "1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["pmid"] == str(EXISTING)


# --- a huge record: its text is stored whole, but only EMBED_CHARS are embedded or read per question ---


class RecordingEncoder(HashingEncoder):
    def __init__(self) -> None:
        super().__init__()
        self.longest = 0  # characters of the longest text encoded
        self.total = 0

    def encode(self, texts):
        self.longest = max([self.longest, *map(len, texts)])
        self.total += sum(map(len, texts))
        return super().encode(texts)


def test_a_megabyte_abstract_is_stored_whole_but_embedded_only_in_part(tmp_path):
    from index.search import PubMedIndex
    from ingest.records import EMBED_CHARS
    from webui.passages import matched_passages

    words = " ".join(f"Finding {i} was consistent with reduced recurrent stroke." for i in range(20_000))
    source = tmp_path / "huge.jsonl"
    source.write_text(_jsonl({"pmid": "900", "title": "Aspirin after stroke", "abstract": words}))
    encoder, config = RecordingEncoder(), Config(index_dir=tmp_path / "index")
    assert len(words) > 1_000_000
    ingest_files([source], config, read=read_source, encoder=encoder, progress=False)
    assert 0 < encoder.longest <= EMBED_CHARS
    assert stored(config.index_dir)["900"].abstract == words  # the stored text is whole

    index = PubMedIndex(config.index_dir, encoder=encoder)
    [hit] = index.search("aspirin recurrent stroke", k=1)
    encoder.total = 0
    matched_passages("aspirin recurrent stroke", [hit], encoder)  # the source card's passage
    assert encoder.total <= EMBED_CHARS + 100

    generator = ScriptedGenerator("Aspirin reduced recurrent stroke [1].")
    bot = Chatbot(index, generator, Config(top_k=1, min_score=0.0, gate="off"), encoder=encoder)  # gate: MiniLM
    encoder.total = 0
    assert bot.ask("Does aspirin prevent recurrent stroke?").citations
    # the prompt's excerpts (chatbot/passages.py) and the support check each read the embedded part only
    assert encoder.total <= 2 * EMBED_CHARS + 1_000
    assert sum(len(m["content"]) for m in generator.messages) <= EMBED_CHARS + 5_000  # so did the model

    quoting = Config(top_k=1, min_score=0.0, gate="off", answer="extractive")  # the quoted-evidence answer
    encoder.total = 0
    assert Chatbot(index, generator, quoting, encoder=encoder).ask("Does aspirin prevent stroke?").citations
    assert encoder.total <= 2 * EMBED_CHARS + 1_000  # the prompt's excerpts and the quotes: the embedded part only


def test_a_read_only_index_folder_is_one_clear_line(live, tmp_path):
    """The real command line, as a user without write access (root keeps its permission bypass
    otherwise, so the child runs without CAP_DAC_OVERRIDE)."""
    import subprocess
    import sys

    from tests.conftest import REPO

    index_dir, _ = live
    source = tmp_path / "new.jsonl"
    source.write_text(_jsonl({"pmid": "800", "title": "New", "abstract": "Something new."}))
    before = snapshot(index_dir)
    command = [sys.executable, "-m", "tests.ingest_driver", str(source), "--index-dir", str(index_dir), "--quiet"]
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("running as root without setpriv: cannot take away root's write permission")
        command = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--", *command]
    index_dir.chmod(0o555)
    try:
        result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    finally:
        index_dir.chmod(0o755)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.startswith(f"error: {index_dir}: cannot write there (Permission denied)"), result.stderr
    assert snapshot(index_dir) == before
