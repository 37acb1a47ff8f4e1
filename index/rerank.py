"""Cross-encoder reranking of the first-stage candidates (optional, off by default).

A cross-encoder reads the question and one abstract together, so it can weigh every word of one
against the other, which a bi-encoder's single vector cannot; it is far too slow to score the
whole index, so it reorders the top ``RERANK_DEPTH`` (``index/search.py``) candidates of the
retriever. The default model is ``ncbi/MedCPT-Cross-Encoder`` (PubMedBERT trained on PubMed
search logs, Jin et al. 2023), loaded through ``sentence_transformers.CrossEncoder`` like any
other cross-encoder; it reads "title abstract" as MedCPT's article side.

Offline-first like every model here: when the model is neither a local folder nor cached and the
Hub cannot be reached, ``load_reranker`` logs one clear warning and returns None, and search goes
on without reranking. Remote code is never trusted. Reranking changes the order only: hits keep
their cosine ``score`` so that abstention thresholds mean the same with and without it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Protocol

import numpy as np

from index.hub import resolve_model
from ingest.records import Article

log = logging.getLogger(__name__)

DEFAULT_RERANKER = "ncbi/MedCPT-Cross-Encoder"
MAX_LENGTH = 512  # MedCPT's training length; question + title + abstract rarely exceed it
OFF = ("", "off", "none", "no", "false", "0")
ON = ("on", "yes", "true", "1", "default")


class Reranker(Protocol):
    name: str

    def rerank(self, query: str, articles: Sequence[Article]) -> list[Article]: ...


class CrossEncoderReranker:
    """Any sentence-transformers ``CrossEncoder`` whose first output is a relevance score."""

    def __init__(self, path: str, *, name: str, max_length: int = MAX_LENGTH, batch_size: int = 16) -> None:
        import torch
        from sentence_transformers import CrossEncoder

        torch.set_grad_enabled(False)
        device = None if torch.cuda.is_available() else "cpu"
        self.model = CrossEncoder(path, device=device, max_length=max_length, trust_remote_code=False)
        self.name = name
        self.batch_size = batch_size

    def scores(self, query: str, articles: Sequence[Article]) -> np.ndarray:
        pairs = [(query, f"{a.title} {a.abstract}".strip()) for a in articles]
        raw = self.model.predict(pairs, batch_size=self.batch_size, show_progress_bar=False, convert_to_numpy=True)
        raw = np.asarray(raw, dtype=np.float32)
        return raw.reshape(len(articles), -1)[:, 0] if len(articles) else raw  # first logit: relevance

    def rerank(self, query: str, articles: Sequence[Article]) -> list[Article]:
        """``articles`` by descending cross-encoder score (ties keep the first-stage order)."""
        if len(articles) < 2:
            return list(articles)
        order = np.argsort(-self.scores(query, articles), kind="stable")
        return [articles[i] for i in order]


def reranker_id(setting: str) -> str | None:
    """The model a ``--rerank`` setting names: None for off, the MedCPT id for on, else itself."""
    value = setting.strip()
    if value.lower() in OFF:
        return None
    return DEFAULT_RERANKER if value.lower() in ON else value


def load_reranker(setting: str, *, max_length: int = MAX_LENGTH) -> CrossEncoderReranker | None:
    """The reranker ``setting`` asks for, or None (off, or unavailable offline: warned once, here)."""
    model_id = reranker_id(setting)
    if model_id is None:
        return None
    path = resolve_model(model_id)
    if path is None:
        log.warning(
            "Reranking skipped: the cross-encoder %s is not cached and the Hugging Face Hub cannot be "
            "reached. Connect once to download it, or pass a local folder with --rerank PATH.",
            model_id,
        )
        return None
    return CrossEncoderReranker(path, name=model_id, max_length=max_length)
