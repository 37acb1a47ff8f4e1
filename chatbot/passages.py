"""The sentences of each retrieved abstract that bear on the question, for the prompt and the source cards.

The index holds one vector per abstract, so it cannot say *where* an abstract matched. Here the
question and every sentence of the retrieved abstracts are embedded in one encoder call (a few
dozen short texts: cheap next to generation), and that one scoring serves twice:

- the prompt: each source is given to the model as its most question-relevant sentences, in
  the abstract's own order, within a token budget (``Config.passage_tokens``, ``passage_budget``), instead of the whole
  abstract. On a CPU prompt evaluation costs about as much per token as the answer's first words
  wait for, so a prompt of passages answers several times sooner (BENCHMARKS.md, "Answer latency");
- the source card: the single closest sentence (with the next one when it is short).

Without an encoder (or with a budget of 0) the whole abstract is used, as before.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from chatbot.context import source_text
from chatbot.extractive import is_tiny
from index.encoder import Encoder
from index.search import Hit
from ingest.records import EMBED_CHARS

# A sentence ends at . ! or ? before a capital, digit or bracket, except after abbreviations that
# abstracts use mid-sentence ("30 vs. 15 mg", "Smith et al. 2019", "e.g. 5 days").
_SENTENCE_END = re.compile(r"(?<=[.!?])(?<!\bvs\.)(?<!\bal\.)(?<!\be\.g\.)(?<!\bi\.e\.)(?<!\bca\.)\s+(?=[A-Z0-9(\[])")
SHORT_SENTENCE = 120  # characters; a shorter best match gets its next sentence for context
GAP = " … "  # between sentences that are not next to each other in the abstract
CHARS_PER_TOKEN = 4.0  # budget estimate when no tokenizer is given (English prose)
BY_MODEL = -1  # ``--passage-tokens -1``: the budget below that suits the generator
# Measured on PubMedQA dev (benchmarks/prompt_passages.py, BENCHMARKS.md): the Qwen2.5 stand-in cites the gold
# abstract more often with 40-token passages than with whole abstracts (.675 vs .575, 60 tokens .625) from a
# third of the prompt, while the tiny SmolLM2 cites it less with any passages (.775 whole, .750 at 60, .650 at
# 40), so it reads whole abstracts (it answers with quoted evidence by default anyway).
PASSAGE_TOKENS = 40


def passage_budget(setting: int, generator_name: str) -> int:
    """Tokens of each source the generator reads (0 = whole abstracts): ``setting``, or by model."""
    if setting != BY_MODEL:
        return setting
    return 0 if is_tiny(generator_name) else PASSAGE_TOKENS


def sentences(hit: Hit) -> list[str]:
    """The abstract's sentences, section by section (a label never joins two sections), within its
    first ``EMBED_CHARS`` characters: a huge record costs a question no more than a long abstract."""
    found, length = [], 0
    for section in hit.article.sections:
        for sentence in _SENTENCE_END.split(section.text.strip()):
            if sentence and length < EMBED_CHARS:
                found.append(sentence[: EMBED_CHARS - length])
                length += len(sentence)
    return found


@dataclass(frozen=True)
class Scored:
    """One source's sentences and their cosine similarity to the question."""

    hit: Hit
    sentences: list[str]
    scores: np.ndarray


def score_sentences(query: str, hits: Sequence[Hit], encoder: Encoder | None) -> list[Scored] | None:
    """Every sentence of every hit scored against ``query`` in one encoder call; None without an encoder."""
    if encoder is None or not query.strip() or not hits:
        return None
    split = [sentences(h) for h in hits]
    flat = [s for group in split for s in group]
    if not flat:
        return None
    vectors = encoder.encode([query, *flat])
    scores = vectors[1:] @ vectors[0]  # unit vectors: inner product is cosine
    scored, start = [], 0
    for hit, group in zip(hits, split, strict=True):
        scored.append(Scored(hit, group, np.asarray(scores[start : start + len(group)], dtype=np.float32)))
        start += len(group)
    return scored


def best_passage(scored: Scored) -> str:
    """The closest sentence, with the next one when it is short (the source card's quote)."""
    if not scored.sentences:
        return scored.hit.article.conclusion
    best = int(np.argmax(scored.scores))
    passage = scored.sentences[best]
    if len(passage) < SHORT_SENTENCE and best + 1 < len(scored.sentences):
        passage += " " + scored.sentences[best + 1]
    return passage


def relevant_excerpt(scored: Scored, budget: int, count: Callable[[str], int] | None = None) -> str:
    """The most question-relevant sentences within ``budget`` tokens, in the abstract's order.

    The best sentence is always kept (cut at a word if it alone is over budget); a sentence that
    does not fit is skipped for a shorter, less relevant one that does.
    """
    count = count or (lambda text: int(len(text) / CHARS_PER_TOKEN) + 1)
    if not scored.sentences:
        return source_text(scored.hit)
    chosen: list[int] = []
    used = 0
    for i in np.argsort(-scored.scores, kind="stable").tolist():
        cost = count(scored.sentences[i])
        if used + cost <= budget or not chosen:
            chosen.append(i)
            used += cost
    chosen.sort()
    if len(chosen) == len(scored.sentences):
        return source_text(scored.hit)
    parts, previous = [], None
    for i in chosen:
        if previous is not None:
            parts.append(" " if i == previous + 1 else GAP)
        parts.append(scored.sentences[i])
        previous = i
    text = "".join(parts)
    return text if count(text) <= budget * 2 else _cut(text, budget * CHARS_PER_TOKEN)


def _cut(text: str, chars: float) -> str:
    return text[: int(chars)].rsplit(" ", 1)[0] + " …"


class SentenceScores:
    """One turn's sentence scores, computed once per abstract however often its sources are shown."""

    def __init__(self, query: str, encoder: Encoder | None) -> None:
        self.query, self.encoder = query, encoder
        self._scored: dict[str, Scored] = {}

    def of(self, hits: Sequence[Hit]) -> list[Scored] | None:
        """``hits``' scored sentences (None without an encoder or sentences, as ``score_sentences``)."""
        missing = [h for h in hits if h.pmid not in self._scored]
        if missing:
            for scored in score_sentences(self.query, missing, self.encoder) or ():
                self._scored[scored.hit.pmid] = scored
        if any(h.pmid not in self._scored for h in hits):
            return None
        return [replace(self._scored[h.pmid], hit=h) for h in hits]

    def passages(self, hits: Sequence[Hit]) -> dict[str, str]:
        return {s.hit.pmid: best_passage(s) for s in self.of(hits) or ()}


def matched_passages(query: str, hits: Sequence[Hit], encoder: Encoder | None) -> dict[str, str]:
    """PMID -> the sentence(s) of that abstract closest to ``query`` (the abstract's conclusion without an encoder)."""
    scored = score_sentences(query, hits, encoder)
    if scored is None:
        return {h.pmid: h.article.conclusion for h in hits}
    return {s.hit.pmid: best_passage(s) for s in scored}
