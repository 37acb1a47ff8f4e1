"""The "Add abstracts" tab: ingestion without a shell (a Space has none).

``add_abstracts`` is the whole job as a plain function: check the uploaded files with the same
``expand_sources`` the command line uses (so every format it reads works here), optionally run a
PubMed query through E-utilities, ingest incrementally into the live index directory, then reopen
the index and swap it into the chat service. Until that swap, chats keep answering from the old
generation; an ingest that fails commits nothing, so the chats never see a half-built index.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from config import Config
from ingest.records import IngestSummary, SourceError
from webui.render import escape_markdown
from webui.service import ChatService

log = logging.getLogger(__name__)
T = TypeVar("T")

MAX_QUERY_RECORDS = 10_000  # a bigger PubMed search belongs on the command line (and in a download folder)
Progress = Callable[..., object]  # gr.Progress: progress(fraction, desc=...)
FetchQuery = Callable[[str, Config], list[Path]]
DISABLED_NOTE = (
    "Adding abstracts is **off** on this deployment: anyone could rewrite the index. Turn it on with "
    "`PUBMED_RAG_ALLOW_INGEST=on`, or require a login with `PUBMED_RAG_AUTH=user:password` "
    "(see docs/DEPLOY.md)."
)
INTRO = (
    "Upload PubMed XML (`.xml`, `.xml.gz`), MEDLINE (`.nbib`, `.txt` export), JSON Lines or CSV files, "
    "or enter a PubMed query. Records are added incrementally: unchanged abstracts are not embedded "
    "again, files already ingested are skipped. Chats keep working and switch to the new index once "
    "it is committed; if any source cannot be read, nothing is written."
)


def upload_types() -> list[str]:
    """File endings the upload box accepts (the last suffix: browsers match no more than that)."""
    from ingest.sources import SUPPORTED

    return sorted({"." + s.split()[0].rsplit(".", 1)[-1] for s in SUPPORTED})


def fetch_pubmed(query: str, config: Config) -> list[Path]:
    """Download the records a PubMed query finds, refusing searches too large for an app request."""
    from ingest.eutils import EUtils, download_query

    count = EUtils(config).search(query).count
    if count > MAX_QUERY_RECORDS:
        raise SourceError(
            f"pubmed:{query}",
            f"{count:,} records found, more than the {MAX_QUERY_RECORDS:,} the app ingests at once",
            "narrow the query, or run python -m ingest on the command line",
        )
    if count == 0:
        raise SourceError(f"pubmed:{query}", "PubMed found no records", "check the query")
    return download_query(query, config)


def add_abstracts(
    files: list[str] | None,
    query: str,
    *,
    service: ChatService,
    fetch_query: FetchQuery = fetch_pubmed,
    progress: Progress | None = None,
) -> str:
    """Ingest ``files`` and the records of ``query``; returns the end summary as Markdown."""
    from index.encoder import EncoderUnavailable
    from index.storage import IndexBusy
    from index.writer import ingest_files
    from ingest.eutils import PREFIX
    from ingest.sources import expand_sources, read_source

    report = progress or (lambda *_args, **_kwargs: None)
    query = (query or "").strip().removeprefix(PREFIX).strip()
    if not files and not query:
        return "Choose files to upload or enter a PubMed query."
    config = service.config
    try:
        report(0.0, desc="Checking the sources")
        paths = expand_sources([str(f) for f in files or []], read=read_source)  # every failure listed at once
        if query:
            report(0.02, desc="Searching PubMed")
            paths += fetch_query(query, config)
        report(0.05, desc="Reading and embedding")
        encoder = service.index.encoder
        summary = run_niced(lambda: ingest_files(paths, config, read=read_source, encoder=encoder, progress=True))
    except (SourceError, IndexBusy, EncoderUnavailable, ValueError) as exc:
        log.warning("Add abstracts failed: %s", exc)
        shown = str(exc).replace("`", "'")  # inside the code block: no markup, no link, no way out of it
        return f"**Nothing was added; the index is unchanged.**\n\n```\n{shown}\n```"
    if not summary.sources:
        skipped = f" {summary.skipped:,} malformed record(s) skipped: the log names each." if summary.skipped else ""
        return "Nothing to do: the files are already in the index (same checksum) or hold no usable record." + skipped
    report(0.98, desc="Opening the new index")
    stats = service.reload_index().stats()
    return render_summary(summary, stats)


INGEST_NICE = 10  # the ingest's threads yield the cores to chats (a chat's first words wait otherwise)


def run_niced(work: Callable[[], T], nice: int = INGEST_NICE) -> T:
    """``work()`` on a new thread of lower CPU priority; the threads it starts (the embedder) inherit it.

    A thread of its own, because a raised nice value cannot be lowered again without privileges, and
    Gradio reuses its worker threads for chats. Where per-thread priority is unsupported, it just runs.
    """
    outcome: dict[str, object] = {}

    def run() -> None:
        with contextlib.suppress(AttributeError, OSError):  # per-thread priority is a Linux feature
            me = threading.get_native_id()  # relative: an app already started niced is never raised (as root)
            os.setpriority(os.PRIO_PROCESS, me, min(os.getpriority(os.PRIO_PROCESS, me) + nice, 19))
        try:
            outcome["value"] = work()
        except BaseException as exc:  # re-raised on the calling thread
            outcome["error"] = exc

    worker = threading.Thread(target=run, name="ingest", daemon=True)
    worker.start()
    worker.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def render_summary(summary: IngestSummary, stats: dict[str, object]) -> str:
    counts = " · ".join(
        f"{name.replace('_', ' ')} {value:,}" for name, value in summary.as_dict().items() if name != "sources"
    )
    names = ", ".join(escape_markdown(Path(s).name) for s in summary.sources)  # an upload's name is untrusted
    return (
        f"**Done.** {counts}.\n\nSources: {names}\n\n"
        f"Chats now search **{int(stats['documents']):,} abstracts** ({escape_markdown(str(stats['generation']))})."
    )


def build_ingest_tab(service: ChatService, *, enabled: bool, status, status_text: Callable[[], str]) -> None:
    """The tab's components and its one event; when disabled, only a note (and no endpoint at all)."""
    import gradio as gr

    with gr.Tab("Add abstracts", id="ingest"):
        if not enabled:
            gr.Markdown(DISABLED_NOTE)
            return
        gr.Markdown(INTRO)
        files = gr.File(label="Files", file_count="multiple", file_types=upload_types())
        query = gr.Textbox(label="PubMed query (optional)", placeholder="asthma budesonide-formoterol 2023[dp]")
        button = gr.Button("Add to the index", variant="primary")
        result = gr.Markdown()

        def run(files: list[str] | None, query: str, progress=gr.Progress(track_tqdm=True)) -> tuple[str, str]:  # noqa: B008
            return add_abstracts(files, query, service=service, progress=progress), status_text()

        # One ingest at a time (the index has one writer); private: not callable through the API.
        button.click(
            run,
            [files, query],
            [result, status],
            concurrency_limit=1,
            concurrency_id="ingest",
            api_visibility="private",
        )
