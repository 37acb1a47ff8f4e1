"""The extractive answer: the retrieved abstracts' own sentences that best answer the question.

A generator can be worse than the evidence it was given (the packaged 135M-parameter fallback
usually is), and any generator can degenerate (``chatbot/clean.py``). Then the answer is the
best sentence of each of the top abstracts, quoted word for word, each cited ``[n]`` and headed
``EXTRACTIVE_HEADING`` so nobody takes it for a written answer. Sentences are scored against the
question with the index's own encoder (cosine, as ``webui/passages.py`` picks a card's passage),
with a small bonus for an abstract's conclusion, where findings are stated; without an encoder,
by the share of the question's content words they contain.

What it does not do: it states no verdict and does not reconcile conflicting abstracts; the
reader sees the findings side by side.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from chatbot.clean import strip_markup
from chatbot.prompts import EXTRACTIVE_HEADING
from index.encoder import Encoder
from index.search import Hit
from ingest.records import EMBED_CHARS

MAX_QUOTES = 3  # sentences quoted: one each from the best-matching abstracts
FLOOR_BELOW_BEST = 0.15  # a sentence this much less similar than the best quote adds noise, not evidence
CONCLUSION_BONUS = 0.05  # cosine added to a conclusion's sentences: where an abstract states its finding
MIN_QUOTE_WORDS = 6  # shorter "sentences" are labels, figures or fragments
CONCLUSION_LABELS = ("CONCLUSION", "INTERPRETATION", "SIGNIFICANCE", "IMPLICATIONS")

# A sentence ends at . ! or ? before a capital, digit or bracket, except after abbreviations that
# abstracts use mid-sentence (the rule of webui/passages.py).
_SENTENCE_END = re.compile(r"(?<=[.!?])(?<!\bvs\.)(?<!\bal\.)(?<!\be\.g\.)(?<!\bi\.e\.)(?<!\bca\.)\s+(?=[A-Z0-9(\[])")
_REFERENCE_MARK = re.compile(r"\s*\[\d+(?:\s*[,;–-]\s*\d+)*\]")  # an abstract's own "[12]" would read as a citation


@dataclass(frozen=True)
class Quote:
    source: int  # 1-based number of the hit it comes from
    sentence: str
    score: float


def candidate_sentences(hits: Sequence[Hit]) -> list[tuple[int, str, bool]]:
    """(source number, sentence, from a conclusion?) for every quotable sentence of ``hits``, within
    each abstract's first ``EMBED_CHARS`` characters: a huge record costs no more than a long one."""
    found = []
    for n, hit in enumerate(hits, start=1):
        sections, length = hit.article.sections, 0
        for i, section in enumerate(sections):
            parts = [s.strip() for s in _SENTENCE_END.split(section.text.strip()) if s.strip()]
            labelled = section.label.upper().startswith(CONCLUSION_LABELS)
            for j, sentence in enumerate(parts):
                if length >= EMBED_CHARS:
                    break
                sentence = sentence[: EMBED_CHARS - length]
                length += len(sentence)
                sentence = strip_markup(_REFERENCE_MARK.sub("", sentence))
                if len(sentence.split()) < MIN_QUOTE_WORDS:
                    continue
                last = i == len(sections) - 1 and j == len(parts) - 1 and not section.label
                found.append((n, sentence, labelled or last))
    return found


def select_quotes(question: str, hits: Sequence[Hit], encoder: Encoder | None) -> list[Quote]:
    """The best sentence of each abstract, best first, at most ``MAX_QUOTES``, none far below the best."""
    candidates = candidate_sentences(hits)
    if not candidates or not question.strip():
        return []
    scores = _scores(question, [s for _, s, _ in candidates], encoder)
    scores = scores + CONCLUSION_BONUS * np.array([c for _, _, c in candidates], dtype=np.float64)
    best_of: dict[int, Quote] = {}
    for (n, sentence, _), score in zip(candidates, scores.tolist(), strict=True):
        if n not in best_of or score > best_of[n].score:
            best_of[n] = Quote(n, sentence, score)
    ranked = sorted(best_of.values(), key=lambda q: (-q.score, q.source))
    return [q for q in ranked if q.score >= ranked[0].score - FLOOR_BELOW_BEST][:MAX_QUOTES]


def extractive_answer(question: str, hits: Sequence[Hit], encoder: Encoder | None) -> str:
    """Markdown: the heading, then one quoted, cited sentence a line; empty when nothing is quotable."""
    quotes = select_quotes(question, hits, encoder)
    if not quotes:
        return ""
    lines = [f"- “{q.sentence}” [{q.source}]" for q in quotes]
    return EXTRACTIVE_HEADING + "\n\n" + "\n".join(lines)


def _scores(question: str, sentences: list[str], encoder: Encoder | None) -> np.ndarray:
    if encoder is not None:
        vectors = encoder.encode([question, *sentences])
        return np.asarray(vectors[1:] @ vectors[0], dtype=np.float64)  # unit vectors: cosine
    from index.bm25 import tokenize  # BM25's stemmed, stopword-free words

    asked, *words = (set(t) for t in tokenize([question, *sentences]))
    return np.array([len(asked & w) / max(len(asked), 1) for w in words], dtype=np.float64)


ANSWER_MODES = ("auto", "extractive", "generate")
TINY_MODELS = ("smollm2-135m",)  # generators whose answers are usually worse than the quoted evidence


def answer_mode(setting: str, generator_name: str) -> str:
    """``extractive`` or ``generate``: ``auto`` quotes the evidence when the generator is the tiny
    offline fallback (SmolLM2-135M, packaged or from the Hub), and lets any other model write."""
    if setting not in ANSWER_MODES:
        raise ValueError(f"unknown answer mode {setting!r}: choose one of {', '.join(ANSWER_MODES)}")
    if setting != "auto":
        return setting
    return "extractive" if is_tiny(generator_name) else "generate"


def is_tiny(generator_name: str) -> bool:
    """The tiny offline fallback model (SmolLM2-135M, packaged or from the Hub), by name."""
    return any(t in generator_name.lower() for t in TINY_MODELS)
