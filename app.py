"""Gradio chat over a local PubMed index: python app.py [--host H] [--port P] [--index-dir DIR].

Also the Hugging Face Space entry point. On first start with no index it builds the bundled
demo corpus (progress in the terminal / Space logs). The chat callback ``respond`` is a plain
generator, testable without a server; ``build_ui`` only wires it to components.
"""

from __future__ import annotations

import argparse
import html
import logging
import re
import sys
from collections.abc import Iterator, Sequence
from functools import partial

from chatbot.answer import Answer
from chatbot.chat import Chatbot
from chatbot.generate import PACKAGED_SMOLLM2
from chatbot.prompts import DISCLAIMER
from cli import setup_logging
from config import REPO_ROOT, Config, add_config_flags

log = logging.getLogger(__name__)

DEMO_CORPUS = REPO_ROOT / "data" / "demo" / "pubmed_demo.xml.gz"
EXAMPLES = [
    "What are the risk factors for severe COVID-19?",
    "Does opioid-free anaesthesia reduce opioid use after cardiac surgery?",
    "Does intravenous paracetamol reduce morphine consumption after surgery?",
    "Are geriatric syndromes common in older patients with atrial fibrillation?",
    "What does the WHO recommend for drug-resistant tuberculosis?",
]
TITLE = "PubMed RAG: cited answers from PubMed abstracts"
CONCLUSION_CHARS = 450  # each source card quotes the abstract's conclusion, so claims can be checked at a glance
FALLBACK_NOTE = (
    " — offline fallback model: a tiny model whose answers are often wrong; "
    "judge by the quoted conclusions and the sources, not by the answer"
)


def respond(message: str, history: Sequence[dict], *, bot: Chatbot) -> Iterator[tuple[str, str]]:
    """Stream (answer markdown, sources HTML) for one chat turn."""
    if not message or not message.strip():
        yield "Please type a question.", ""
        return
    for answer in bot.stream(message, _pairs(history)):
        yield render_answer(answer), render_sources(answer)


def _pairs(history: Sequence[dict]) -> list[tuple[str, str]]:
    """Gradio's message list as (user, assistant) pairs of plain text."""
    pairs, user = [], None
    for message in history:
        content = message.get("content")
        text = content if isinstance(content, str) else ""
        if message.get("role") == "user":
            user = text
        elif message.get("role") == "assistant" and user is not None:
            plain = html.unescape(re.sub(r"\[\[(\d+)\]\]\([^)]*\)", r"[\1]", text))  # undo render_answer
            pairs.append((user, plain))
            user = None
    return pairs


def render_answer(answer: Answer) -> str:
    """Escaped answer text whose [n] markers link to the cited PubMed pages."""
    if not answer.done and not answer.text:
        return "_Searching the abstracts and writing an answer…_"
    text = html.escape(answer.text, quote=False)
    urls = {c.n: c.url for c in answer.citations}
    text = re.sub(r"\[(\d+(?:, \d+)*)\]", lambda m: _link_numbers(m.group(1), urls), text)
    if answer.abstained:
        return f"**No answer in the indexed literature.** {text}"
    return text


def _link_numbers(numbers: str, urls: dict[int, str]) -> str:
    return "".join(f"[[{n}]]({urls[int(n)]})" if int(n) in urls else "" for n in numbers.split(", "))


def render_sources(answer: Answer) -> str:
    """Source cards; every field from PubMed is escaped (titles can hold markup)."""
    if not answer.sources:
        return "<p>No abstracts retrieved.</p>"
    cited = {c.n for c in answer.citations}
    heading = "Closest abstracts (not an answer)" if answer.abstained else "Sources"
    cards = [f"<h3>{heading}</h3>"]
    for n, hit in enumerate(answer.sources, start=1):
        a = hit.article
        authors = ", ".join(a.authors[:3]) + (" et al." if len(a.authors) > 3 else "")
        badge = " <strong>cited</strong>" if n in cited else ""
        cards.append(
            '<div class="source-card">'
            f'<p><b>[{n}]</b>{badge} <a href="{hit.url}" target="_blank" rel="noopener">'
            f"{html.escape(a.title)}</a></p>"
            f"<p>{html.escape(authors)} · <i>{html.escape(a.journal)}</i> · {a.year or 'n.d.'} · "
            f"PMID {html.escape(hit.pmid)} · similarity {hit.score:.2f}</p>"
            f"<blockquote>{html.escape(_shorten(a.conclusion, CONCLUSION_CHARS))}</blockquote></div>"
        )
    return "\n".join(cards)


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit].rsplit(" ", 1)[0] + " …"


def ensure_index(config: Config) -> None:
    """Build the demo index on first start so a fresh clone works with no setup."""
    from index.storage import IndexDir

    if IndexDir(config.index_dir).current() is not None:
        return
    from index.writer import ingest_files
    from ingest.sources import read_source

    log.info("No index in %s: building it from the bundled demo corpus (a few minutes, once).", config.index_dir)
    ingest_files([DEMO_CORPUS], config, read=read_source)


def build_ui(bot: Chatbot, stats: dict[str, object]):
    import gradio as gr

    sources = gr.HTML(label="Sources")
    with gr.Blocks(title=TITLE) as ui:
        gr.Markdown(f"# {TITLE}\n**⚠️ {DISCLAIMER}**")
        fallback = FALLBACK_NOTE if bot.generator.name == PACKAGED_SMOLLM2.removesuffix(".gguf") else ""
        gr.Markdown(
            f"Index: {stats['documents']} abstracts · encoder `{stats['encoder']}` · "
            f"model `{bot.generator.name}`{fallback}"
        )
        with gr.Row():
            with gr.Column(scale=3):
                gr.ChatInterface(
                    partial(respond, bot=bot),
                    additional_outputs=[sources],
                    examples=EXAMPLES,
                    cache_examples=False,
                    concurrency_limit=1,
                    fill_height=False,
                    chatbot=gr.Chatbot(height=520, label="Answer", sanitize_html=True),
                )
            with gr.Column(scale=2):
                sources.render()
    return ui


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python app.py", description=__doc__)
    add_config_flags(parser, "host", "port", "index_dir", "generator", "top_k")
    args = parser.parse_args(argv)
    setup_logging()
    config = Config.from_env().with_args(args)

    from chatbot.chat import open_chatbot

    ensure_index(config)
    bot = open_chatbot(config)
    ui = build_ui(bot, bot.retriever.stats())
    ui.queue(default_concurrency_limit=1).launch(server_name=config.host, server_port=config.port, share=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
