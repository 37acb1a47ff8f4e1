"""Retrieval-augmented answering: rewrite -> retrieve -> fit -> stream -> cite -> check -> reference.

The pipeline's guarantees do not depend on the model's quality: it only ever sees retrieved
abstracts (fitted to its context window), every shown citation maps to one of them, each cited
sentence is checked against the abstract it cites, and when retrieval finds nothing close
enough it abstains without asking the model at all. A question that may describe an emergency
gets advice to call emergency services before anything else.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import Protocol

from chatbot.answer import Answer
from chatbot.citations import format_references, resolve_citations
from chatbot.context import Fitted, context_window, fit_sources, prompt_counter
from chatbot.generate import Generator
from chatbot.prompts import EMERGENCY_NOTICE, NO_EVIDENCE_ANSWER, REFERENCES_HEADING, UNCITED_NOTE, says_insufficient
from chatbot.rewrite import rewrite_query
from chatbot.safety import is_emergency
from chatbot.support import check_support
from chatbot.verdict import extract_verdict
from config import Config, check_question
from index.encoder import Encoder
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
        self.encoder = encoder  # for the sentence support check; None skips it

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
    ) -> Iterator[Answer]:
        """Partial answers while the model writes, then the final one (``done=True``).

        A question over ``config.max_question_chars`` raises ``QuestionTooLong`` before any work."""
        question = check_question(question.strip(), self.config)
        history = self._bounded(history)
        emergency = is_emergency(question)
        base = Answer(question, "", (), done=False, model=self.generator.name, emergency=emergency)
        if emergency:
            yield _with(base, text=EMERGENCY_NOTICE)  # before any slow step
        query = self.query(question, history, stop=stop)
        hits = self._search(query, filters)
        evidence = [h for h in hits if h.score >= self.config.min_score]
        if not evidence:
            text = _compose(emergency, NO_EVIDENCE_ANSWER)
            yield _with(base, text=text, sources=tuple(hits), abstained=True, done=True, query=query)
            return
        fitted = self._fit(question, evidence, history)
        base = _with(base, sources=fitted.sources, query=query, dropped_sources=fitted.dropped)
        yield _with(base, text=_compose(emergency, ""))
        raw = ""
        pieces = self.generator.stream(
            fitted.messages, max_new_tokens=self.config.max_new_tokens, temperature=self.config.temperature, stop=stop
        )
        for piece in pieces:
            raw += piece
            partial = resolve_citations(raw, fitted.sources)
            yield _with(base, text=_compose(emergency, partial.text), citations=partial.citations)
        yield self._final(base, raw)

    def ask(self, question: str, history: History = (), *, filters: Filters | None = None) -> Answer:
        for answer in self.stream(question, history, filters=filters):
            if answer.done:
                return answer
        raise RuntimeError("the answer stream ended without a final answer")

    def _fit(self, question: str, evidence: list[Hit], history: History) -> Fitted:
        return fit_sources(
            question,
            evidence,
            history,
            window=context_window(self.generator, self.config.context_window),
            reserve=self.config.max_new_tokens,
            count=prompt_counter(self.generator),
        )

    def _final(self, base: Answer, raw: str) -> Answer:
        sources = base.sources
        resolved = resolve_citations(raw.strip(), sources)
        if says_insufficient(raw) and not resolved.citations:
            return _with(base, text=_compose(base.emergency, NO_EVIDENCE_ANSWER), abstained=True, done=True)
        checked = check_support(resolved.text, sources, self.encoder) if self.encoder else None
        final = resolve_citations(checked.text, sources) if checked else resolved
        body = final.text if final.citations else final.text + UNCITED_NOTE
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
            verdict=extract_verdict(base.question, resolved.text),
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
