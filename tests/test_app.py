"""The Gradio app's callback, rendering, settings and wiring, without a server: respond() is a plain generator."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

import app
from chatbot.prompts import DISCLAIMER
from config import Config
from index.filters import Filters
from index.search import PUBMED_URL, PubMedIndex
from index.writer import ingest_files
from ingest.sources import read_source
from tests.conftest import REPO, HashingEncoder, ScriptedGenerator
from webui.models import Models
from webui.render import PLACEHOLDER, RELATED_HEADING, WRITING
from webui.service import ChatService, ChatSettings

EVIDENCE = Config(top_k=3, min_score=0.05, gate="off")  # the evidence gate is calibrated for MiniLM, not hashing
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


class RecordingGenerator(ScriptedGenerator):
    """A scripted generator that keeps the stop event it was given, to check that Stop reaches it."""

    stop: threading.Event | None = None

    def stream(self, messages: Sequence[dict[str, str]], **kwargs) -> Iterator[str]:
        self.stop = kwargs.get("stop")
        return super().stream(messages, **kwargs)


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


def _service(
    index: PubMedIndex, reply: str, config: Config = EVIDENCE, generator: ScriptedGenerator | None = None
) -> tuple[ChatService, ScriptedGenerator]:
    generator = generator or ScriptedGenerator(reply)
    return ChatService(index, Models(generator, config), config), generator


def _question(index: PubMedIndex, position: int = 0) -> str:
    return [a.title for a in index.store.iter_articles()][position]


def _final(message: str, service: ChatService, history: list | None = None, settings: ChatSettings | None = None):
    return list(app.respond(message, history or [], settings, service=service))[-1]


# --- streaming and rendering -------------------------------------------------------------------


def test_respond_streams_markdown_and_html_tuples(demo: PubMedIndex) -> None:
    service, _ = _service(demo, "The effect was clear [1]. It held up later [2].")
    outputs = list(app.respond(_question(demo), [], service=service))
    assert len(outputs) >= 3
    assert all(isinstance(md, str) and isinstance(html, str) for md, html in outputs)
    assert outputs[0] == (PLACEHOLDER, "")  # before the search: the user sees work has started
    # Then the sources, with a note that the answer is being written, before the model's first word.
    assert outputs[1][0] == WRITING.format(n=3) and "source-card" in outputs[1][1]
    assert next(md for md, _ in outputs if md not in (PLACEHOLDER, outputs[1][0])).startswith("The")
    assert "The effect was clear" in outputs[-1][0]


def test_final_markdown_links_cited_pmids_and_lists_references(demo: PubMedIndex) -> None:
    service, _ = _service(demo, "The effect was clear [1]. Both agreed [1, 3]. Invented [9].")
    question = _question(demo, 3)
    markdown, _ = _final(question, service)
    sources = service.chatbot(ChatSettings()).ask(question).sources
    first, third = (PUBMED_URL.format(pmid=sources[i].pmid) for i in (0, 2))
    assert f"The effect was clear [[1]]({first})." in markdown
    assert f"Both agreed [[1]]({first})[[3]]({third})." in markdown
    assert "[9]" not in markdown and "[2]" not in markdown
    references = markdown.split("**References**")[1]
    assert f"[PMID {sources[0].pmid}]({first})" in references and f"[PMID {sources[2].pmid}]({third})" in references


def test_sources_panel_has_a_card_per_source_with_link_badge_passage_and_abstract(demo: PubMedIndex) -> None:
    service, _ = _service(demo, "Only the second source is cited [2].")
    question = _question(demo, 5)
    _, html = _final(question, service)
    sources = service.chatbot(ChatSettings()).ask(question).sources
    assert "<h3>Sources</h3>" in html
    cards = html.split('<div class="source-card"')[1:]
    assert len(cards) == len(sources) == 3
    for n, (card, hit) in enumerate(zip(cards, sources, strict=True), start=1):
        assert f'id="source-{n}"' in card
        assert f'href="{PUBMED_URL.format(pmid=hit.pmid)}"' in card and f"PMID {hit.pmid}" in card
        assert str(hit.article.year) in card
        passage = card.split('<blockquote class="source-passage">')[1].split("</blockquote>")[0]
        assert passage.rstrip(" …")[:60] in app.html.escape(hit.article.abstract)  # a passage of this abstract
        assert "<details><summary>Full abstract</summary>" in card
    assert html.count('class="badge cited"') == 1 and 'class="badge cited"' in cards[1]


def test_matched_passage_is_the_sentence_closest_to_the_question(demo: PubMedIndex) -> None:
    article = next(a for a in demo.store.iter_articles() if len(a.sections) >= 3)
    from webui.passages import sentences

    target = max(sentences(demo.search(article.title, k=1)[0]), key=len)  # a long, specific sentence
    service, _ = _service(demo, "Answer [1].")
    _, html = _final(target, service)
    first_card = html.split('<div class="source-card"')[1]
    assert app.html.escape(target[:80]) in first_card


def test_abstention_is_rendered_as_such_and_the_model_is_not_asked(demo: PubMedIndex) -> None:
    service, generator = _service(demo, "never [1].", Config(top_k=3, min_score=0.99))
    outputs = list(app.respond("zzzz qqqq xxxx", [], service=service))
    assert len(outputs) == 2 and outputs[0] == (PLACEHOLDER, "")  # searching, then the abstention
    markdown, html = outputs[1]
    assert markdown.startswith("**No answer in the indexed literature.**")
    assert f"<h3>{RELATED_HEADING}</h3>" in html and "<b>Abstained:</b>" in html
    assert 'class="badge cited"' not in html
    assert generator.messages == []


def test_unsupported_claims_are_marked_visibly_and_counted(demo: PubMedIndex) -> None:
    reply = "Purple giraffes juggle violins on frozen volcanoes daily."
    service, _ = _service(demo, reply)
    markdown, html = _final(_question(demo, 7), service)
    assert "⚠️ *unsupported*" in markdown and "[unsupported]" not in markdown
    assert "⚠️ 1 unsupported" in html
    assert "No valid citation" in markdown  # the chatbot's own note stays visible


def test_markup_in_titles_and_metadata_is_escaped(evil_index: PubMedIndex) -> None:
    service, _ = _service(evil_index, "Aspirin reduced recurrent stroke [1].")
    question = "Does aspirin prevent recurrent stroke?"
    assert service.chatbot(ChatSettings()).ask(question).sources[0].pmid == "900001"  # precondition
    markdown, html = _final(question, service)
    assert "&lt;script&gt;alert(1)&lt;/script&gt; Aspirin trial" in html
    assert "<script>" not in html
    assert "&lt;script&gt;" in markdown and "<script>" not in markdown  # the reference list cites it too
    assert "&lt;b&gt;Evil&lt;/b&gt; A" in html and "<b>Evil</b>" not in html
    assert "&lt;i&gt;Journal&lt;/i&gt;" in html and "<i>Journal</i>" not in html


def test_markup_and_links_in_the_model_reply_are_defused(evil_index: PubMedIndex) -> None:
    service, _ = _service(evil_index, EVIL_REPLY + " See [this page](https://evil.example/x) now.")
    outputs = list(app.respond("aspirin stroke", [], service=service))
    assert all("<img" not in markdown for markdown, _ in outputs)
    final = outputs[-1][0]
    assert "img src" not in final and final.startswith("**Quoted evidence**")  # markup: the reply is replaced
    assert "[[1]](https://pubmed.ncbi.nlm.nih.gov/900001/)" in final
    assert "](https://evil.example" not in final  # shown as text, not as a link


LINK_FORMS = {
    "inline": "See [this page](https://evil.example/x).",
    "inline-image": "![pixel](https://evil.example/p.png)",
    "reference": "See [here][x].\n\n[x]: https://evil.example/ref",
    "reference-image": "![t][im]\n\n[im]: https://evil.example/im.png",
    "collapsed-and-shortcut": "[a][] and [b]\n\n[a]: https://evil.example/a\n[b]: <https://evil.example/b>",
    "footnote": "Claim[^1].\n\n[^1]: https://evil.example/note",
    "autolink": "<https://evil.example/auto> <mailto:x@evil.example>",
    "bare-url": "Read https://evil.example/bare or http://evil.example/plain.",
    "bare-www": "Read www.evil.example/bare.",
    "bare-email": "Write to someone@evil.example.",
    "html": '<a href="https://evil.example">a</a><img src="https://evil.example/i.png"><iframe src="//evil.example">',
    "tex": "$$\\href{https://evil.example}{x}$$ $\\url{https://evil.example}$",
    "entity-built": "&#91;x&#93;(https://evil.example) &lt;img src=https://evil.example/e.png&gt;",
}


REPLACED_FORMS = {"html"}  # a reply with markup is degenerate (chatbot/clean.py): quoted evidence replaces it


@pytest.mark.parametrize("name", LINK_FORMS)
def test_no_link_or_image_can_come_from_the_answer_text(evil_index: PubMedIndex, name: str) -> None:
    """Whatever the model writes, the Markdown has no syntax that could make a link or load anything:
    the only links are the app's own PubMed ones, and the text reads as the model wrote it."""
    service, _ = _service(evil_index, f"Aspirin reduced recurrent stroke [1]. {LINK_FORMS[name]}")
    outputs = list(app.respond("aspirin stroke", [], service=service))
    for markdown, _ in outputs:
        ours = r"\[(\[\d+\]|PMID \d+)\]\(https://pubmed\.ncbi\.nlm\.nih\.gov/\d+/\)|\\\[\d+\\\]"
        own = re.sub(ours, "", markdown)  # without the citation links and reference numbers the app adds
        assert not set("[]<$@") & set(own), own  # link, image, tag, TeX and e-mail syntax all escaped
        assert "://" not in own and "www." not in own.lower(), own  # no bare URL to autolink
    final = outputs[-1][0]
    assert "[[1]](https://pubmed.ncbi.nlm.nih.gov/900001/)" in final
    if name in REPLACED_FORMS:
        assert final.startswith("**Quoted evidence**") and "evil.example" not in final
    else:
        assert "evil.example" in app.plain_text(final)  # shown as text, not dropped


@pytest.mark.parametrize("message", ["", "   ", "\n"])
def test_empty_message_asks_for_a_question(demo: PubMedIndex, message: str) -> None:
    service, generator = _service(demo, "never [1].")
    assert list(app.respond(message, [], service=service)) == [("Please type a question.", "")]
    assert generator.messages == []


def test_a_question_over_the_limit_gets_a_clear_message_and_costs_nothing(demo: PubMedIndex) -> None:
    service, generator = _service(demo, "never [1].")
    [(markdown, sources)] = list(app.respond("What about aspirin? " * 1000, [], service=service))
    assert markdown.startswith("**Please shorten the question:**") and "19,999 characters" in markdown
    assert "limit is 1,000" in markdown and sources == "" and generator.calls == []


def test_stop_closes_the_stream_and_stops_the_model(demo: PubMedIndex) -> None:
    generator = RecordingGenerator(" ".join(f"word{i}" for i in range(200)) + " [1].")
    service, _ = _service(demo, "", generator=generator)
    stream = app.respond(_question(demo, 2), [], service=service)
    for _ in range(5):
        next(stream)
    assert generator.stop is not None and not generator.stop.is_set()
    stream.close()  # what Gradio does when the user presses Stop
    assert generator.stop.is_set()


# --- history ----------------------------------------------------------------------------------


def test_history_pairs_read_gradio_6_messages_and_plain_strings() -> None:
    url = "https://pubmed.ncbi.nlm.nih.gov/123/"
    history = [
        {"role": "user", "content": [{"type": "text", "text": "q1"}]},
        {"role": "assistant", "content": [{"type": "text", "text": f"a1 [[1]]({url}) and [[2]]({url})."}]},
        {"role": "user", "content": "q2"},
        {"role": "assistant", "content": [{"type": "file", "file": {"path": "image.png"}}]},  # no text
        {"role": "assistant", "content": "an assistant turn with no question before it"},
        {"role": "user", "content": "q3 (unanswered)"},
    ]
    assert app.history_pairs(history) == [("q1", "a1 [1] and [2]."), ("q2", "")]
    assert app.history_pairs([]) == []


def test_rendered_answer_round_trips_through_history(demo: PubMedIndex) -> None:
    service, _ = _service(demo, "Mortality fell (p < 0.05) & costs rose [1]. Second claim [2].")
    question = _question(demo, 8)
    markdown, _ = _final(question, service)
    assert "&lt;" in markdown and "**References**" in markdown  # precondition: escaped, with references
    history = [{"role": "user", "content": question}, {"role": "assistant", "content": markdown}]
    [(user, assistant)] = app.history_pairs(history)
    assert user == question
    assert assistant.startswith("Mortality fell (p < 0.05) & costs rose [1].")
    model_text = service.chatbot(ChatSettings()).ask(question).text.split("**References**")[0].strip()
    assert assistant == model_text  # support marks included, links and references gone


def test_follow_up_history_reaches_the_model_as_plain_text(demo: PubMedIndex) -> None:
    first, _ = _service(demo, "First claim [1]. Second claim [2].")
    q1 = _question(demo, 12)
    markdown, _ = _final(q1, first)
    service, generator = _service(demo, "Follow-up answer [1].")
    history = [{"role": "user", "content": [{"type": "text", "text": q1}]}, {"role": "assistant", "content": markdown}]
    list(app.respond("And in children?", history, service=service))
    messages = generator.calls[-1]
    at = next(i for i, m in enumerate(messages) if m == {"role": "user", "content": q1})
    assert messages[at + 1]["role"] == "assistant"
    assert messages[at + 1]["content"].startswith("First claim [1]. Second claim [2].")
    assert "References" not in messages[at + 1]["content"] and "pubmed.ncbi" not in messages[at + 1]["content"]


# --- settings -----------------------------------------------------------------------------------


def test_top_k_and_min_score_come_from_the_session_settings(demo: PubMedIndex) -> None:
    service, _ = _service(demo, "Claim [1].")
    question = _question(demo, 20)
    for k in (1, 4):
        html = _final(question, service, settings=ChatSettings(top_k=k))[1]
        assert html.count('<div class="source-card"') == k
    markdown, _ = _final(question, service, settings=ChatSettings(min_score=1.01))
    assert markdown.startswith("**No answer in the indexed literature.**")
    assert service.config == EVIDENCE  # a session's settings never change the shared defaults


def test_year_and_study_type_filters_restrict_the_sources(demo: PubMedIndex) -> None:
    service, _ = _service(demo, "Claim [1].", Config(top_k=5, min_score=0.0))
    question = "clinical outcomes of patients"
    articles = {a.pmid: a for a in demo.store.iter_articles()}
    years = ChatSettings(filters=Filters(year_from=2021, year_to=2021))
    reviews = ChatSettings(filters=Filters(publication_types=("Review",)))
    for settings, check in ((years, lambda a: a.year == 2021), (reviews, lambda a: "Review" in a.publication_types)):
        sources = service.chatbot(settings).ask(question).sources
        assert sources and all(check(articles[h.pmid]) for h in sources)
    unfiltered = service.chatbot(ChatSettings()).ask(question).sources
    assert not all("Review" in articles[h.pmid].publication_types for h in unfiltered)  # the filter did something


def test_model_menu_loads_a_model_on_first_use_and_keeps_it(demo: PubMedIndex) -> None:
    opened: list[Config] = []
    other = ScriptedGenerator("From the other model [1].")

    def opener(config: Config) -> ScriptedGenerator:
        opened.append(config)
        return other

    config = Config(top_k=3, min_score=0.05, models="other-model", gate="off")
    service = ChatService(demo, Models(ScriptedGenerator("Default model answer [1]."), config, opener=opener), config)
    assert service.models.names == [ScriptedGenerator.name, "other-model"]
    outputs = list(app.respond(_question(demo, 1), [], ChatSettings(model="other-model"), service=service))
    assert outputs[0][0].startswith("_Loading the model other-model")
    assert "From the other model" in outputs[-1][0]
    list(app.respond(_question(demo, 2), [], ChatSettings(model="other-model"), service=service))
    assert [c.generator for c in opened] == ["other-model"]  # loaded once
    assert "Default" in _final(_question(demo, 1), service)[0]  # the default is still there


def test_an_unknown_model_or_retriever_is_an_answer_not_a_crash(demo: PubMedIndex) -> None:
    service, generator = _service(demo, "never [1].")
    for settings in (ChatSettings(model="nope"), ChatSettings(retriever="nonsense")):
        markdown, html = _final("aspirin", service, settings=settings)
        assert markdown.startswith("**Cannot answer:**") and html == ""
    assert generator.messages == []


def test_settings_from_the_sidebar_values() -> None:
    settings = ChatSettings.from_inputs("m", "", 7.0, 0.4, 1900.0, 2026.0, [], True, this_year=2026)
    assert (settings.model, settings.top_k, settings.min_score) == ("m", 7, 0.4)
    assert settings.filters == Filters(exclude_types=("Retracted Publication",))  # slider extremes: no bound
    swapped = ChatSettings.from_inputs("", "dense", 5, 0.3, 2020, 2015, ["Review"], False, this_year=2026)
    assert (swapped.filters.year_from, swapped.filters.year_to) == (2015, 2020)
    assert swapped.filters.publication_types == ("Review",) and swapped.retriever == "dense"


def test_interleaved_sessions_keep_their_own_settings_and_history(demo: PubMedIndex) -> None:
    service, generator = _service(demo, "Shared model reply [1].")
    qa, qb = _question(demo, 30), _question(demo, 40)
    history_a = [{"role": "user", "content": "about A"}, {"role": "assistant", "content": "answer A"}]
    a = app.respond(qa, history_a, ChatSettings(top_k=2), service=service)
    b = app.respond(qb, [], ChatSettings(top_k=4), service=service)
    outputs_a, outputs_b = [next(a)], [next(b)]
    for stream, outputs in ((a, outputs_a), (b, outputs_b), (a, outputs_a), (b, outputs_b)):
        outputs.append(next(stream))  # alternate, as two worker threads would
    outputs_a += list(a)
    outputs_b += list(b)
    assert outputs_a[-1][1].count('<div class="source-card"') == 2
    assert outputs_b[-1][1].count('<div class="source-card"') == 4
    prompts = {json.dumps(call) for call in generator.calls}
    assert sum("about A" in p for p in prompts) == 1  # only A's prompt carries A's history


# --- examples, status, UI -------------------------------------------------------------------------


def test_examples_are_questions_the_index_can_answer(demo: PubMedIndex, evil_index: PubMedIndex) -> None:
    from webui.service import answerable_examples

    title = _question(demo, 3)
    examples = answerable_examples(demo, [title, "zzzz qqqq"], min_score=0.3, gate=False)  # gate: MiniLM scale
    assert examples[0] == title
    assert examples[1].startswith("What did the study “") and len(examples) == 2
    assert demo.search(examples[1], k=1)[0].score >= 0.3  # the replacement is answerable
    assert evil_index.search("aspirin trial", k=1)[0].pmid == "900001"  # precondition: the record with markup
    assert answerable_examples(evil_index, ["aspirin trial"], min_score=0.99, gate=False) == []  # title: no example


def test_build_ui_has_disclaimer_status_sources_and_settings(demo: PubMedIndex) -> None:
    import gradio as gr

    service, _ = _service(demo, "x [1].")
    ui = app.build_ui(service, examples=["What is known about asthma?"])
    assert isinstance(ui, gr.Blocks)
    components = ui.config["components"]
    texts = " ".join(str(c["props"].get("value")) for c in components if c.get("type") == "markdown")
    assert DISCLAIMER in texts
    status = app.status_text(service)
    assert "150 abstracts" in status and HashingEncoder.name in status and ScriptedGenerator.name in status
    labels = {c["props"].get("label") for c in components}
    assert {"Model", "Retriever", "Abstracts per question (top-k)", "Published from", "Published until"} <= labels
    assert any(c.get("type") == "html" and c["props"].get("elem_id") == "sources" for c in components)
    assert not any(c.get("type") == "file" for c in components)  # ingestion off unless enabled
    assert any(c.get("type") == "file" for c in app.build_ui(service, ingest=True).config["components"])


def test_launch_options_never_share_and_take_the_login_from_the_environment() -> None:
    config = app.parse_config([], {"PUBMED_RAG_AUTH": "alice:s3cret:x,bob:pw"})
    options = app.launch_options(config)
    assert options["share"] is False
    assert options["auth"] == [("alice", "s3cret:x"), ("bob", "pw")]
    assert app.launch_options(app.parse_config([], {}))["auth"] is None


def test_gradio_server_variables_and_flags_set_host_and_port() -> None:
    gradio_env = {"GRADIO_SERVER_NAME": "0.0.0.0", "GRADIO_SERVER_PORT": "7861"}
    config = app.parse_config([], gradio_env)
    assert (config.host, config.port) == ("0.0.0.0", 7861)
    ours = app.parse_config([], {**gradio_env, "PUBMED_RAG_PORT": "7862"})
    assert ours.port == 7862  # our own variable wins over Gradio's
    flags = app.parse_config(["--host", "127.0.0.2", "--port", "7863"], {**gradio_env, "PUBMED_RAG_PORT": "7862"})
    assert (flags.host, flags.port) == ("127.0.0.2", 7863)  # a flag wins over both
    assert (app.parse_config([], {}).host, app.parse_config([], {}).port) == ("127.0.0.1", 7860)
    options = app.launch_options(config)
    assert (options["server_name"], options["server_port"]) == ("0.0.0.0", 7861)


def test_app_help_lists_the_flags_and_importing_the_app_loads_no_heavy_library() -> None:
    result = subprocess.run([sys.executable, "app.py", "--help"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    for flag in ("--index-dir", "--port", "--host", "--models", "--allow-ingest", "--index-repo", "--max-chats"):
        assert flag in result.stdout
    assert "--auth" not in result.stdout  # a password belongs in the environment, not in `ps`
    code = "import sys, app; print(sorted(m for m in ('gradio', 'torch', 'transformers') if m in sys.modules))"
    imported = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert imported.stdout.strip() == "[]", imported.stderr
