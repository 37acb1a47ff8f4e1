"""The chatbot's result: the answer text with its citations and the sources it was shown."""

from __future__ import annotations

from dataclasses import dataclass, field

from chatbot.citations import Citation
from chatbot.gate import Sufficiency
from chatbot.support import SentenceSupport
from index.search import Hit


@dataclass(frozen=True)
class Answer:
    question: str
    text: str  # markdown: [emergency notice,] the answer with its marks, then the reference list
    sources: tuple[Hit, ...]  # what the model saw (or, when abstaining, the closest abstracts)
    citations: tuple[Citation, ...] = ()  # every one points at a member of ``sources``
    abstained: bool = False  # the literature in the index did not answer the question
    invalid_citations: int = 0  # markers the model invented and that were removed
    attributed: int = 0  # sentences cited by the support check rather than by the model
    unsupported: int = 0  # uncited sentences matching no source, marked in the text
    done: bool = True  # False for the partial answers yielded while streaming
    model: str = ""
    weak: int = 0  # cited sentences their cited abstracts do not closely match, marked in the text
    support: tuple[SentenceSupport, ...] = ()  # the support check's verdict on each judged sentence
    verdict: str | None = None  # "yes" / "no" / "maybe" for a yes/no question, for evaluation
    emergency: bool = False  # the question may describe an emergency: the text starts with advice
    query: str = ""  # what was searched (a follow-up rewritten to stand alone)
    dropped_sources: int = 0  # retrieved abstracts left out to fit the model's context window
    passages: dict[str, str] = field(default_factory=dict)  # PMID -> the sentence(s) closest to the question
    mode: str = "generated"  # "generated" (the model wrote it) or "extractive" (quoted evidence)
    replaced: tuple[str, ...] = ()  # what was wrong with a generation the extractive answer replaced
    tempered: bool = False  # a Yes / No opening the support check did not back was softened
    sufficiency: Sufficiency | None = None  # the evidence gate's decision (None: gate off)

    def as_dict(self) -> dict[str, object]:
        return {
            "answer": self.text,
            "citations": [c.as_dict() for c in self.citations],
            "sources": [h.as_dict() for h in self.sources],
            "references": [self._reference(c) for c in self.citations],
            "abstained": self.abstained,
            "verdict": self.verdict,
            "emergency": self.emergency,
            "query": self.query,
            "invalid_citations": self.invalid_citations,
            "attributed": self.attributed,
            "unsupported": self.unsupported,
            "weak": self.weak,
            "support": [s.as_dict() for s in self.support],
            "dropped_sources": self.dropped_sources,
            "mode": self.mode,
            "replaced": list(self.replaced),
            "tempered": self.tempered,
            "gate": self.sufficiency.as_dict() if self.sufficiency else None,
            "model": self.model,
        }

    def _reference(self, citation: Citation) -> dict[str, object]:
        article = self.sources[citation.n - 1].article
        return {
            "n": citation.n,
            "pmid": citation.pmid,
            "authors": list(article.authors),
            "title": article.title,
            "journal": article.journal,
            "year": article.year,
            "url": citation.url,
        }
