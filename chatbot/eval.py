"""Evaluation harness: retrieval recall/MRR and answer accuracy on PubMedQA- or BioASQ-style files.

A question file is JSON Lines, one question a line, as ``../shared/eval/*.jsonl``:
``question``, the gold evidence as ``pmid`` (PubMedQA) or ``gold_pmids`` (BioASQ: any of them
counts), and optionally ``final_decision`` (yes / no / maybe). The index must contain the gold
abstracts (``scripts/build_eval_corpora.py`` builds such corpora).

Retrieval: each question is searched as is (``PubMedIndex.search``, top ``k``); recall@n is the
share of questions with a gold PMID among the first n hits, MRR the mean of 1 / rank of the first
gold hit (0 when none is in the top ``k``). Answers (unless ``retrieval_only``): the whole
chatbot answers; accuracy compares ``Answer.verdict`` with ``final_decision``, an answer without
a verdict (an abstention, or no yes/no/maybe) counting as wrong; citation precision is the share
of citations whose PMID is among the answer's retrieved sources (the pipeline guarantees 1.0,
so anything less is a bug), and ``citations_to_gold`` the share that cite a gold abstract.

Abstention (``--abstention``): the evidence gate (``chatbot/gate.py``) judges each question's top
``top_k`` hits twice, with its gold abstracts in the index (it should answer) and with them
filtered out of the search (``Without``, and ``Unindexed`` for the gate's word weights: it should
abstain); ``answer_on_answerable`` and
``abstain_on_unanswerable`` are the shares it got right. No generator runs for these.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from index.search import Hit

CUTOFFS = (1, 5, 10)


class Searchable(Protocol):
    def search(self, query: str, k: int = 10) -> list[Hit]: ...


class Answering(Protocol):
    def ask(self, question: str) -> object: ...  # chatbot.answer.Answer


@dataclass(frozen=True)
class EvalQuestion:
    question: str
    gold: frozenset[str]  # any of these PMIDs is a correct hit
    decision: str | None = None  # yes / no / maybe, when the file has it


def read_questions(path: Path, *, limit: int | None = None) -> list[EvalQuestion]:
    """The questions of a PubMedQA / BioASQ style JSON Lines file (the first ``limit`` of them)."""
    questions = []
    for number, record in _records(Path(path)):
        gold = record.get("gold_pmids") or ([record["pmid"]] if record.get("pmid") is not None else [])
        if not str(record.get("question", "")).strip() or not gold:
            raise ValueError(f"{path}:{number}: a question needs 'question' and 'pmid' or 'gold_pmids'")
        decision = record.get("final_decision")
        questions.append(EvalQuestion(record["question"], frozenset(map(str, gold)), decision and str(decision)))
        if limit is not None and len(questions) >= limit:
            break
    return questions


def _records(path: Path) -> Iterator[tuple[int, dict]]:
    with open(path, encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if line.strip():
                try:
                    yield number, json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{path}:{number}: not JSON ({exc.msg})") from exc


def first_gold_rank(pmids: Sequence[str], gold: frozenset[str]) -> int | None:
    """1-based rank of the first gold PMID, or None."""
    return next((rank for rank, pmid in enumerate(pmids, start=1) if pmid in gold), None)


def retrieval_metrics(ranks: Sequence[int | None], k: int) -> dict[str, float]:
    n = len(ranks)
    cutoffs = sorted({c for c in CUTOFFS if c <= k} | {k})
    scores = {f"recall@{c}": _share(sum(1 for r in ranks if r is not None and r <= c), n) for c in cutoffs}
    scores["mrr"] = sum(1 / r for r in ranks if r is not None) / n if n else 0.0
    return scores


def answer_metrics(questions: Sequence[EvalQuestion], answers: Sequence[object]) -> dict[str, object]:
    cited = [c for a in answers for c in a.citations]
    retrieved = sum(1 for a in answers for c in a.citations if c.pmid in {h.pmid for h in a.sources})
    to_gold = sum(1 for q, a in zip(questions, answers, strict=True) for c in a.citations if c.pmid in q.gold)
    judged = [(q, a) for q, a in zip(questions, answers, strict=True) if q.decision]
    return {
        "accuracy": _share(sum(1 for q, a in judged if a.verdict == q.decision), len(judged)),
        "judged": len(judged),
        "no_verdict": sum(1 for _, a in judged if a.verdict is None),
        "abstained": sum(1 for a in answers if a.abstained),
        "citations": len(cited),
        "citation_precision": _share(retrieved, len(cited)),
        "citations_to_gold": _share(to_gold, len(cited)),
        "invalid_citations": sum(a.invalid_citations for a in answers),
    }


def _share(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def evaluate(
    questions: Sequence[EvalQuestion],
    index: Searchable,
    *,
    k: int = 10,
    chatbot: Answering | None = None,
    progress: bool = True,
) -> dict[str, object]:
    """Metrics over ``questions``: retrieval always, answers when a ``chatbot`` is given."""
    ranks: list[int | None] = []
    answers: list[object] = []
    for question in _bar(questions, progress):
        hits = index.search(question.question, k=k)
        ranks.append(first_gold_rank([h.pmid for h in hits], question.gold))
        if chatbot is not None:
            answers.append(chatbot.ask(question.question))
    result: dict[str, object] = {"n": len(questions), "k": k, **retrieval_metrics(ranks, k)}
    if chatbot is not None:
        result.update(answer_metrics(questions, answers))
    return result


def _bar(items: Sequence[EvalQuestion], progress: bool) -> Iterable[EvalQuestion]:
    from tqdm import tqdm

    return tqdm(items, desc="Evaluating", unit=" questions", disable=not progress, mininterval=0.5)


# --- abstention: does the evidence gate answer what the index can answer, and only that? -------------


class Without:
    """A search filter passing every stored article except ``pmids``: the index as if the question's
    own abstracts had never been ingested (``PubMedIndex.search`` restricts dense and BM25 alike)."""

    def __init__(self, pmids: Iterable[str]) -> None:
        self.pmids = {int(p) for p in pmids}

    def __bool__(self) -> bool:
        return True

    def allowed_pmids(self, db) -> object:
        import numpy as np

        rows = db.execute("SELECT pmid FROM articles ORDER BY pmid")
        return np.fromiter((p for (p,) in rows if int(p) not in self.pmids), dtype=np.int64)


def gate_pairs(
    questions: Sequence[EvalQuestion], index: object, *, k: int, progress: bool = True
) -> list[tuple[object, object]]:
    """(answerable, unanswerable) ``chatbot.gate.Sufficiency`` of each question: searched in the index
    as it is (its gold abstracts present) and without its gold abstracts."""
    from chatbot.gate import assess

    pairs = []
    for question in _bar(questions, progress):
        present = index.search(question.question, k=k)
        absent = index.search(question.question, k=k, filters=Without(question.gold))
        pairs.append(
            (
                assess(question.question, present, index=index),
                assess(question.question, absent, index=Unindexed(index, question.gold)),
            )
        )
    return pairs


class Unindexed:
    """The index's BM25 as if ``pmids`` had never been ingested, for the gate's word weights: a word
    only the question's own abstracts hold is a word the index does not know."""

    def __init__(self, index: object, pmids: Iterable[str]) -> None:
        import numpy as np

        self.inner = getattr(index, "bm25", None)
        wanted = np.asarray([int(p) for p in pmids], dtype=np.int64)
        self.hidden = self.inner.rows(wanted) if self.inner is not None else wanted[:0]

    @property
    def bm25(self) -> Unindexed | None:
        return self if self.inner is not None else None

    def __len__(self) -> int:
        return len(self.inner) - len(self.hidden)

    @property
    def documents(self) -> int:
        return self.inner.documents - len(self.hidden)

    def document_frequency(self, stem: str) -> int:
        """The inner frequency, less the hidden abstracts holding ``stem``."""
        import numpy as np

        holding = self.inner.rows_with_all([stem])
        hidden = int(np.isin(self.hidden, holding).sum()) if holding is not None else 0
        return self.inner.document_frequency(stem) - hidden


def abstention_metrics(pairs: Sequence[tuple[object, object]]) -> dict[str, object]:
    """The two rates the gate is judged by (target: both at least 0.9)."""
    n = len(pairs)
    return {
        "answer_on_answerable": _share(sum(1 for a, _ in pairs if a.answerable), n),
        "abstain_on_unanswerable": _share(sum(1 for _, u in pairs if not u.answerable), n),
        "questions": n,
    }
