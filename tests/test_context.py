"""fit_sources: the prompt fits the context window by tokens, best sources first, cut at a word."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from chatbot.chat import Chatbot
from chatbot.context import (
    ELLIPSIS,
    MIN_EXCERPT_WORDS,
    ContextTooSmall,
    context_window,
    fit_sources,
    prompt_counter,
)
from chatbot.prompts import build_messages
from config import Config
from index.search import Hit, PubMedIndex
from tests.conftest import HashingEncoder, ScriptedGenerator

QUESTION = "Does it work?"


def words(messages: list[dict[str, str]]) -> int:
    """A tokenizer stand-in: one token per whitespace-separated word."""
    return sum(len(m["content"].split()) for m in messages)


@pytest.fixture(scope="module")
def hits(demo_index: Path) -> list[Hit]:
    index = PubMedIndex(demo_index, encoder=HashingEncoder())
    articles = [a for a in itertools.islice(index.store.iter_articles(), 20) if len(a.abstract.split()) > 150][:4]
    assert len(articles) == 4
    return [Hit(a, 0.9 - 0.1 * i, i + 1) for i, a in enumerate(articles)]


def cost(hits: list[Hit], history=()) -> int:
    return words(build_messages(QUESTION, hits, history))


def test_everything_fits_in_a_large_window(hits: list[Hit]) -> None:
    fitted = fit_sources(QUESTION, hits, (), window=100_000, reserve=300, count=words)
    assert fitted.sources == tuple(hits)
    assert (fitted.truncated, fitted.dropped) == (0, 0)
    assert fitted.messages == build_messages(QUESTION, hits)


def test_sources_are_added_best_first_and_the_next_one_is_cut(hits: list[Hit]) -> None:
    window = cost(hits[:2]) + 60 + 300  # two whole sources and 60 words of the third
    fitted = fit_sources(QUESTION, hits, (), window=window, reserve=300, count=words)
    assert [h.pmid for h in fitted.sources] == [h.pmid for h in hits[:3]]
    assert (fitted.truncated, fitted.dropped) == (1, 1)
    assert words(fitted.messages) <= window - 300
    last = fitted.messages[-1]["content"].split('<source n="3"')[1].split("</source>")[0]
    assert ELLIPSIS.strip() in last
    kept = last.split("\n", 2)[2].replace(ELLIPSIS, "").strip()
    assert hits[2].article.abstract.startswith(kept)  # a prefix, cut at a word boundary
    assert words(fitted.messages) > window - 300 - 5  # and as long as the budget allows


def test_a_source_that_would_leave_too_short_an_excerpt_is_dropped(hits: list[Hit]) -> None:
    window = cost(hits[:2]) + MIN_EXCERPT_WORDS // 2 + 300
    fitted = fit_sources(QUESTION, hits, (), window=window, reserve=300, count=words)
    assert fitted.sources == tuple(hits[:2])
    assert (fitted.truncated, fitted.dropped) == (0, 2)


def test_history_is_dropped_before_the_best_source(hits: list[Hit]) -> None:
    history = [("An earlier question " * 50, "An earlier answer " * 50)]
    window = cost(hits[:1]) + 300 + 10  # room for one source, not for the history as well
    fitted = fit_sources(QUESTION, hits, history, window=window, reserve=300, count=words)
    assert fitted.sources == (hits[0],)
    assert all("An earlier question" not in m["content"] for m in fitted.messages)


def test_a_window_too_small_for_any_source_is_a_clear_error(hits: list[Hit]) -> None:
    with pytest.raises(ContextTooSmall, match="max-new-tokens"):
        fit_sources(QUESTION, hits, (), window=cost([]) + 300 + 5, reserve=300, count=words)


def test_prompt_counter_uses_the_generators_renderer_and_tokenizer() -> None:
    class Counting:
        def render(self, messages):
            return "|".join(m["content"] for m in messages)

        def count_tokens(self, text):
            return len(text)

    messages = [{"role": "user", "content": "abc"}, {"role": "assistant", "content": "de"}]
    assert prompt_counter(Counting())(messages) == len("abc|de")
    estimate = prompt_counter(object())(messages)
    assert estimate > 0 and estimate == prompt_counter(ScriptedGenerator("x"))(messages)
    assert context_window(object(), 0) == 4096 and context_window(object(), 1000) == 1000


def test_chatbot_shows_the_model_only_what_fits(demo_index: Path) -> None:
    class SmallWindow(ScriptedGenerator):
        context_window = 1500

    index = PubMedIndex(demo_index, encoder=HashingEncoder())
    question = [a.title for a in index.store.iter_articles()][30]
    generator = SmallWindow("Claim one [1]. Claim five [5].")
    bot = Chatbot(index, generator, Config(top_k=5, min_score=0.0, max_new_tokens=300, gate="off"))  # hashing scores
    final = bot.ask(question)
    assert 1 <= len(final.sources) < 5
    assert final.dropped_sources == 5 - len(final.sources)
    assert generator.messages[-1]["content"].count("<source ") == len(final.sources)
    assert prompt_counter(generator)(generator.messages) <= 1500 - 300
    assert final.invalid_citations == 1  # [5] named a source the model was never shown
    assert [c.n for c in final.citations] == [1]
