"""The chatbot's result: the answer text with its citations and the sources it was shown."""

from __future__ import annotations

from dataclasses import dataclass

from chatbot.citations import Citation
from index.search import Hit


@dataclass(frozen=True)
class Answer:
    question: str
    text: str
    sources: tuple[Hit, ...]  # what the model saw (or, when abstaining, the closest abstracts)
    citations: tuple[Citation, ...] = ()  # every one points at a member of ``sources``
    abstained: bool = False  # the literature in the index did not answer the question
    invalid_citations: int = 0  # markers the model invented and that were removed
    attributed: int = 0  # sentences cited by the support check rather than by the model
    unsupported: int = 0  # sentences matching no source, marked in the text
    done: bool = True  # False for the partial answers yielded while streaming
    model: str = ""

    def as_dict(self) -> dict[str, object]:
        return {
            "answer": self.text,
            "citations": [c.as_dict() for c in self.citations],
            "sources": [h.as_dict() for h in self.sources],
            "abstained": self.abstained,
            "invalid_citations": self.invalid_citations,
            "attributed": self.attributed,
            "unsupported": self.unsupported,
            "model": self.model,
        }
