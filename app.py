"""Gradio chat over a local PubMed index: python app.py [--host H] [--port P] [--index-dir DIR].

Also the Hugging Face Space entry point (docs/DEPLOY.md). On first start with no index it fetches
a prebuilt one (``PUBMED_RAG_INDEX_REPO``) or builds the bundled demo corpus (progress in the
terminal / Space logs). The chat callback ``respond`` is a plain generator, testable without a
server; ``build_ui`` only wires it and the settings to components.
"""

from __future__ import annotations

import argparse
import html
import logging
import sys
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from datetime import date

from chatbot.generate import GeneratorUnavailable
from chatbot.prompts import DISCLAIMER
from cli import run_cli, setup_logging
from config import REPO_ROOT, Config, QuestionTooLong, add_config_flags, check_question
from index.causal_lm import PACKAGED_SMOLLM2
from webui.passages import matched_passages
from webui.render import PLACEHOLDER as SEARCHING
from webui.render import plain_text, render_answer, render_sources, render_status
from webui.service import ChatService, ChatSettings

log = logging.getLogger(__name__)

DEMO_CORPUS = REPO_ROOT / "data" / "demo" / "pubmed_demo.xml.gz"
DEMO_VECTORS = REPO_ROOT / "data" / "demo" / "pubmed_demo.vectors.npz"  # scripts/make_demo_vectors.py
EXAMPLES = [
    "What are the risk factors for severe COVID-19?",
    "Does opioid-free anaesthesia reduce opioid use after cardiac surgery?",
    "Does intravenous paracetamol reduce morphine consumption after surgery?",
    "Are geriatric syndromes common in older patients with atrial fibrillation?",
    "What does the WHO recommend for drug-resistant tuberculosis?",
]
TITLE = "PubMed RAG: cited answers from PubMed abstracts"
FALLBACK_NOTE = (
    " — offline fallback model: a tiny model whose answers are often wrong; "
    "judge by the quoted passages and the sources, not by the answer"
)
PLACEHOLDER = (
    "**Ask a question about the medical literature in this index.**\n\n"
    "Answers cite the abstracts they use; when the abstracts do not answer, the app says so."
)
ANSWER_CHOICES = [  # (label, Config.answer)
    ("Auto: quoted evidence with the tiny offline model", "auto"),
    ("Quoted evidence (the abstracts' own sentences)", "extractive"),
    ("Written by the model", "generate"),
]
QUEUE_SIZE = 64  # chats waiting beyond this are turned away at once instead of waiting for minutes
MAX_UPLOAD = "200mb"  # a PubMed baseline file is ~40 MB compressed
CSS = """
.disclaimer {border: 1px solid #e0a040; background: #fff8ec; color: #5a3b00; border-radius: 8px; padding: 4px 12px;}
.source-card {border: 1px solid var(--border-color-primary); border-radius: 8px; padding: 8px 12px; margin: 0 0 8px;}
.source-meta, .source-types {color: var(--body-text-color-subdued); font-size: 0.9em;}
.source-passage {border-left: 3px solid var(--color-accent); margin: 6px 0; padding-left: 8px; font-size: 0.95em;}
.source-n {font-weight: 700; margin-right: 4px;}
.badge {border-radius: 4px; padding: 0 6px; margin-right: 4px; font-size: 0.8em; font-weight: 600;}
.badge.cited {background: #dbeafe; color: #1e3a8a;}
.badge.retracted {background: #fee2e2; color: #991b1b;}
.search-query {font-size: 0.9em; margin: 0 0 6px; color: var(--body-text-color-subdued);}
.answer-checks {background: var(--background-fill-secondary); border-radius: 8px; padding: 6px 12px; font-size: 0.9em;}
"""


def respond(
    message: str, history: Sequence[Mapping], settings: ChatSettings | None = None, *, service: ChatService
) -> Iterator[tuple[str, str]]:
    """Stream (answer Markdown, sources HTML) for one chat turn.

    Closing the generator (Gradio does on Stop) sets the chatbot's stop event, which ends
    generation at the next token instead of letting the model run on for nobody.
    """
    if not message or not message.strip():
        yield "Please type a question.", ""
        return
    try:
        check_question(message.strip(), service.config)
    except QuestionTooLong as exc:
        yield f"**Please shorten the question:** {html.escape(str(exc), quote=False)}.", ""
        return
    settings = settings or ChatSettings()
    if settings.model in service.models.names and not service.models.is_loaded(settings.model):
        yield f"_Loading the model {html.escape(settings.model)} (first use, may take a minute)…_", ""
    try:
        bot = service.chatbot(settings)
    except (GeneratorUnavailable, ValueError) as exc:
        yield f"**Cannot answer:** {html.escape(str(exc), quote=False)}", ""
        return
    yield SEARCHING, ""  # at once: retrieval and the model's first words take seconds
    stop = threading.Event()
    answers = bot.stream(message, history_pairs(history), stop=stop, query_override=settings.query)
    shown: tuple[str, ...] = ()
    passages: dict[str, str] = {}
    try:
        for answer in answers:
            if tuple(h.pmid for h in answer.sources) != shown:  # once per turn: the sources are fixed
                shown = tuple(h.pmid for h in answer.sources)
                passages = answer.passages or matched_passages(answer.query or message, answer.sources, bot.encoder)
            yield render_answer(answer), render_sources(answer, passages)
    finally:
        stop.set()
        answers.close()


def history_pairs(history: Sequence[Mapping]) -> list[tuple[str, str]]:
    """Gradio's message list as (user, assistant) pairs of the plain text the model wrote."""
    pairs, user = [], None
    for message in history:
        text = _text(message.get("content"))
        if message.get("role") == "user":
            user = text
        elif message.get("role") == "assistant" and user is not None:
            pairs.append((user, plain_text(text)))
            user = None
    return pairs


def _text(content: object) -> str:
    """A message's text: Gradio 6 gives a list of typed parts, older code a plain string."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


def status_text(service: ChatService) -> str:
    fallback = FALLBACK_NOTE if service.models.default == PACKAGED_SMOLLM2.removesuffix(".gguf") else ""
    return render_status(service.stats(), service.models.default, fallback_note=fallback)


def build_ui(service: ChatService, *, examples: Sequence[str] = (), ingest: bool = False):
    """The Blocks: settings sidebar, chat with streamed answers, source cards, the ingestion tab."""
    import gradio as gr

    from webui.ingest_tab import build_ingest_tab

    sources = gr.HTML(label="Sources", render=False, js_on_load=None, elem_id="sources")
    with gr.Blocks(title=TITLE, analytics_enabled=False) as ui:
        settings = _settings_sidebar(service)
        gr.Markdown(f"# {TITLE}")
        gr.Markdown(f"⚠️ **Not medical advice.** {DISCLAIMER}", elem_classes=["disclaimer"])
        status = gr.Markdown(lambda: status_text(service), elem_id="index-status")
        with gr.Tabs():
            with gr.Tab("Ask", id="ask"), gr.Row(equal_height=False):
                with gr.Column(scale=3, min_width=340):
                    chatbot = gr.Chatbot(height=560, label="Answer", placeholder=PLACEHOLDER, sanitize_html=True)
                    gr.ChatInterface(
                        _chat_callback(service),
                        chatbot=chatbot,
                        additional_inputs=settings,
                        additional_outputs=[sources],
                        examples=[[q] for q in examples] or None,  # lists: the settings are inputs too
                        cache_examples=False,
                        concurrency_limit=service.config.max_chats,
                        fill_height=False,
                        api_name="chat",
                    )
                with gr.Column(scale=2, min_width=300):
                    sources.render()
            build_ingest_tab(service, enabled=ingest, status=status, status_text=lambda: status_text(service))
        chatbot.clear(lambda: "", None, sources, queue=False, api_visibility="private")
    return ui


def _settings_sidebar(service: ChatService) -> list:
    import gradio as gr

    from webui.service import STUDY_TYPES, TOP_K_MAX, YEAR_MIN

    config, this_year = service.config, date.today().year
    with gr.Sidebar(label="Settings", open=False):
        gr.Markdown("### Settings")
        inputs = [
            gr.Dropdown(service.models.names, value=service.models.default, label="Model"),
            gr.Dropdown(service.retrievers, value=service.retrievers[0][1], label="Retriever"),
            gr.Slider(1, TOP_K_MAX, value=config.top_k, step=1, label="Abstracts per question (top-k)"),
            gr.Slider(0.0, 1.0, value=config.min_score, step=0.01, label="Minimum similarity (below: no answer)"),
            gr.Slider(YEAR_MIN, this_year, value=YEAR_MIN, step=1, label="Published from"),
            gr.Slider(YEAR_MIN, this_year, value=this_year, step=1, label="Published until"),
            gr.CheckboxGroup(list(STUDY_TYPES), label="Study types (any of; none = all)"),
            gr.Checkbox(value=True, label="Leave out retracted publications"),
            gr.Dropdown(ANSWER_CHOICES, value=config.answer, label="Answer"),
            gr.Textbox(
                value="",  # a default, so API clients (gradio_client /chat) may leave it out
                label="Search query (optional)",
                placeholder="Empty: the question itself; a follow-up is rewritten (shown above the sources)",
                info="Searched instead of your question: paste and fix the query shown above the sources.",
            ),
        ]
    return inputs


def _chat_callback(service: ChatService):
    """The function ChatInterface calls: sidebar values -> ChatSettings -> ``respond``.

    Its parameter names are the names of the app's ``/chat`` API (gradio_client) parameters.
    """
    from webui.deploy import on_gpu

    this_year = date.today().year

    def chat(
        message: str,
        history: list,
        model: str,
        retriever: str,
        top_k: float,
        min_score: float,
        year_from: float,
        year_to: float,
        study_types: list[str],
        exclude_retracted: bool,
        answer: str = "",
        query: str = "",
    ) -> Iterator[tuple[str, str]]:
        values = (model, retriever, top_k, min_score, year_from, year_to, study_types, exclude_retracted, answer, query)
        yield from respond(message, history, ChatSettings.from_inputs(*values, this_year=this_year), service=service)

    return on_gpu(chat)


def launch_options(config: Config) -> dict[str, object]:
    """Arguments for ``Blocks.launch``: never a public share link; a login when PUBMED_RAG_AUTH is set."""
    import gradio as gr

    from webui.deploy import parse_auth

    system = ["system-ui", "-apple-system", "Segoe UI", "sans-serif"]  # no web-font download
    return {
        "server_name": config.host,
        "server_port": config.port,
        "share": False,
        "auth": parse_auth(config.auth),
        "auth_message": "This PubMed RAG deployment asks for a login.",
        "max_file_size": MAX_UPLOAD,
        "ssr_mode": False,
        "css": CSS,
        "theme": gr.themes.Soft(primary_hue="blue", font=system, font_mono=["ui-monospace", "monospace"]),
    }


def ensure_index(config: Config) -> None:
    """Fetch the prebuilt index, or build the demo one, so a fresh clone or Space works with no setup."""
    from index.checks import check_index, live_generation
    from webui.deploy import fetch_prebuilt_index

    if fetch_prebuilt_index(config) or live_generation(config.index_dir) is not None:
        check_index(config.index_dir)  # a damaged index is one clear line before minutes of model loading
        return
    from index.writer import ingest_files
    from ingest.sources import read_source

    shipped = demo_encoder(config)
    if shipped is not None:
        log.info("No index in %s: building it from the bundled demo corpus and its shipped vectors.", config.index_dir)
        ingest_files([DEMO_CORPUS], replace(config, encoder_backend="torch"), read=read_source, encoder=shipped)
        return
    log.info(
        "No index in %s: building it from the bundled demo corpus with %s (embeds 2,000 abstracts: several "
        "minutes on a laptop CPU, once).",
        config.index_dir,
        config.encoder,
    )
    ingest_files([DEMO_CORPUS], config, read=read_source)


def demo_encoder(config: Config):
    """The packaged MiniLM reading the demo's shipped vectors, when that is the encoder a new index would get
    (offline, or asked for); None otherwise (online, PubMedBERT embeds the demo itself)."""
    from index.encoder import MINILM_ID, load_encoder
    from index.hub import resolve_model
    from index.shipped import load_shipped

    if config.encoder_backend not in ("auto", "torch"):
        return None
    if config.encoder != MINILM_ID and resolve_model(config.encoder) is not None:
        return None
    encoder = load_encoder(config.encoder, backend="torch", max_seq_length=config.max_seq_length)
    return load_shipped(DEMO_VECTORS, encoder)


def open_service(config: Config) -> ChatService:
    """The live index and the configured generator, shared by every session.

    ``open_chatbot`` decides how the index is opened (retriever, reranker) and which generator
    loads, exactly as for ``python -m chatbot``; the app only shares them.
    """
    from chatbot.chat import open_chatbot
    from index.search import PubMedIndex
    from webui.models import Models

    bot = open_chatbot(config)
    if not isinstance(bot.retriever, PubMedIndex):
        raise TypeError(f"the app needs a PubMedIndex to search, not {type(bot.retriever).__name__}")
    return ChatService(bot.retriever, Models(bot.generator, config), config)


def warm_up(service: ChatService) -> None:
    """Models loaded while the page already serves; a failure here only means the first answer loads them."""
    try:
        service.warm()
        log.info("Models ready: the first answer starts at once.")
    except Exception as exc:  # the chat reports the same problem, with its own message, when it happens
        log.warning("Warm-up failed (%s); models load on the first question instead.", exc)


def parse_config(argv: list[str] | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """Flags > ``PUBMED_RAG_*`` > Gradio's ``GRADIO_SERVER_NAME``/``GRADIO_SERVER_PORT`` > defaults."""
    parser = argparse.ArgumentParser(prog="python app.py", description=__doc__)
    add_config_flags(parser, "host", "port", "index_dir", "index_repo", "allow_ingest", "max_chats")
    add_config_flags(parser, "generator", "model", "models", "backend", "endpoint", "context_window")
    add_config_flags(parser, "top_k", "min_score", "max_new_tokens", "temperature", "max_question_chars")
    add_config_flags(parser, "retriever", "rerank", "rerank_depth", "answer", "gate")
    args = parser.parse_args(argv)
    return Config.from_env(None if environ is None else dict(environ)).with_args(args)


def main(argv: list[str] | None = None) -> int:
    setup_logging()

    def work() -> int:
        from webui.deploy import ingest_enabled, parse_auth, zero_gpu
        from webui.service import answerable_examples

        config = parse_config(argv)  # inside: a bad PUBMED_RAG_* value is one clear line too
        parse_auth(config.auth)  # malformed settings fail before minutes of loading
        ingest = ingest_enabled(config)
        on_zero_gpu = zero_gpu()  # imports `spaces` before torch, as ZeroGPU requires
        ensure_index(config)
        service = open_service(config)
        if on_zero_gpu:
            service.models.preload()
        examples = answerable_examples(service.index, EXAMPLES, config.min_score, gate=config.gate == "on")
        threading.Thread(target=warm_up, args=(service,), name="warm-up", daemon=True).start()
        ui = build_ui(service, examples=examples, ingest=ingest)
        ui.queue(max_size=QUEUE_SIZE, default_concurrency_limit=1).launch(**launch_options(config))
        return 0

    from index.encoder import EncoderUnavailable
    from index.storage import IndexBusy, IndexNotFound
    from ingest.records import SourceError

    return run_cli(work, (IndexNotFound, IndexBusy, EncoderUnavailable, GeneratorUnavailable, SourceError, ValueError))


if __name__ == "__main__":
    sys.exit(main())
