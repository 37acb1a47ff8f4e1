"""One configuration object for every stage: defaults, environment, command-line flags.

Precedence is flag > environment (``PUBMED_RAG_<FIELD>``) > default. Each stage receives the
``Config`` explicitly; nothing reads the environment behind its back.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from pathlib import Path

ENV_PREFIX = "PUBMED_RAG_"
REPO_ROOT = Path(__file__).resolve().parent

# A real, open PubMedBERT sentence encoder (768-d, mean pooling) for users who can reach the Hub.
DEFAULT_ENCODER = "NeuML/pubmedbert-base-embeddings"
# Qwen2.5-1.5B-Instruct: Apache-2.0, follows "cite [n]" instructions reliably, and at 1.5B
# parameters answers in tens of seconds on a laptop CPU (7B medical models need a GPU).
DEFAULT_GENERATOR = "Qwen/Qwen2.5-1.5B-Instruct"
# Most hits one question or search may ask for: each is ranked, may be reranked, and is read.
MAX_TOP_K = 100
# Most first-stage candidates one search may rerank: each costs a model pass (a cross-encoder's
# default is 50; query likelihood reads 5, at seconds per candidate on a CPU).
MAX_RERANK_DEPTH = 100


@dataclass(frozen=True)
class Config:
    index_dir: Path = REPO_ROOT / "data" / "index"  # where the FAISS index, metadata and manifest live
    encoder: str = DEFAULT_ENCODER  # sentence-transformers id or local path used to build an index
    batch_size: int = 32  # texts per encoder call while ingesting
    max_seq_length: int = 256  # encoder token limit; title + abstract rarely exceed it
    generator: str = DEFAULT_GENERATOR  # causal LM id or local folder that writes the answers
    top_k: int = 5  # abstracts retrieved and shown to the model per question
    min_score: float = 0.35  # below this cosine similarity a hit is not evidence (calibrated for MiniLM)
    max_new_tokens: int = 320  # cap on answer length
    passage_tokens: int = -1  # tokens of each source the model reads (its closest sentences); 0 = all; -1 = by model
    temperature: float = 0.0  # 0 = greedy decoding: reproducible answers
    host: str = "127.0.0.1"  # app bind address (0.0.0.0 to serve a network / a Space)
    port: int = 7860  # app port
    workers: int = 0  # CPU threads for the encoder while ingesting (0 = every core)
    device: str = "auto"  # encoder device while ingesting: auto (a GPU when present), cpu, cuda, mps
    download_dir: Path = REPO_ROOT / "data" / "downloads"  # E-utilities batches and NCBI update files
    eutils_url: str = "https://eutils.ncbi.nlm.nih.gov/entrez/eutils/"  # NCBI E-utilities base URL
    pubmed_files_url: str = "https://ftp.ncbi.nlm.nih.gov/pubmed/"  # holds baseline/ and updatefiles/
    ncbi_api_key: str = ""  # NCBI API key (NCBI_API_KEY also works): 10 instead of 3 requests/s
    ncbi_email: str = ""  # contact address NCBI asks E-utilities users to send
    model: str = ""  # generator preset (docs/MODELS.md): format + settings; --generator overrides its weights
    backend: str = "auto"  # generator backend: auto (llama.cpp on CPU, transformers on GPU), transformers, llama.cpp
    endpoint: str = ""  # OpenAI-compatible server URL (vLLM, TGI, Ollama, llama.cpp server); empty = local
    api_key: str = ""  # bearer token for --endpoint; set PUBMED_RAG_API_KEY rather than a flag
    context_window: int = 0  # tokens the generator reads; 0 = the preset's or the model's own
    models: str = ""  # app: more generators for its model menu (preset names or ids, comma-separated)
    max_chats: int = 2  # app: answers generated at once (they share the CPU); later chats wait in the queue
    allow_ingest: str = "auto"  # app "Add abstracts" tab: auto (on when local or behind a login), on, off
    auth: str = ""  # app login "user:password[,user2:password2]"; set PUBMED_RAG_AUTH, never a flag
    index_repo: str = ""  # prebuilt index: HF dataset repo[@revision] or hf://buckets/..., fetched into an empty index
    retriever: str = "hybrid"  # dense, bm25 or hybrid (both fused by weighted z-scores; best measured, BENCHMARKS.md)
    rerank: str = "ql"  # off; on (ncbi/MedCPT-Cross-Encoder) or a cross-encoder id/path; ql[:LM] (query likelihood)
    rerank_depth: int = 0  # first-stage candidates the reranker reorders; 0 = its own (cross-encoder 50, ql 5)
    query_encoder: str = ""  # a new index's query-side model when it differs from --encoder; "" = same or known pair
    index_type: str = "auto"  # vector index: flat (exact), hnsw, ivfpq, or auto (flat below 500k abstracts)
    encoder_backend: str = "auto"  # what runs a new index's encoder: auto, torch, onnx or onnx-int8 (docs/INGEST.md)
    answer: str = "auto"  # extractive (quoted sentences), generate, or auto: extractive with the tiny offline model
    gate: str = "on"  # evidence-sufficiency gate (chatbot/gate.py): on, or off (only min_score per hit)
    max_question_chars: int = 1000  # longer questions are refused: every step's cost grows with the question

    def __post_init__(self) -> None:
        """Bounds on what one request may cost; a value outside them is an error naming its setting."""
        if not 1 <= self.top_k <= MAX_TOP_K:
            raise ValueError(f"top_k={self.top_k}: must be 1 to {MAX_TOP_K}")
        if not 0 <= self.rerank_depth <= MAX_RERANK_DEPTH:
            raise ValueError(f"rerank_depth={self.rerank_depth}: must be 0 (the reranker's own) to {MAX_RERANK_DEPTH}")
        if self.passage_tokens < -1:
            raise ValueError(f"passage_tokens={self.passage_tokens}: must be -1 (by model), 0 (all) or more")
        if self.max_question_chars < 1:
            raise ValueError(f"max_question_chars={self.max_question_chars}: must be at least 1")

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Config:
        """Defaults overridden by ``PUBMED_RAG_*`` variables (and Gradio's own server vars)."""
        environ = dict(os.environ if environ is None else environ)
        environ.setdefault(ENV_PREFIX + "HOST", environ.get("GRADIO_SERVER_NAME", ""))
        environ.setdefault(ENV_PREFIX + "PORT", environ.get("GRADIO_SERVER_PORT", ""))
        changes = {}
        for f in fields(cls):
            value = environ.get(ENV_PREFIX + f.name.upper(), "")
            if value:
                changes[f.name] = _coerce(f.name, value)
        return replace(cls(), **changes)

    def with_args(self, args: argparse.Namespace) -> Config:
        """Apply the flags the user actually gave (argparse leaves the others as None)."""
        names = {f.name for f in fields(self)}
        given = {k: v for k, v in vars(args).items() if k in names and v is not None}
        return replace(self, **{k: _coerce(k, v) for k, v in given.items()})


def _coerce(name: str, value: object) -> object:
    default = getattr(Config(), name)
    try:
        if isinstance(default, Path):
            return Path(value).expanduser()
        return type(default)(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"configuration {name}={value!r}: expected {type(default).__name__}") from exc


class QuestionTooLong(ValueError):
    pass


def check_question(question: str, config: Config) -> str:
    """``question`` when it is within ``config.max_question_chars``; else ``QuestionTooLong`` saying so."""
    if len(question) > config.max_question_chars:
        raise QuestionTooLong(
            f"the question is {len(question):,} characters long; the limit is {config.max_question_chars:,} "
            f"(max_question_chars): ask it in a sentence or two"
        )
    return question


def bounded_int(low: int, high: int) -> Callable[[str], int]:
    """An argparse type for a whole number from ``low`` to ``high``: a bound on what one request costs."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is out of range: give {low} to {high}")
        return value

    return parse


top_k_value = bounded_int(1, MAX_TOP_K)  # ``-k`` / ``--top-k``
_BOUNDED = {"top_k": top_k_value, "rerank_depth": bounded_int(0, MAX_RERANK_DEPTH)}


def add_config_flags(parser: argparse.ArgumentParser, *names: str) -> None:
    """Add ``--index-dir`` style flags for the named fields, documented from their defaults."""
    defaults = Config()
    for name in names:
        default = getattr(defaults, name)
        parser.add_argument(
            "--" + name.replace("_", "-"),
            dest=name,
            default=None,
            type=_BOUNDED.get(name) or (str if isinstance(default, Path) else type(default)),
            help=f"{_HELP[name]} (env {ENV_PREFIX}{name.upper()}; default: {default})",
        )


_HELP = {
    "index_dir": "index directory",
    "encoder": "sentence-transformers model id or local path for a new index",
    "batch_size": "texts per encoder batch",
    "max_seq_length": "encoder token limit per abstract",
    "generator": "causal LM id or local folder that writes answers",
    "top_k": f"abstracts retrieved per question, 1 to {MAX_TOP_K}",
    "min_score": "minimum similarity for a hit to count as evidence",
    "max_new_tokens": "maximum answer length in tokens",
    "passage_tokens": "tokens of each source the model reads: its sentences closest to the question (0 = whole "
    "abstracts; -1 = by model: whole abstracts for the tiny offline SmolLM2, 40 for others)",
    "temperature": "sampling temperature (0 = greedy)",
    "host": "address the app binds to",
    "port": "port the app listens on",
    "workers": "encoder CPU threads while ingesting (0 = every core)",
    "device": "encoder device while ingesting: auto, cpu, cuda or mps",
    "download_dir": "folder for downloaded PubMed batches and update files",
    "eutils_url": "NCBI E-utilities base URL",
    "pubmed_files_url": "base URL of NCBI's PubMed baseline/ and updatefiles/ folders",
    "ncbi_api_key": "NCBI API key (or NCBI_API_KEY)",
    "ncbi_email": "contact e-mail sent to NCBI E-utilities",
    "model": "generator preset, e.g. biomistral-7b or meditron-7b (see docs/MODELS.md)",
    "backend": "local generator backend: auto (llama.cpp with quantised GGUF weights on a CPU, transformers on a GPU), "
    "transformers or llama.cpp",
    "endpoint": "OpenAI-compatible server URL, e.g. http://127.0.0.1:8000/v1",
    "api_key": "bearer token for the endpoint",
    "context_window": "generator context window in tokens (0 = the model's own)",
    "models": "more generators the app's model menu offers, comma-separated (preset names or ids)",
    "max_chats": "answers the app generates at once; more chats wait in the queue",
    "allow_ingest": "the app's Add abstracts tab: auto (local or behind a login), on or off",
    "auth": "app login user:password[,user2:password2]",
    "index_repo": "prebuilt index to fetch into an empty index dir: HF dataset repo[@revision] or hf://buckets/NAME",
    "retriever": "ranking: dense (embeddings), bm25 (words) or hybrid (both, fused)",
    "rerank": "rerank the top candidates: off; on (cross-encoder ncbi/MedCPT-Cross-Encoder) or a cross-encoder "
    "id/path; ql (query likelihood under SmolLM2-135M, packaged offline) or ql:LM (a causal LM id, folder or .gguf)",
    "rerank_depth": f"candidates the reranker reorders, 0 to {MAX_RERANK_DEPTH} (0 = its default: 50 for a "
    "cross-encoder, 5 for ql)",
    "query_encoder": "query encoder of a new asymmetric index, e.g. ncbi/MedCPT-Query-Encoder",
    "index_type": "vector index built at ingest: auto, flat, hnsw or ivfpq",
    "max_question_chars": "longest question accepted, in characters",
    "encoder_backend": "encoder runtime of a new index: auto (onnx-int8 on CPU, torch on GPU), torch, onnx, onnx-int8",
    "answer": "answer style: extractive (the abstracts' best sentences, quoted and cited), generate (the model "
    "writes), or auto (extractive with the tiny offline fallback model, generate otherwise)",
    "gate": "evidence gate: on (abstain when the retrieved abstracts cannot answer, calibrated on the dev sets) or off",
}
