"""Reranking of the first-stage candidates: a cross-encoder, or query likelihood under a small LM.

A cross-encoder reads the question and one abstract together, so it can weigh every word of one
against the other, which a bi-encoder's single vector cannot; it is far too slow to score the
whole index, so it reorders the top ``CROSS_ENCODER_DEPTH`` candidates of the
retriever. The default model is ``ncbi/MedCPT-Cross-Encoder`` (PubMedBERT trained on PubMed
search logs, Jin et al. 2023), loaded through ``sentence_transformers.CrossEncoder`` like any
other cross-encoder; it reads "title abstract" as MedCPT's article side.

The second kind needs no relevance-trained model at all (UPR, Sachan et al. 2022; Zhuang et al.
2023): ``QueryLikelihoodReranker`` asks a small causal LM how likely the question is as a
question written about each candidate, ``log P(question | "Passage: <abstract> Please write a
question based on this passage. Question:")``, averaged over the question's tokens (nats per
token), and reorders the top ``QL_DEPTH`` by ``first-stage score + QL_WEIGHT * that``. The LM reads
every word of the abstract before it sees the question, which a single-vector retriever cannot.
On its own a 135M-parameter LM's order is better than the first stage on PubMedQA dev but worse on
BioASQ; added to the first stage's z-score it lifts both dev sets (BENCHMARKS.md). Each candidate
costs one forward pass over its first ``QL_PASSAGE_TOKENS`` tokens (~0.2 s on 2 CPU cores, SmolLM2-135M),
so only the candidates that could still overtake the first hit are read (``QL_REACH``): a confident
first stage costs nothing, and every dev-set ranking stays what reading all five gives.

Offline-first like every model here: when the model is neither a local folder nor cached and the
Hub cannot be reached, ``load_reranker`` logs one clear warning and returns None, and search goes
on without reranking. Remote code is never trusted. Reranking changes the order only: hits keep
their cosine ``score`` so that abstention thresholds mean the same with and without it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from index.causal_lm import SMOLLM2_ID, load_causal_lm, packaged_smollm2
from index.hub import resolve_model
from ingest.records import Article

log = logging.getLogger(__name__)

DEFAULT_RERANKER = "ncbi/MedCPT-Cross-Encoder"
MAX_LENGTH = 512  # MedCPT's training length; question + title + abstract rarely exceed it
CROSS_ENCODER_DEPTH = 50  # candidates a cross-encoder rescores: the first-stage recall@50 is ~1 on the dev sets
QL = "ql"  # --rerank ql, or ql:MODEL (a causal LM: Hub id, folder or .gguf file)
DEFAULT_QL_MODEL = SMOLLM2_ID
QL_DEPTH = 5  # candidates the LM reads per question: the chatbot's default top_k, what it shows and cites
QL_WEIGHT = 0.5  # of the mean log-probability, added to the first stage's z-score (dev sets: 0.25-3 all help)
QL_PASSAGE_TOKENS = 128  # the abstract's first tokens the LM reads: 384 took 3x the time, same R@1 (BENCHMARKS.md)
# How far (nats per token of the LM's mean log-probability) a candidate's question likelihood may exceed the
# first hit's: a candidate whose first-stage score trails the best by QL_WEIGHT * QL_REACH or more cannot
# overtake it, so the LM does not read it, and when none is within reach (a confident first stage) no LM runs.
# The largest lead seen among the top 5 of 792 dev questions was 1.74 (BioASQ; PubMedQA 1.42), so at 2.0
# every dev ranking equals reading all five, for 0.44 (PubMedQA) and 2.06 (BioASQ) abstracts read per
# question instead of 5 (benchmarks/rerank_budget.py, BENCHMARKS.md).
QL_REACH = 2.0
QL_PROMPT = "Passage: {passage}"
QL_INSTRUCTION = "\nPlease write a question based on this passage.\nQuestion:"
OFF = ("", "off", "none", "no", "false", "0")
ON = ("on", "yes", "true", "1", "default")


class Reranker(Protocol):
    name: str
    depth: int  # how many first-stage candidates it reorders

    def rerank(self, query: str, articles: Sequence[Article], scores: Sequence[float] | None = None) -> list[Article]:
        """``articles`` (best first, with the first stage's ``scores``) in the reranker's order."""
        ...


class CrossEncoderReranker:
    """Any sentence-transformers ``CrossEncoder`` whose first output is a relevance score."""

    depth = CROSS_ENCODER_DEPTH

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

    def rerank(self, query: str, articles: Sequence[Article], scores: Sequence[float] | None = None) -> list[Article]:
        """``articles`` by descending cross-encoder score (ties keep the first-stage order)."""
        if len(articles) < 2:
            return list(articles)
        order = np.argsort(-self.scores(query, articles), kind="stable")
        return [articles[i] for i in order]


class QueryLikelihoodReranker:
    """Reorders the top ``depth`` candidates by first-stage score + ``weight`` * the LM's mean
    log-probability of the question (by that alone when no first-stage scores are given)."""

    def __init__(
        self,
        path: str,
        *,
        name: str,
        gguf_file: str | None = None,
        depth: int = QL_DEPTH,
        weight: float = QL_WEIGHT,
        passage_tokens: int = QL_PASSAGE_TOKENS,
        reach: float = QL_REACH,
    ) -> None:
        self.tokenizer, self.model = load_causal_lm(path, gguf_file=gguf_file)
        self.name = name
        self.depth = depth
        self.weight = weight
        self.passage_tokens = passage_tokens
        self.reach = reach

    def _ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def scores(self, query: str, articles: Sequence[Article]) -> np.ndarray:
        """Mean log P(question token | passage, instruction, earlier question tokens), per article."""
        import torch

        question = self._ids(" " + query.strip())
        if not articles or not query.strip():
            return np.zeros(len(articles), dtype=np.float32)
        instruction = self._ids(QL_INSTRUCTION)
        rows = [
            self._ids(QL_PROMPT.format(passage=f"{a.title} {a.abstract}".strip()))[: self.passage_tokens]
            + instruction
            + question
            for a in articles
        ]
        width = max(map(len, rows))
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows])  # left padding: questions line up
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
        positions = (mask.cumsum(1) - 1).clamp(min=0)
        n = len(question)
        with torch.inference_mode():
            logits = (
                self.model(
                    input_ids=ids.to(self.model.device),
                    attention_mask=mask.to(self.model.device),
                    position_ids=positions.to(self.model.device),
                    logits_to_keep=n + 1,
                )
                .logits[:, :-1]
                .float()
            )
        targets = torch.tensor(question, device=logits.device).expand(len(rows), n)
        log_probs = torch.log_softmax(logits, dim=-1).gather(2, targets.unsqueeze(-1)).squeeze(-1)
        return log_probs.mean(dim=1).cpu().numpy()

    def rerank(self, query: str, articles: Sequence[Article], scores: Sequence[float] | None = None) -> list[Article]:
        """The first ``depth`` articles reordered (ties keep the first-stage order), then the rest as they came.

        With first-stage ``scores``, only the candidates within reach of the best (``contenders``) are
        read and reordered, ahead of the others in their first-stage order: the LM's cost is paid only
        where the first stage is unsure."""
        head, tail = list(articles[: self.depth]), list(articles[self.depth :])
        if scores is None:
            chosen = list(range(len(head)))
            first_stage = np.zeros(len(head))
        else:
            first_stage = np.asarray(scores[: len(head)], dtype=np.float64)
            chosen = contenders(first_stage, self.weight * self.reach)
        if len(chosen) < 2:
            return head + tail
        total = first_stage[chosen] + self.weight * self.scores(query, [head[i] for i in chosen])
        reordered = [chosen[i] for i in np.argsort(-total, kind="stable")]
        rest = [i for i in range(len(head)) if i not in set(chosen)]
        return [head[i] for i in reordered + rest] + tail


def contenders(first_stage: np.ndarray, margin: float) -> list[int]:
    """Positions whose first-stage score is within ``margin`` of the best, in their order."""
    if len(first_stage) == 0:
        return []
    best = float(np.max(first_stage))
    return [i for i, s in enumerate(first_stage) if best - s < margin]


def reranker_id(setting: str) -> str | None:
    """The model a ``--rerank`` setting names: None for off, the MedCPT id for on, the LM for ql[:MODEL]."""
    value = setting.strip()
    if value.lower() in OFF:
        return None
    if value.lower() in ON:
        return DEFAULT_RERANKER
    if value.lower() == QL:
        return DEFAULT_QL_MODEL
    if value.lower().startswith(QL + ":"):
        return value[len(QL) + 1 :].strip() or DEFAULT_QL_MODEL
    return value


def is_query_likelihood(setting: str) -> bool:
    value = setting.strip().lower()
    return value == QL or value.startswith(QL + ":")


class LazyReranker:
    """A reranker loaded on its first ``rerank``: opening an index (``index stats``, the app's start)
    never loads a model it may not use. Unavailable offline: warned once, then search goes on without it."""

    def __init__(self, setting: str, *, max_length: int = MAX_LENGTH, depth: int = 0) -> None:
        self.setting, self.max_length = setting, max_length
        self.name = reranker_id(setting) or ""
        self.depth = depth or (QL_DEPTH if is_query_likelihood(setting) else CROSS_ENCODER_DEPTH)
        self._loaded: Reranker | None = None
        self._tried = False

    def load(self) -> Reranker | None:
        if not self._tried:
            self._loaded = load_reranker(self.setting, max_length=self.max_length, depth=self.depth)
            self._tried = True
        return self._loaded

    def rerank(self, query: str, articles: Sequence[Article], scores: Sequence[float] | None = None) -> list[Article]:
        reranker = self.load()
        return reranker.rerank(query, articles, scores) if reranker is not None else list(articles)


def lazy_reranker(setting: str, *, max_length: int = MAX_LENGTH, depth: int = 0) -> LazyReranker | None:
    """None for ``off``; otherwise the reranker ``setting`` names, loaded when first needed."""
    return LazyReranker(setting, max_length=max_length, depth=depth) if reranker_id(setting) else None


def load_reranker(setting: str, *, max_length: int = MAX_LENGTH, depth: int = 0) -> Reranker | None:
    """The reranker ``setting`` asks for, or None (off, or unavailable offline: warned once, here).
    ``depth`` > 0 overrides how many candidates it reorders."""
    model_id = reranker_id(setting)
    if model_id is None:
        return None
    if is_query_likelihood(setting):
        reranker = _query_likelihood(model_id)
    else:
        path = resolve_model(model_id)
        reranker = CrossEncoderReranker(path, name=model_id, max_length=max_length) if path else None
    if reranker is None:
        log.warning(
            "Reranking skipped: the model %s is not cached and the Hugging Face Hub cannot be reached. "
            "Connect once to download it, or pass a local folder with --rerank PATH (ql:PATH for an LM).",
            model_id,
        )
        return None
    if depth > 0:
        reranker.depth = depth
    return reranker


def _query_likelihood(model_id: str) -> QueryLikelihoodReranker | None:
    """The LM from a .gguf file, a folder or the Hub; SmolLM2 falls back to its packaged GGUF offline."""
    gguf = Path(model_id).expanduser()
    if gguf.suffix == ".gguf" and gguf.is_file():
        return QueryLikelihoodReranker(str(gguf.parent), gguf_file=gguf.name, name=model_id)
    path = resolve_model(model_id)
    if path is not None:
        return QueryLikelihoodReranker(path, name=model_id)
    packaged = packaged_smollm2() if model_id == SMOLLM2_ID else None
    if packaged is None:
        return None
    return QueryLikelihoodReranker(str(packaged.parent), gguf_file=packaged.name, name=packaged.stem)
