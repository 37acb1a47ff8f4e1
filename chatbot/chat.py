"""Retrieval-augmented answering: rewrite -> retrieve -> fit -> stream -> cite -> check -> reference.

The pipeline's guarantees do not depend on the model's quality: it only ever sees retrieved
abstracts (fitted to its context window), every shown citation maps to one of them, each cited
sentence is checked against the abstract it cites, and when the evidence gate
(``chatbot/gate.py``) finds the retrieved abstracts cannot answer, it abstains without asking
the model at all. What the model writes is cleaned (``chatbot/clean.py``); a degenerate
generation (markup, a loop, a fragment) is replaced by the extractive answer, the abstracts'
best sentences quoted and cited (``chatbot/extractive.py``), which is also the whole answer in
``extractive`` mode. A Yes / No opening the support check does not back is softened
(``chatbot/trust.py``). A question that may describe an emergency gets advice to call
emergency services before anything else.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import Protocol

from chatbot.answer import Answer
from chatbot.citations import format_references, resolve_citations
from chatbot.clean import clean, strip_markup
from chatbot.context import Fitted, context_window, fit_sources, prompt_counter
from chatbot.extractive import answer_mode, extractive_answer
from chatbot.gate import Sufficiency, assess, check_gate
from chatbot.generate import Generator
from chatbot.passages import Scored, SentenceScores, passage_budget, relevant_excerpt
from chatbot.prompts import (
    EMERGENCY_NOTICE,
    NO_EVIDENCE_ANSWER,
    REFERENCES_HEADING,
    UNCITED_NOTE,
    prefix_messages,
    says_insufficient,
)
from chatbot.rewrite import rewrite_query
from chatbot.safety import is_emergency
from chatbot.support import check_support
from chatbot.trust import temper_verdict
from chatbot.verdict import extract_verdict
from config import Config, check_question
from index.encoder import Encoder, for_short_texts
from index.filters import Filters
from index.search import Hit

History = Sequence[tuple[str, str]]  # (user, assistant) turns, oldest first
HISTORY_TURNS = 4  # earlier turns kept for a follow-up (the prompt and the rewrite read the last two)
HISTORY_ANSWER_CHARS = 4000  # of each earlier answer: well over a long answer, so history stays bounded


class Retriever(Protocol):
    def search(self, query: str, k: int = 10) -> list[Hit]: ...


class Chatbot:
    def __init__(
        self, retriever: Retriever, generator: Generator, config: Config, *, encoder: Encoder | None = None
    ) -> None:
        self.retriever = retriever
        self.generator = generator
        self.config = config
        # sentence scoring (passages, support check, extractive answer); None: words only
        self.encoder = for_short_texts(encoder)
        self.mode = answer_mode(config.answer, generator.name)  # "extractive" or "generate"
        check_gate(config.gate)

    def warm(self) -> None:
        """Let the generator evaluate the prompt start every answer shares (llama.cpp keeps it; once)."""
        warm = getattr(self.generator, "warm", None)
        if warm is not None:
            warm(prefix_messages())

    def retrieve(
        self,
        question: str,
        history: History = (),
        *,
        stop: threading.Event | None = None,
        filters: Filters | None = None,
    ) -> list[Hit]:
        """A follow-up ("and in children?") is rewritten to stand alone before it is searched."""
        return self._search(self.query(question, history, stop=stop), filters)

    def _preview(self, query: str, filters: Filters | None) -> list[Hit]:
        """The first stage's hits when a reranker will reorder them (it takes seconds on a CPU); else none."""
        if not getattr(self.retriever, "reranks", False):
            return []
        extra = {"filters": filters} if filters else {}
        return self.retriever.search(query, k=self.config.top_k, rerank=False, **extra)

    def _search(self, query: str, filters: Filters | None) -> list[Hit]:
        """``filters`` (index/filters.py) restrict the search itself; only passed when set."""
        return self.retriever.search(query, k=self.config.top_k, **({"filters": filters} if filters else {}))

    def query(self, question: str, history: History = (), *, stop: threading.Event | None = None) -> str:
        """What is searched: the question, or a follow-up made standalone (at most ``max_question_chars``)."""
        check_question(question.strip(), self.config)
        query = rewrite_query(question.strip(), self._bounded(history), self.generator, stop=stop)
        return query[: self.config.max_question_chars]

    def _bounded(self, history: History) -> History:
        """The last turns, each cut to what a question and an answer may be: a client sends any history."""
        cap = self.config.max_question_chars
        return [(user[:cap], answer[:HISTORY_ANSWER_CHARS]) for user, answer in list(history)[-HISTORY_TURNS:]]

    def stream(
        self,
        question: str,
        history: History = (),
        *,
        stop: threading.Event | None = None,
        filters: Filters | None = None,
        query_override: str = "",
    ) -> Iterator[Answer]:
        """Partial answers while the model writes, then the final one (``done=True``).

        ``query_override``: search for this instead of the (rewritten) question, e.g. the user's
        own edit of the standalone query a follow-up was rewritten to (cut to ``max_question_chars``).
        A question over ``config.max_question_chars`` raises ``QuestionTooLong`` before any work."""
        question = check_question(question.strip(), self.config)
        history = self._bounded(history)
        emergency = is_emergency(question)
        base = Answer(question, "", (), done=False, model=self.generator.name, emergency=emergency)
        if emergency:
            yield _with(base, text=EMERGENCY_NOTICE)  # before any slow step
        query = (
            query_override.strip()[: self.config.max_question_chars]
            if query_override and query_override.strip()
            else self.query(question, history, stop=stop)
        )
        scores = SentenceScores(query, self.encoder)  # once per abstract: the prompt's excerpts and the cards' quotes
        preview = self._preview(query, filters)
        if preview:  # the first stage's sources at once, while a reranker reads them
            shown = _compose(emergency, "")  # the emergency notice stays first
            yield _with(base, text=shown, sources=tuple(preview), query=query, passages=scores.passages(preview))
        hits = self._search(query, filters)
        evidence = [h for h in hits if h.score >= self.config.min_score]
        sufficiency = self.assess(query, hits)
        base = _with(base, query=query, sufficiency=sufficiency)
        if not evidence or (sufficiency is not None and not sufficiency.answerable):
            text = _compose(emergency, NO_EVIDENCE_ANSWER)
            yield _with(base, text=text, sources=tuple(hits), abstained=True, done=True)
            return
        scored = scores.of(evidence)
        fitted = self._fit(question, evidence, history, self._excerpts(scored))
        passages = scores.passages(fitted.sources)
        base = _with(base, sources=fitted.sources, dropped_sources=fitted.dropped, passages=passages)
        if self.mode == "extractive":
            yield self._extractive(base, query)
            return
        yield _with(base, text=_compose(emergency, ""))
        self.warm()
        raw = ""
        pieces = self.generator.stream(
            fitted.messages, max_new_tokens=self.config.max_new_tokens, temperature=self.config.temperature, stop=stop
        )
        for piece in pieces:
            raw += piece
            partial = resolve_citations(strip_markup(raw), fitted.sources)  # no tag is ever shown, even briefly
            yield _with(base, text=_compose(emergency, partial.text), citations=partial.citations)
        yield self._final(base, raw)

    def assess(self, query: str, hits: Sequence[Hit]) -> Sufficiency | None:
        """The evidence gate's decision on ``hits`` (None when ``--gate off``)."""
        return assess(query, hits, index=self.retriever) if self.config.gate == "on" else None

    def ask(self, question: str, history: History = (), *, filters: Filters | None = None) -> Answer:
        for answer in self.stream(question, history, filters=filters):
            if answer.done:
                return answer
        raise RuntimeError("the answer stream ended without a final answer")

    def _excerpts(self, scored: list[Scored] | None) -> list[str] | None:
        """What the model reads of each source: its most question-relevant sentences (None: whole abstracts)."""
        budget = passage_budget(self.config.passage_tokens, self.generator.name)
        if scored is None or budget <= 0:
            return None
        count = getattr(self.generator, "count_tokens", None)
        return [relevant_excerpt(s, budget, count) for s in scored]

    def _fit(self, question: str, evidence: list[Hit], history: History, texts: list[str] | None = None) -> Fitted:
        return fit_sources(
            question,
            evidence,
            history,
            window=context_window(self.generator, self.config.context_window),
            reserve=self.config.max_new_tokens,
            count=prompt_counter(self.generator),
            texts=texts,
        )

    def _final(self, base: Answer, raw: str) -> Answer:
        sources = base.sources
        cleaned = clean(raw)
        resolved = resolve_citations(cleaned.text, sources)
        if says_insufficient(cleaned.text) and not resolved.citations:
            return _with(base, text=_compose(base.emergency, NO_EVIDENCE_ANSWER), abstained=True, done=True)
        if cleaned.degenerate:
            return self._extractive(base, base.query or base.question, replaced=cleaned.problems)
        checked = check_support(resolved.text, sources, self.encoder, mark_attributed=True) if self.encoder else None
        final = resolve_citations(checked.text, sources) if checked else resolved
        text, tempered = temper_verdict(final.text, checked.sentences if checked else ())
        body = text if final.citations else text + UNCITED_NOTE
        references = format_references(final.citations, sources, REFERENCES_HEADING)
        return _with(
            base,
            text=_compose(base.emergency, body, references),
            citations=final.citations,
            invalid_citations=resolved.invalid,
            attributed=checked.attributed if checked else 0,
            unsupported=checked.unsupported if checked else 0,
            weak=checked.weak if checked else 0,
            support=checked.sentences if checked else (),
            verdict="maybe" if tempered else extract_verdict(base.question, text),
            tempered=tempered,
            done=True,
        )

    def _extractive(self, base: Answer, query: str, *, replaced: tuple[str, ...] = ()) -> Answer:
        """The quoted-evidence answer; it states no verdict. ``replaced``: what was wrong with the
        generation it stands in for (empty when extractive is the chosen mode)."""
        quoted = extractive_answer(query, base.sources, self.encoder)
        if not quoted:  # no quotable sentence in any source: say so rather than show a fragment
            return _with(base, text=_compose(base.emergency, NO_EVIDENCE_ANSWER), abstained=True, done=True)
        resolved = resolve_citations(quoted, base.sources)
        references = format_references(resolved.citations, base.sources, REFERENCES_HEADING)
        return _with(
            base,
            text=_compose(base.emergency, resolved.text, references),
            citations=resolved.citations,
            mode="extractive",
            replaced=replaced,
            done=True,
        )


def _compose(emergency: bool, *parts: str) -> str:
    """The emergency notice (when due) first, then the non-empty parts."""
    return "\n\n".join(p for p in (EMERGENCY_NOTICE if emergency else "", *parts) if p)


def _with(answer: Answer, **changes: object) -> Answer:
    return replace(answer, **changes)


def open_chatbot(config: Config) -> Chatbot:
    """The index at ``config.index_dir`` and the configured generator (offline fallback allowed)."""
    from chatbot.generate import open_generator
    from index.search import open_index

    index = open_index(config)  # retriever, reranker and token limit from the config
    return Chatbot(index, open_generator(config), config, encoder=index.encoder)
