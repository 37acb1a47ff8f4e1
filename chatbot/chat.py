"""Retrieval-augmented answering: retrieve -> prompt with numbered sources -> stream -> cite.

The pipeline's guarantees do not depend on the model's quality: it only ever sees retrieved
abstracts, every shown citation maps to one of them, and when retrieval finds nothing close
enough it abstains without asking the model at all.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from typing import Protocol

from chatbot.answer import Answer
from chatbot.citations import resolve_citations
from chatbot.generate import Generator
from chatbot.prompts import INSUFFICIENT_SENTINEL, NO_EVIDENCE_ANSWER, UNCITED_NOTE, build_messages
from chatbot.support import check_support
from config import Config
from index.encoder import Encoder
from index.search import Hit

History = Sequence[tuple[str, str]]  # (user, assistant) turns, oldest first


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

    def retrieve(self, question: str, history: History = ()) -> list[Hit]:
        """A follow-up ("and in children?") is searched together with the previous question."""
        query = f"{history[-1][0]} {question}" if history else question
        return self.retriever.search(query, k=self.config.top_k)

    def stream(self, question: str, history: History = (), *, stop: threading.Event | None = None) -> Iterator[Answer]:
        """Partial answers while the model writes, then the final one (``done=True``)."""
        question = question.strip()
        hits = self.retrieve(question, history)
        evidence = tuple(h for h in hits if h.score >= self.config.min_score)
        if not evidence:
            yield Answer(question, NO_EVIDENCE_ANSWER, tuple(hits), abstained=True, model=self.generator.name)
            return
        yield Answer(question, "", evidence, done=False, model=self.generator.name)
        raw = ""
        pieces = self.generator.stream(
            build_messages(question, evidence, history),
            max_new_tokens=self.config.max_new_tokens,
            temperature=self.config.temperature,
            stop=stop,
        )
        for piece in pieces:
            raw += piece
            partial = resolve_citations(raw, evidence)
            yield Answer(question, partial.text, evidence, partial.citations, done=False, model=self.generator.name)
        yield self._final(question, raw, evidence)

    def ask(self, question: str, history: History = ()) -> Answer:
        for answer in self.stream(question, history):
            if answer.done:
                return answer
        raise RuntimeError("the answer stream ended without a final answer")

    def _final(self, question: str, raw: str, evidence: tuple[Hit, ...]) -> Answer:
        resolved = resolve_citations(raw.strip(), evidence)
        if INSUFFICIENT_SENTINEL.lower().rstrip(".") in raw.lower() and not resolved.citations:
            return Answer(question, NO_EVIDENCE_ANSWER, evidence, abstained=True, model=self.generator.name)
        checked = check_support(resolved.text, evidence, self.encoder) if self.encoder else None
        final = resolve_citations(checked.text, evidence) if checked else resolved
        text = final.text if final.citations else final.text + UNCITED_NOTE
        return Answer(
            question,
            text,
            evidence,
            final.citations,
            invalid_citations=resolved.invalid,
            attributed=checked.attributed if checked else 0,
            unsupported=checked.unsupported if checked else 0,
            model=self.generator.name,
        )


def open_chatbot(config: Config) -> Chatbot:
    """The index at ``config.index_dir`` and the configured generator (offline fallback allowed)."""
    from chatbot.generate import load_generator
    from index.search import PubMedIndex

    index = PubMedIndex(config.index_dir, max_seq_length=config.max_seq_length)
    return Chatbot(index, load_generator(config.generator), config, encoder=index.encoder)
