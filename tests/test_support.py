"""check_support: uncited sentences get the number of the source they match, or an [unsupported] mark;
cited sentences are checked against the abstracts they cite."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from chatbot.support import UNSUPPORTED_MARK, WEAK_MARK, Checked, check_support, cited_numbers, split_sentences
from index.search import Hit, PubMedIndex
from tests.conftest import HashingEncoder

UNRELATED = "The weather in Paris is sunny and warm today."


@pytest.fixture(scope="module")
def sources(demo_index: Path) -> list[Hit]:
    index = PubMedIndex(demo_index, encoder=HashingEncoder())
    articles = [a for a in itertools.islice(index.store.iter_articles(), 10) if a.abstract][:3]
    assert len(articles) == 3
    return [Hit(article, 0.7, rank) for rank, article in enumerate(articles, start=1)]


def _long_sentence(hit: Hit) -> str:
    """A sentence of the source's abstract with enough words to be checked, ending in a full stop."""
    sentences = [s.strip() for s in split_sentences(hit.article.abstract)]
    return next(s for s in sentences if len(s.split()) >= 8 and s.endswith("."))


@pytest.mark.parametrize("n", [1, 2, 3])
def test_copied_sentence_gets_its_source_number(sources: list[Hit], encoder: HashingEncoder, n: int) -> None:
    sentence = _long_sentence(sources[n - 1])
    checked = check_support(sentence, sources, encoder)
    assert checked.text == sentence[:-1] + f" [{n}]."
    assert (checked.attributed, checked.unsupported, checked.weak) == (1, 0, 0)
    [verdict] = checked.sentences
    assert (verdict.status, verdict.source, verdict.cited) == ("attributed", n, (n,))
    assert verdict.score > 0.99  # the very same sentence


def test_unrelated_sentence_is_marked_unsupported(sources: list[Hit], encoder: HashingEncoder) -> None:
    checked = check_support(UNRELATED, sources, encoder)
    assert checked.text == UNRELATED + UNSUPPORTED_MARK
    assert (checked.attributed, checked.unsupported) == (0, 1)
    [verdict] = checked.sentences
    assert verdict.status == "unsupported" and verdict.cited == () and verdict.score < 0.6


@pytest.mark.parametrize("n", [1, 2, 3])
def test_cited_sentence_its_source_supports_is_left_as_written(
    sources: list[Hit], encoder: HashingEncoder, n: int
) -> None:
    cited = _long_sentence(sources[n - 1])[:-1] + f" [{n}]."
    checked = check_support(cited, sources, encoder)
    assert checked.text == cited
    assert (checked.attributed, checked.unsupported, checked.weak) == (0, 0, 0)
    [verdict] = checked.sentences
    assert (verdict.status, verdict.cited, verdict.source) == ("supported", (n,), n)
    assert verdict.score > 0.9 and verdict.sentence == cited[:-5] + "."


def test_sentence_citing_the_wrong_source_is_marked_weak(sources: list[Hit], encoder: HashingEncoder) -> None:
    wrong = _long_sentence(sources[0])[:-1] + " [2]."  # copied from source 1, cites source 2
    checked = check_support(wrong, sources, encoder)
    assert checked.text == wrong + WEAK_MARK
    assert (checked.weak, checked.attributed, checked.unsupported) == (1, 0, 0)
    [verdict] = checked.sentences
    assert verdict.status == "weak" and verdict.cited == (2,) and verdict.source == 2


def test_citing_several_sources_is_supported_by_any_of_them(sources: list[Hit], encoder: HashingEncoder) -> None:
    text = _long_sentence(sources[2])[:-1] + " [1, 3]."
    [verdict] = check_support(text, sources, encoder).sentences
    assert verdict.status == "supported" and verdict.source == 3


def test_unrelated_cited_sentence_is_marked_weak_not_hidden(sources: list[Hit], encoder: HashingEncoder) -> None:
    cited = UNRELATED[:-1] + " [1]."
    checked = check_support(cited, sources, encoder)
    assert checked.text == cited + WEAK_MARK
    assert (checked.attributed, checked.unsupported, checked.weak) == (0, 0, 1)


def test_mixed_answer_marks_each_sentence_on_its_own(sources: list[Hit], encoder: HashingEncoder) -> None:
    copied = _long_sentence(sources[1])
    cited = _long_sentence(sources[2])[:-1] + " [3]."
    text = f"{copied}\n\n{UNRELATED} Short one [1]. {cited}"
    checked = check_support(text, sources, encoder)
    assert checked.text == f"{copied[:-1]} [2].\n\n{UNRELATED}{UNSUPPORTED_MARK} Short one [1]. {cited}"
    assert (checked.attributed, checked.unsupported, checked.weak) == (1, 1, 0)
    assert [v.status for v in checked.sentences] == ["attributed", "unsupported", "supported"]


def test_higher_threshold_turns_a_match_into_unsupported(sources: list[Hit], encoder: HashingEncoder) -> None:
    sentence = _long_sentence(sources[0]) + " Patients in Paris enjoyed sunny weather."
    assert check_support(sentence, sources, encoder, threshold=1.01).unsupported == 2


def test_no_sources_or_short_text_changes_nothing(sources: list[Hit], encoder: HashingEncoder) -> None:
    assert check_support(UNRELATED, [], encoder).text == UNRELATED
    assert check_support("Too short [1].", sources, encoder) == Checked("Too short [1].", 0, 0)
    assert encoder.calls == 0  # nothing to check, nothing embedded


@pytest.mark.parametrize(
    ("sentence", "numbers"),
    [("Claim [1].", (1,)), ("Claim [2, 3] and [3].", (2, 3)), ("No markers.", ()), ("Range text [1-3].", ())],
)
def test_cited_numbers(sentence: str, numbers: tuple[int, ...]) -> None:
    assert cited_numbers(sentence) == numbers


@pytest.mark.parametrize(
    ("text", "sentences"),
    [
        ("One. Two three. Four?", ["One.", "Two three.", "Four?"]),
        ("Para one.\n\nPara two!", ["Para one.", "Para two!"]),
        ("Dose was 2.5 mg. Then [1] follows.", ["Dose was 2.5 mg.", "Then [1] follows."]),
        ("lower case. continues here", ["lower case. continues here"]),
        ("", []),
    ],
)
def test_split_sentences(text: str, sentences: list[str]) -> None:
    assert split_sentences(text) == sentences


def test_check_support_keeps_the_layout(sources: list[Hit], encoder: HashingEncoder) -> None:
    text = f"Intro line with several words\n\n- {UNRELATED}\n-   Another bullet about nothing in particular!"
    checked = check_support(text, sources, encoder)
    assert checked.text.count("\n") == text.count("\n")
    assert checked.text.split("\n")[1] == ""
    unmarked = checked.text.replace(UNSUPPORTED_MARK, "")
    for n in (1, 2, 3):
        unmarked = unmarked.replace(f" [{n}]", "")
    assert unmarked == text
