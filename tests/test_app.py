"""The Gradio app's callback and rendering, without a server: respond() is a plain generator."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import app
from chatbot.chat import Chatbot
from chatbot.prompts import DISCLAIMER
from config import Config
from index.search import PUBMED_URL, PubMedIndex
from index.writer import ingest_files
from ingest.sources import read_source
from tests.conftest import REPO, HashingEncoder, ScriptedGenerator

EVIDENCE = Config(top_k=3, min_score=0.05)
EVIL_TITLE = "<script>alert(1)</script> Aspirin trial"
EVIL_REPLY = "Aspirin cut strokes <img src=x onerror=alert(1)> in adults [1]."
RECORDS = [
    {
        "pmid": "900001",
        "title": EVIL_TITLE,
        "abstract": "Daily aspirin reduced recurrent stroke in adults taking aspirin after a first stroke.",
        "journal": "<i>Journal</i> of Tests",
        "authors": ["<b>Evil</b> A", "Smith J"],
        "year": 2020,
    },
    {
        "pmid": "900002",
        "title": "Sleep duration and a Mediterranean diet",
        "abstract": "A Mediterranean diet did not change sleep duration in healthy volunteers.",
        "year": 2019,
    },
    {
        "pmid": "900003",
        "title": "Statins and muscle pain",
        "abstract": "Muscle symptoms were reported equally with statin and placebo in a blinded trial.",
        "year": 2021,
    },
]


@pytest.fixture(scope="module")
def demo(demo_index: Path) -> PubMedIndex:
    return PubMedIndex(demo_index, encoder=HashingEncoder())


@pytest.fixture(scope="module")
def evil_index(tmp_path_factory: pytest.TempPathFactory) -> PubMedIndex:
    folder = tmp_path_factory.mktemp("evil")
    source = folder / "records.jsonl"
    source.write_text("\n".join(json.dumps(r) for r in RECORDS) + "\n", encoding="utf-8")
    config = Config(index_dir=folder / "index")
    ingest_files([source], config, read=read_source, encoder=HashingEncoder(), progress=False)
    return PubMedIndex(config.index_dir, encoder=HashingEncoder())


def _bot(index: PubMedIndex, reply: str, config: Config = EVIDENCE) -> tuple[Chatbot, ScriptedGenerator]:
    generator = ScriptedGenerator(reply)
    return Chatbot(index, generator, config, encoder=HashingEncoder()), generator


def _question(index: PubMedIndex, position: int = 0) -> str:
    return [a.title for a in index.store.iter_articles()][position]


def test_respond_streams_markdown_and_html_tuples(demo: PubMedIndex) -> None:
    bot, _ = _bot(demo, "The effect was clear [1]. It held up later [2].")
    outputs = list(app.respond(_question(demo), [], bot=bot))
    assert len(outputs) >= 3
    assert all(isinstance(md, str) and isinstance(html, str) for md, html in outputs)
    assert outputs[0][0] == "_Searching the abstracts and writing an answer…_"
    assert "The effect was clear" in outputs[-1][0]


def test_final_markdown_links_cited_pmids(demo: PubMedIndex) -> None:
    bot, _ = _bot(demo, "The effect was clear [1]. Both agreed [1, 3].")
    question = _question(demo, 3)
    final = bot.ask(question)
    markdown, _ = list(app.respond(question, [], bot=bot))[-1]
    first, third = (PUBMED_URL.format(pmid=final.sources[i].pmid) for i in (0, 2))
    assert f"The effect was clear [[1]]({first})." in markdown
    assert f"Both agreed [[1]]({first})[[3]]({third})." in markdown
    assert "[2]" not in markdown


def test_sources_panel_lists_every_source_and_badges_cited_ones(demo: PubMedIndex) -> None:
    bot, _ = _bot(demo, "Only the second source is cited [2].")
    question = _question(demo, 5)
    final = bot.ask(question)
    _, html = list(app.respond(question, [], bot=bot))[-1]
    assert html.startswith("<h3>Sources</h3>")
    for hit in final.sources:
        assert f'href="{PUBMED_URL.format(pmid=hit.pmid)}"' in html
        assert f"PMID {hit.pmid}" in html
    assert html.count('class="source-card"') == len(final.sources) == 3
    assert html.count("<strong>cited</strong>") == 1
    second_card = html.split('<div class="source-card">')[2]
    assert "<b>[2]</b> <strong>cited</strong>" in second_card


def test_abstention_is_rendered_as_such(demo: PubMedIndex) -> None:
    bot, generator = _bot(demo, "never [1].", Config(top_k=3, min_score=0.99))
    outputs = list(app.respond("zzzz qqqq xxxx", [], bot=bot))
    assert len(outputs) == 1
    markdown, html = outputs[0]
    assert markdown.startswith("**No answer in the indexed literature.**")
    assert html.startswith("<h3>Closest abstracts (not an answer)</h3>")
    assert "<strong>cited</strong>" not in html
    assert generator.messages == []


def test_markup_in_titles_and_metadata_is_escaped(evil_index: PubMedIndex) -> None:
    bot, _ = _bot(evil_index, "Aspirin reduced recurrent stroke [1].")
    final = bot.ask("Does aspirin prevent recurrent stroke?")
    assert final.sources[0].pmid == "900001"  # precondition: the poisoned record is retrieved first
    markdown, html = list(app.respond("Does aspirin prevent recurrent stroke?", [], bot=bot))[-1]
    assert "&lt;script&gt;alert(1)&lt;/script&gt; Aspirin trial" in html
    assert "<script>" not in html
    assert "&lt;script&gt;" in markdown and "<script>" not in markdown  # the reference list cites it too
    assert "&lt;b&gt;Evil&lt;/b&gt; A" in html and "<b>Evil</b>" not in html
    assert "&lt;i&gt;Journal&lt;/i&gt;" in html and "<i>Journal</i>" not in html


def test_markup_in_the_model_reply_is_escaped(evil_index: PubMedIndex) -> None:
    bot, _ = _bot(evil_index, EVIL_REPLY)
    outputs = list(app.respond("aspirin stroke", [], bot=bot))
    assert all("<img" not in markdown for markdown, _ in outputs)
    assert "&lt;img src=x onerror=alert(1)&gt;" in outputs[-1][0]
    assert "[[1]](https://pubmed.ncbi.nlm.nih.gov/900001/)" in outputs[-1][0]


@pytest.mark.parametrize("message", ["", "   ", "\n"])
def test_empty_message_asks_for_a_question(demo: PubMedIndex, message: str) -> None:
    bot, generator = _bot(demo, "never [1].")
    assert list(app.respond(message, [], bot=bot)) == [("Please type a question.", "")]
    assert generator.messages == []


def test_pairs_from_gradio_messages() -> None:
    url = "https://pubmed.ncbi.nlm.nih.gov/123/"
    history = [
        {"role": "user", "content": "q1"},
        {"role": "assistant", "content": f"a1 [[1]]({url}) and [[2]]({url})."},
        {"role": "user", "content": "q2"},
        {"role": "assistant", "content": {"path": "image.png"}},  # a file message: no text
        {"role": "assistant", "content": "an assistant turn with no question before it"},
        {"role": "user", "content": "q3 (unanswered)"},
    ]
    assert app._pairs(history) == [("q1", "a1 [1] and [2]."), ("q2", "")]
    assert app._pairs([]) == []


def test_rendered_answer_round_trips_through_history(demo: PubMedIndex) -> None:
    bot, _ = _bot(demo, "First claim [1]. Second claim [2].")
    question = _question(demo, 8)
    markdown, _ = list(app.respond(question, [], bot=bot))[-1]
    history = [{"role": "user", "content": question}, {"role": "assistant", "content": markdown}]
    [(user, assistant)] = app._pairs(history)
    assert user == question
    assert assistant.startswith("First claim [1]. Second claim [2].")


def test_follow_up_history_reaches_the_model_without_the_references(demo: PubMedIndex) -> None:
    first, _ = _bot(demo, "First claim [1]. Second claim [2].")
    q1 = _question(demo, 12)
    markdown, _ = list(app.respond(q1, [], bot=first))[-1]
    assert "**References**" in markdown  # precondition: the shown answer ends with its reference list
    bot, generator = _bot(demo, "Follow-up answer [1].")
    history = [{"role": "user", "content": q1}, {"role": "assistant", "content": markdown}]
    list(app.respond("And in children?", history, bot=bot))
    messages = generator.messages
    at = next(i for i, m in enumerate(messages) if m == {"role": "user", "content": q1})
    assert messages[at + 1]["role"] == "assistant"
    assert messages[at + 1]["content"].startswith("First claim [1]. Second claim [2].")
    assert "References" not in messages[at + 1]["content"] and "pubmed.ncbi" not in messages[at + 1]["content"]


def test_pairs_give_back_the_plain_text_of_an_escaped_answer(demo: PubMedIndex) -> None:
    bot, _ = _bot(demo, "Mortality fell (p < 0.05) & costs rose [1].")
    question = _question(demo, 14)
    markdown, _ = list(app.respond(question, [], bot=bot))[-1]
    assert "&lt;" in markdown  # precondition: rendering escaped it
    [(_, assistant)] = app._pairs([{"role": "user", "content": question}, {"role": "assistant", "content": markdown}])
    assert assistant.startswith("Mortality fell (p < 0.05) & costs rose [1].")


def test_build_ui_returns_blocks_with_the_disclaimer(demo: PubMedIndex) -> None:
    import gradio as gr

    bot, _ = _bot(demo, "x [1].")
    ui = app.build_ui(bot, demo.stats())
    assert isinstance(ui, gr.Blocks)
    markdown = [c["props"].get("value") for c in ui.config["components"] if c.get("type") == "markdown"]
    assert any(DISCLAIMER in str(value) for value in markdown)
    assert any("150 abstracts" in str(value) and ScriptedGenerator.name in str(value) for value in markdown)
    assert any(c.get("type") == "html" for c in ui.config["components"])


def test_app_help() -> None:
    result = subprocess.run([sys.executable, "app.py", "--help"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "--index-dir" in result.stdout and "--port" in result.stdout
