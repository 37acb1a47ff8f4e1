"""Chatbot end to end on a real 150-record index with the hashing encoder and a scripted generator."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from chatbot.answer import Answer
from chatbot.chat import Chatbot
from chatbot.prompts import INSUFFICIENT_SENTINEL, NO_EVIDENCE_ANSWER, UNCITED_NOTE
from chatbot.support import UNSUPPORTED_MARK
from config import Config
from index.search import Hit, PubMedIndex
from tests.conftest import REPO, HashingEncoder, ScriptedGenerator

EVIDENCE = Config(top_k=3, min_score=0.05)  # the hashing encoder's title queries score 0.3-0.7
STRICT = Config(top_k=3, min_score=0.5)  # above what a query sharing no words with the corpus reaches
NONSENSE = "zzzz qqqq xxxx"


class SpyRetriever:
    """Wraps a PubMedIndex and records every query it is asked."""

    def __init__(self, index: PubMedIndex) -> None:
        self.index = index
        self.queries: list[str] = []

    def search(self, query: str, k: int = 10) -> list[Hit]:
        self.queries.append(query)
        return self.index.search(query, k)


@pytest.fixture(scope="module")
def index(demo_index: Path) -> PubMedIndex:
    return PubMedIndex(demo_index, encoder=HashingEncoder())


@pytest.fixture(scope="module")
def titles(index: PubMedIndex) -> list[str]:
    return [a.title for a in index.store.iter_articles()]


def make_bot(index: PubMedIndex, reply: str, config: Config = EVIDENCE) -> Chatbot:
    return Chatbot(index, ScriptedGenerator(reply), config, encoder=HashingEncoder())


def test_stream_yields_partials_then_exactly_one_final(index: PubMedIndex, titles: list[str]) -> None:
    reply = "The study found a clear effect [1]. It was also replicated [2]."
    answers = list(make_bot(index, reply).stream(titles[0]))
    assert [a.done for a in answers[:-1]] == [False] * (len(answers) - 1)
    assert answers[-1].done
    assert len(answers) >= 3  # an empty placeholder, one partial per streamed word, the final
    partial_texts = [a.text for a in answers[:-1]]
    assert partial_texts[0] == ""
    assert all(len(b) >= len(a) for a, b in zip(partial_texts, partial_texts[1:]))  # text only grows
    assert not any(a.abstained for a in answers)


def test_final_citations_point_at_sources(index: PubMedIndex, titles: list[str]) -> None:
    reply = "A finding [2]. Another finding [1, 3]. A third [3]."
    final = make_bot(index, reply).ask(titles[5])
    assert len(final.sources) == 3
    source_pmids = [h.pmid for h in final.sources]
    assert [c.n for c in final.citations] == [2, 1, 3]
    assert [c.pmid for c in final.citations] == [source_pmids[1], source_pmids[0], source_pmids[2]]
    assert final.invalid_citations == 0
    assert final.text.startswith("A finding [2]. Another finding [1, 3]. A third [3].")


def test_invented_citation_is_removed_everywhere(index: PubMedIndex, titles: list[str]) -> None:
    reply = "Aspirin reduced events [1]. Survival improved markedly overall [7]. Done [1, 7]."
    answers = list(make_bot(index, reply).stream(titles[1]))
    final = answers[-1]
    assert len(final.sources) == 3
    assert final.invalid_citations == 2
    assert all("[7]" not in a.text and "7]" not in a.text for a in answers)
    assert {c.n for c in final.citations} == {1}
    assert all(c.pmid in {h.pmid for h in final.sources} for c in final.citations)


def test_invalid_citation_count_for_single_invented_marker(index: PubMedIndex, titles: list[str]) -> None:
    final = make_bot(index, "It helped [1]. It also harmed [7].").ask(titles[2])
    assert final.invalid_citations == 1
    assert "[7]" not in final.text


@pytest.mark.parametrize("position", [0, 10, 50, 149])
def test_title_query_retrieves_that_record(index: PubMedIndex, titles: list[str], position: int) -> None:
    title = titles[position]
    article = next(a for a in index.store.iter_articles() if a.title == title)
    final = make_bot(index, "Answer [1].").ask(title)
    assert article.pmid in [h.pmid for h in final.sources]


def test_nothing_relevant_abstains_without_calling_the_generator(index: PubMedIndex) -> None:
    closest = index.search(NONSENSE, k=3)
    assert closest and closest[0].score < STRICT.min_score  # precondition: no hit is evidence
    bot = make_bot(index, "Should never be generated [1].", STRICT)
    answers = list(bot.stream(NONSENSE))
    assert len(answers) == 1
    [final] = answers
    assert final.done and final.abstained
    assert final.text == NO_EVIDENCE_ANSWER
    assert [h.pmid for h in final.sources] == [h.pmid for h in closest]
    assert final.citations == ()
    assert bot.generator.messages == []


def test_insufficient_sentinel_abstains(index: PubMedIndex, titles: list[str]) -> None:
    bot = make_bot(index, INSUFFICIENT_SENTINEL)
    final = bot.ask(titles[3])
    assert bot.generator.messages  # the model was asked, and said the sources do not answer
    assert final.abstained
    assert final.text == NO_EVIDENCE_ANSWER
    assert final.citations == ()
    assert len(final.sources) == 3


def test_sentinel_alongside_a_real_citation_is_not_an_abstention(index: PubMedIndex, titles: list[str]) -> None:
    final = make_bot(index, f"Partly answered [1]. {INSUFFICIENT_SENTINEL}").ask(titles[3])
    assert not final.abstained
    assert [c.n for c in final.citations] == [1]


def test_uncited_unrelated_answer_is_flagged(index: PubMedIndex, titles: list[str]) -> None:
    final = make_bot(index, "The weather in Paris is sunny and warm today.").ask(titles[4])
    assert final.citations == ()
    assert final.unsupported == 1
    assert UNSUPPORTED_MARK.strip() in final.text
    assert final.text.endswith(UNCITED_NOTE)


def test_uncited_copied_sentence_is_attributed(index: PubMedIndex, titles: list[str]) -> None:
    first = make_bot(index, "x").ask(titles[7]).sources[0]
    sentence = next(s.strip() for s in first.article.abstract.split(". ") if len(s.split()) >= 8) + "."
    final = make_bot(index, sentence).ask(titles[7])
    assert final.attributed == 1
    assert [c.pmid for c in final.citations] == [first.pmid]


def test_follow_up_searches_with_the_previous_question(index: PubMedIndex, titles: list[str]) -> None:
    spy = SpyRetriever(index)
    generator = ScriptedGenerator("A follow-up answer [1].")
    bot = Chatbot(spy, generator, EVIDENCE, encoder=HashingEncoder())
    q1, a1 = titles[20], "Earlier answer about it [1]."
    final = bot.ask("And in children?", [(q1, a1)])
    assert len(spy.queries) == 1
    assert q1 in spy.queries[0] and "And in children?" in spy.queries[0]
    contents = [m["content"] for m in generator.messages]
    assert q1 in contents and a1 in contents
    assert contents.index(q1) + 1 == contents.index(a1)
    assert "And in children?" in contents[-1]
    assert final.done


def test_first_question_searches_alone(index: PubMedIndex, titles: list[str]) -> None:
    spy = SpyRetriever(index)
    Chatbot(spy, ScriptedGenerator("ok [1]."), EVIDENCE).ask(f"  {titles[0]}  ")
    assert spy.queries == [titles[0]]


def test_ask_returns_the_final_streamed_answer(index: PubMedIndex, titles: list[str]) -> None:
    reply = "Effect seen [1]. More [2]."
    streamed = list(make_bot(index, reply).stream(titles[9]))[-1]
    asked = make_bot(index, reply).ask(titles[9])
    assert isinstance(asked, Answer) and asked.done
    assert asked == streamed


def test_answer_as_dict(index: PubMedIndex, titles: list[str]) -> None:
    final = make_bot(index, "Effect seen [2]. More [1].").ask(titles[11])
    data = final.as_dict()
    assert {"answer", "citations", "sources"} <= set(data)
    assert data["answer"] == final.text
    assert data["citations"] == [{"n": c.n, "pmid": c.pmid, "title": c.title} for c in final.citations] and [
        c["n"] for c in data["citations"]
    ] == [2, 1]
    assert [set(s) for s in data["sources"]] == [{"pmid", "score", "title", "year"}] * 3
    assert [s["pmid"] for s in data["sources"]] == [h.pmid for h in final.sources]
    assert all(isinstance(s["score"], float) for s in data["sources"])
    assert data["model"] == ScriptedGenerator.name
    assert data["abstained"] is False and data["invalid_citations"] == 0


def test_stop_event_ends_the_stream_early(index: PubMedIndex, titles: list[str]) -> None:
    import threading

    stop = threading.Event()
    reply = " ".join(f"word{i}" for i in range(50)) + " [1]."
    partials = 0
    final = None
    for answer in make_bot(index, reply).stream(titles[0], stop=stop):
        if not answer.done:
            partials += 1
            if partials == 3:
                stop.set()
        else:
            final = answer
    assert final is not None and final.done
    assert partials < 10
    assert "word49" not in final.text


def test_cli_ask_help() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "chatbot", "ask", "--help"], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "--index-dir" in result.stdout and "--json" in result.stdout
