"""What every chat session shares: the live index, the models and the defaults; and per-turn settings.

A session's settings (model, retriever, top-k, filters) never change shared state: each turn
builds its own ``Chatbot`` from them, which is cheap (it only holds references). The index is
the one shared thing that changes: after an ingest commits a new generation, ``reload_index``
opens it and swaps it in with one assignment, so a turn in progress finishes on the index it
started with and the next turn uses the new one.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field, replace

from chatbot.chat import Chatbot
from config import Config
from index.filters import Filters
from index.hybrid import RETRIEVERS, check_retriever
from index.search import Hit, PubMedIndex
from webui.models import Models
from webui.render import RETRACTED

# The menu's names for index/hybrid.py's retrievers ("" = the index's default).
RETRIEVER_LABELS = {
    "hybrid": "Hybrid: dense + BM25",
    "dense": "Dense: sentence embeddings",
    "bm25": "BM25: keywords",
}
# Study types worth filtering on, as PubMed names them ("Clinical Trial" also takes its phases).
STUDY_TYPES = (
    "Randomized Controlled Trial",
    "Clinical Trial",
    "Meta-Analysis",
    "Systematic Review",
    "Review",
    "Observational Study",
    "Case Reports",
    "Practice Guideline",
)
YEAR_MIN = 1900  # slider floor: "from 1900" means no lower bound
TOP_K_MAX = 20  # more sources than this no longer fit a small model's context window


@dataclass(frozen=True)
class ChatSettings:
    model: str = ""  # an entry of Models.names; "" = the default model
    retriever: str = ""  # one of index.hybrid.RETRIEVERS; "" = the index's default
    top_k: int | None = None  # None = the configured default
    min_score: float | None = None  # None = the configured default
    filters: Filters = field(default_factory=Filters)
    answer: str = ""  # "extractive", "generate" or "auto"; "" = the configured default
    query: str = ""  # the user's own search query for this turn, instead of the (rewritten) question

    @classmethod
    def from_inputs(
        cls,
        model: str,
        retriever: str,
        top_k: float,
        min_score: float,
        year_from: float,
        year_to: float,
        study_types: list[str] | None,
        exclude_retracted: bool,
        answer: str = "",
        query: str = "",
        *,
        this_year: int,
    ) -> ChatSettings:
        """Settings from the sidebar's component values (sliders give floats; extremes mean "no bound")."""
        low, high = sorted((int(year_from), int(year_to)))
        filters = Filters(
            year_from=low if low > YEAR_MIN else None,
            year_to=high if high < this_year else None,
            publication_types=tuple(study_types or ()),
            exclude_types=(RETRACTED,) if exclude_retracted else (),
        )
        return cls(model or "", retriever or "", int(top_k), float(min_score), filters, answer or "", query or "")


class SessionRetriever:
    """The live index as one turn searches it: with the session's retriever and filters.

    The filters are applied by the index before ranking (``index/filters.py``), so a narrow
    filter still yields ``k`` hits when ``k`` articles pass it.
    """

    def __init__(self, index: PubMedIndex, *, retriever: str, filters: Filters) -> None:
        self.index, self.retriever, self.filters = index, retriever, filters

    @property
    def reranks(self) -> bool:
        return self.index.reranks

    @property
    def bm25(self):
        """The whole index's BM25 (not the filtered one): the evidence gate's word weights (chatbot/gate.py)."""
        return self.index.bm25

    def search(self, query: str, k: int = 10, *, rerank: bool = True) -> list[Hit]:
        return self.index.search(
            query, k, retriever=self.retriever or None, filters=self.filters or None, rerank=rerank
        )


class ChatService:
    def __init__(self, index: PubMedIndex, models: Models, config: Config) -> None:
        self._index = index
        self.models = models
        self.config = config
        self._reload_lock = threading.Lock()

    @property
    def index(self) -> PubMedIndex:
        return self._index

    def chatbot(self, settings: ChatSettings) -> Chatbot:
        """A chatbot for one turn: this session's model, retriever, filters and limits over the live index."""
        if settings.retriever:
            check_retriever(settings.retriever)  # ValueError naming the choices
        index = self._index  # read once: the whole turn uses one generation
        top_k = self.config.top_k if settings.top_k is None else min(max(settings.top_k, 1), TOP_K_MAX)
        min_score = self.config.min_score if settings.min_score is None else settings.min_score
        answer = settings.answer or self.config.answer
        config = replace(self.config, top_k=top_k, min_score=min_score, answer=answer)
        retriever = SessionRetriever(index, retriever=settings.retriever, filters=settings.filters)
        return Chatbot(retriever, self.models.get(settings.model), config, encoder=index.encoder)

    def warm(self) -> None:
        """Load now what the first answer needs (query encoder, reranker, the generator's prompt start),
        so the first question does not wait for it; the app runs this beside serving its page."""
        index = self._index
        index.query_encoder.encode(["warm-up"])
        _ = index.reranker  # a lazy reranker loads its model here
        self.chatbot(ChatSettings()).warm()

    @property
    def retrievers(self) -> list[tuple[str, str]]:
        """(label, name) pairs for the menu, the index's default first."""
        default = self._index.retriever
        return [
            (RETRIEVER_LABELS.get(r, r) + (" (default)" if r == default else ""), r)
            for r in sorted(RETRIEVERS, key=lambda r: r != default)
        ]

    def reload_index(self) -> PubMedIndex:
        """Open the index's current generation and make it the live one (same encoder object)."""
        with self._reload_lock:
            old = self._index
            fresh = PubMedIndex(
                old.index_dir,
                encoder=old.encoder,
                query_encoder=old.query_encoder,
                max_seq_length=self.config.max_seq_length,
                retriever=old.retriever,
                reranker=old._reranker,  # still lazy when no turn has reranked yet
            )
            self._index = fresh
        return fresh

    def stats(self) -> dict[str, object]:
        return self._index.stats()


def answerable_examples(
    index: PubMedIndex, candidates: list[str], min_score: float, *, limit: int = 5, gate: bool = True
) -> list[str]:
    """Example questions this index can answer.

    A curated question is kept when its best hit reaches ``min_score`` and (``gate``) the evidence
    gate (chatbot/gate.py) passes its top five (it will not abstain).
    Otherwise it is replaced by a question about that best hit's title, which the index answers
    by construction, so an index of other topics still gets useful examples. Titles with markup
    characters are skipped: examples are shown verbatim.
    """
    from chatbot.gate import assess

    examples: list[str] = []
    for question in candidates:
        hits = index.search(question, k=5, rerank=False)  # at start-up: no LM pass (ZeroGPU has no GPU yet)
        if hits and hits[0].score >= min_score and (not gate or assess(question, hits, index=index).answerable):
            examples.append(question)
        elif hits and not set("<>&") & set(hits[0].article.title):
            examples.append(f"What did the study “{hits[0].article.title.rstrip('.')}” find?")
    return list(dict.fromkeys(examples))[:limit]
