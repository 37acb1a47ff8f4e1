"""The app's building blocks without Gradio: filters, models, live index swap, ingestion tab, deployment."""

from __future__ import annotations

import fnmatch
import json
import shutil
import threading
from collections.abc import Sequence
from pathlib import Path

import pytest

from config import DEFAULT_GENERATOR, Config
from index.filters import Filters
from index.hybrid import RETRIEVERS
from index.search import Hit, PubMedIndex
from index.storage import IndexDir, IndexNotFound
from index.writer import ingest_files
from ingest.records import Article, Section
from ingest.sources import read_source
from tests.conftest import DATA, HashingEncoder, ScriptedGenerator
from webui import deploy
from webui.ingest_tab import add_abstracts, upload_types
from webui.models import Models, config_for
from webui.passages import matched_passages
from webui.render import render_status
from webui.service import ChatService, ChatSettings, SessionRetriever

# --- retrieval ------------------------------------------------------------------------------------


def test_a_session_searches_with_its_own_retriever_and_filters(demo_index: Path) -> None:
    index = PubMedIndex(demo_index, encoder=HashingEncoder())
    queries = ["risk factors in older patients", "surgery outcomes and pain", "children with asthma"]
    for name in ("dense", "bm25"):
        session = SessionRetriever(index, retriever=name, filters=Filters())
        assert [[h.pmid for h in session.search(q, 5)] for q in queries] == [
            [h.pmid for h in index.search(q, 5, retriever=name)] for q in queries
        ]
    dense, bm25 = (SessionRetriever(index, retriever=r, filters=Filters()) for r in ("dense", "bm25"))
    assert any(dense.search(q, 5) != bm25.search(q, 5) for q in queries)  # precondition: the choice matters
    recent = SessionRetriever(index, retriever="", filters=Filters(year_from=2021))
    hits = recent.search(queries[0], 5)
    assert len(hits) == 5 and all(h.article.year >= 2021 for h in hits)


def test_the_retriever_menu_lists_the_index_default_first(demo_index: Path) -> None:
    index = PubMedIndex(demo_index, encoder=HashingEncoder())
    service = ChatService(index, Models(ScriptedGenerator("x"), Config()), Config())
    labels, names = zip(*service.retrievers, strict=True)
    assert names[0] == index.retriever and labels[0].endswith("(default)")
    assert set(names) == set(RETRIEVERS) and {"dense", "bm25", "hybrid"} <= set(names)


# --- models ---------------------------------------------------------------------------------------


def test_a_preset_opens_with_its_own_weights_and_an_id_as_the_generator() -> None:
    base = Config(generator="/models/local-folder", model="")
    preset = config_for("biomistral-7b", base)
    assert (preset.model, preset.generator) == ("biomistral-7b", DEFAULT_GENERATOR)
    other = config_for("Qwen/Qwen2.5-7B-Instruct", Config(model="meditron-7b"))
    assert (other.model, other.generator) == ("", "Qwen/Qwen2.5-7B-Instruct")


def test_models_offer_the_default_then_the_configured_ones_without_duplicates() -> None:
    models = Models(ScriptedGenerator("x"), Config(models=f" a , {ScriptedGenerator.name}, b,,"))
    assert models.names == [ScriptedGenerator.name, "a", "b"]
    assert models.is_loaded("") and not models.is_loaded("a")
    with pytest.raises(ValueError, match="not offered"):
        models.get("c")


# --- live index -----------------------------------------------------------------------------------


@pytest.fixture
def live(tmp_path: Path) -> ChatService:
    """A service over a small, writable index of real PubMed XML, built with the hashing encoder."""
    config = Config(index_dir=tmp_path / "index", top_k=3, min_score=0.0, download_dir=tmp_path / "downloads")
    ingest_files(
        [DATA / "pubmed1.xml", DATA / "pubmed2.xml"], config, read=read_source, encoder=HashingEncoder(), progress=False
    )
    index = PubMedIndex(config.index_dir, encoder=HashingEncoder())
    return ChatService(index, Models(ScriptedGenerator("Answer [1]."), config), config)


def _jsonl(path: Path, *records: dict) -> Path:
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n", encoding="utf-8")
    return path


NEW_RECORD = {
    "pmid": "990001",
    "title": "Zinc lozenges and the common cold",
    "abstract": "Zinc lozenges shortened common cold duration in adults.",
    "year": 2022,
}


def test_add_abstracts_commits_and_swaps_the_index_while_old_turns_finish(live: ChatService, tmp_path: Path) -> None:
    before = live.index
    old_bot = live.chatbot(ChatSettings())  # a turn that started before the ingest
    steps: list[str] = []
    summary = add_abstracts(
        [str(_jsonl(tmp_path / "new.jsonl", NEW_RECORD))],
        "",
        service=live,
        progress=lambda fraction, desc="": steps.append(desc),
    )
    assert summary.startswith("**Done.**") and "added 1" in summary and "new.jsonl" in summary
    assert f"{len(before) + 1:,} abstracts" in summary
    assert live.index is not before and len(live.index) == len(before) + 1
    assert live.chatbot(ChatSettings()).retrieve("zinc lozenges common cold")[0].pmid == "990001"
    assert all(h.pmid != "990001" for h in old_bot.retrieve("zinc lozenges common cold"))  # old generation
    assert steps[0] == "Checking the sources" and steps[-1] == "Opening the new index"
    assert add_abstracts([str(tmp_path / "new.jsonl")], "", service=live).startswith("Nothing to do")


def test_add_abstracts_that_fails_changes_nothing(live: ChatService, tmp_path: Path) -> None:
    before, generation = live.index, IndexDir(live.config.index_dir).current()
    good = _jsonl(tmp_path / "good.jsonl", NEW_RECORD)
    broken = tmp_path / "broken.xml.gz"
    broken.write_bytes(b"\x1f\x8b\x08\x00truncated")
    summary = add_abstracts([str(good), str(broken)], "", service=live)
    assert summary.startswith("**Nothing was added; the index is unchanged.**") and "broken.xml.gz" in summary
    assert live.index is before and IndexDir(live.config.index_dir).current() == generation
    unsupported = add_abstracts([str(_jsonl(tmp_path / "notes.docx"))], "", service=live)
    assert "unsupported file type" in unsupported
    assert add_abstracts(None, "  ", service=live) == "Choose files to upload or enter a PubMed query."


def test_add_abstracts_takes_an_upload_name_with_brackets_and_names_a_bad_pmid(live: ChatService, tmp_path) -> None:
    """An upload keeps its name (brackets are not a pattern); a 30-digit PMID is a skipped record, not a
    red "Error" badge; and a file name cannot put a link into the summary."""
    before = IndexDir(live.config.index_dir).current()
    bad = _jsonl(tmp_path / "export[1].jsonl", {**NEW_RECORD, "pmid": "9" * 30})
    summary = add_abstracts([str(bad)], "", service=live)
    assert summary.startswith("Nothing to do") and "1 malformed record(s) skipped" in summary
    assert IndexDir(live.config.index_dir).current() == before  # nothing committed
    named = _jsonl(tmp_path / "[x](https:evil.example)[2].jsonl", NEW_RECORD)
    summary = add_abstracts([str(named)], "", service=live)
    assert "added 1" in summary and "](https" not in summary and "&#91;x&#93;" in summary


def test_add_abstracts_from_a_pubmed_query(live: ChatService, tmp_path: Path) -> None:
    queries: list[str] = []

    def fetch(query: str, config: Config) -> list[Path]:
        queries.append(query)
        batch = config.download_dir / "batch-00000.xml"
        batch.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(DATA / "pubmed4.xml", batch)
        return [batch]

    summary = add_abstracts(None, " pubmed:asthma[mh] ", service=live, fetch_query=fetch)
    assert queries == ["asthma[mh]"] and summary.startswith("**Done.**")


def test_upload_box_accepts_every_format_the_readers_take() -> None:
    assert {".xml", ".gz", ".jsonl", ".nbib", ".txt", ".csv", ".tsv"} <= set(upload_types())


# --- passages and status ----------------------------------------------------------------------------


def test_matched_passage_without_encoder_is_the_conclusion() -> None:
    article = Article("1", "T", (Section("METHODS", "We did things."), Section("CONCLUSIONS", "It worked well.")))
    hit = Hit(article, 0.5, 1)
    assert matched_passages("q", [hit], None) == {"1": "It worked well."}
    passages = matched_passages("things we did", [hit], HashingEncoder())
    assert passages["1"].startswith("We did things.")  # short: the next sentence comes along


def test_status_shows_abstracts_encoder_update_and_model() -> None:
    stats = {
        "documents": 2000,
        "encoder": "enc`x",
        "updated_at": "2026-01-02T03:04:05+00:00",
        "generation": "gen-000002",
    }
    status = render_status(stats, "model <b>", fallback_note=" — note")
    assert "2,000 abstracts" in status and "enc'x" in status and "2026-01-02 03:04 UTC" in status
    assert "gen-000002" in status and "model &lt;b&gt;" in status and "— note" in status


# --- deployment -------------------------------------------------------------------------------------


def test_auth_parsing() -> None:
    assert deploy.parse_auth("") is None and deploy.parse_auth("  ") is None
    assert deploy.parse_auth("a:b") == [("a", "b")]
    for bad in ("nopassword", ":pw", "a:b,c"):
        with pytest.raises(ValueError, match="user:password"):
            deploy.parse_auth(bad)


@pytest.mark.parametrize(
    ("host", "auth", "mode", "enabled"),
    [
        ("127.0.0.1", "", "auto", True),
        ("localhost", "", "auto", True),
        ("0.0.0.0", "", "auto", False),  # a public deployment without login
        ("0.0.0.0", "admin:pw", "auto", True),
        ("0.0.0.0", "", "on", True),
        ("127.0.0.1", "", "off", False),
    ],
)
def test_ingestion_is_off_on_public_deployments_unless_enabled_or_behind_login(
    host: str, auth: str, mode: str, enabled: bool
) -> None:
    assert deploy.ingest_enabled(Config(host=host, auth=auth, allow_ingest=mode)) is enabled


def test_ingestion_mode_must_be_known() -> None:
    with pytest.raises(ValueError, match="auto, on, off"):
        deploy.ingest_enabled(Config(allow_ingest="yes"))


def _fake_hub(repo_root: Path, calls: list[tuple]):
    def download(repo: str, revision: str | None, patterns: Sequence[str], target: Path) -> None:
        calls.append((repo, revision, list(patterns)))
        for path in repo_root.rglob("*"):
            name = path.relative_to(repo_root).as_posix()
            if path.is_file() and any(fnmatch.fnmatch(name, p) for p in patterns):
                (target / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(path, target / name)

    return download


def test_prebuilt_index_is_fetched_into_an_empty_index_dir_only(demo_index: Path, tmp_path: Path) -> None:
    calls: list[tuple] = []
    download = _fake_hub(demo_index, calls)
    config = Config(index_dir=tmp_path / "index", index_repo="someone/pubmed-index@v2")
    assert deploy.fetch_prebuilt_index(config, download=download) is True
    live = IndexDir(demo_index).current()
    assert calls == [("someone/pubmed-index", "v2", ["CURRENT"]), ("someone/pubmed-index", "v2", [f"{live.name}/*"])]
    index = PubMedIndex(config.index_dir, encoder=HashingEncoder())
    assert len(index) == len(PubMedIndex(demo_index, encoder=HashingEncoder())) == 150
    assert not (config.index_dir / ".download").exists()
    assert deploy.fetch_prebuilt_index(config, download=download) is False and len(calls) == 2  # already there
    assert deploy.fetch_prebuilt_index(Config(index_dir=tmp_path / "other"), download=download) is False
    bucket = Config(index_dir=tmp_path / "from-bucket", index_repo="hf://buckets/someone/indexes/pubmed")
    assert deploy.fetch_prebuilt_index(bucket, download=download) is True
    assert calls[-1][:2] == ("hf://buckets/someone/indexes/pubmed", None)


def test_a_dataset_without_an_index_is_refused_and_leaves_nothing(tmp_path: Path) -> None:
    empty = tmp_path / "repo"
    empty.mkdir()
    (empty / "README.md").write_text("not an index")
    config = Config(index_dir=tmp_path / "index", index_repo="someone/not-an-index")
    with pytest.raises(IndexNotFound, match="no CURRENT"):
        deploy.fetch_prebuilt_index(config, download=_fake_hub(empty, []))
    (empty / "CURRENT").write_text("gen-000001\n")  # names a generation the repo does not hold
    with pytest.raises(IndexNotFound, match=r"manifest\.json is missing"):
        deploy.fetch_prebuilt_index(config, download=_fake_hub(empty, []))
    assert IndexDir(config.index_dir).current() is None


def test_on_gpu_leaves_the_function_alone_without_spaces() -> None:
    pytest.importorskip("gradio")  # any environment: `spaces` is only installed on Hugging Face Spaces

    def chat(message: str) -> str:
        return message

    try:
        import spaces  # noqa: F401
    except ImportError:
        assert deploy.on_gpu(chat) is chat
        assert deploy.zero_gpu() is False
    else:  # on a Space: wrapped by spaces.GPU, still callable the same way
        assert deploy.on_gpu(chat)("hi") == "hi"


def test_llama_cpp_models_stream_one_at_a_time() -> None:
    class Counting(ScriptedGenerator):
        context_window = 4096
        running = peak = 0

        def stream(self, messages, **kwargs):
            Counting.running += 1
            Counting.peak = max(Counting.peak, Counting.running)
            try:
                yield from super().stream(messages, **kwargs)
            finally:
                Counting.running -= 1

    shared = Models(Counting("a b c"), Config(backend="llama.cpp")).get()
    assert shared.context_window == 4096 and shared.name == ScriptedGenerator.name  # still looks the same
    first = shared.stream([])
    next(first)
    results: list[str] = []
    second = threading.Thread(target=lambda: results.append("".join(shared.stream([]))))
    second.start()
    second.join(timeout=0.5)
    assert second.is_alive() and Counting.peak == 1  # waits while the first stream is open
    first.close()  # Stop on the first chat lets the second go
    second.join(timeout=10)
    assert results == ["a b c"] and Counting.peak == 1
    assert Models(Counting("x"), Config()).get().__class__ is Counting  # transformers: shared freely


def test_sentences_do_not_end_at_abbreviations() -> None:
    from webui.passages import sentences

    text = "Use was lower (177.1 vs. 212.3 mg) as Smith et al. 2019 found. 25 patients (e.g. 5 children) left."
    hit = Hit(Article("1", "T", (Section("RESULTS", text),)), 0.5, 1)
    assert sentences(hit) == [
        "Use was lower (177.1 vs. 212.3 mg) as Smith et al. 2019 found.",
        "25 patients (e.g. 5 children) left.",
    ]
