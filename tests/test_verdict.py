"""extract_verdict: yes / no / maybe for an evaluation harness."""

from __future__ import annotations

import pytest

from chatbot.verdict import extract_verdict, is_yes_no_question


@pytest.mark.parametrize(
    ("question", "expected"),
    [
        ("Does aspirin prevent recurrent stroke?", True),
        ("Is obesity associated with worse outcomes?", True),
        ("Storage of vaccines in the community: is it a weak link in the cold chain?", True),
        ("Can't statins cause myalgia?", True),
        ("What are the risk factors for severe COVID-19?", False),
        ("Storage of vaccines in the community: weak link in the cold chain?", False),
        ("How does metformin work?", False),
    ],
)
def test_yes_no_questions_are_recognised(question: str, expected: bool) -> None:
    assert is_yes_no_question(question) is expected


@pytest.mark.parametrize(
    ("answer", "verdict"),
    [
        ("Yes: daily aspirin reduced recurrent stroke by 20% [1].", "yes"),
        ("No. Statins did not change muscle pain [2].", "no"),
        ("Maybe; the trials disagree [1, 2].", "maybe"),
        ("Possibly, in older adults [1].", "maybe"),
        ("**Yes** — see [1].", "yes"),
    ],
)
def test_a_leading_verdict_word_decides_for_any_question(answer: str, verdict: str) -> None:
    assert extract_verdict("What are the risk factors for stroke?", answer) == verdict


@pytest.mark.parametrize(
    ("answer", "verdict"),
    [
        ("Aspirin reduced recurrent stroke by 20% [1]. Bleeding was rare.", "yes"),
        ("Aspirin did not reduce recurrent stroke [1]. It reduced pain.", "no"),
        ("The evidence is mixed [1, 2]. One trial found no effect.", "maybe"),
        ("Aspirin might reduce stroke in some adults [1].", "maybe"),
        ("There was no reduction in recurrent stroke [1].", "no"),
    ],
)
def test_first_sentence_decides_a_yes_no_question_without_a_verdict_word(answer: str, verdict: str) -> None:
    assert extract_verdict("Does aspirin prevent recurrent stroke?", answer) == verdict


def test_no_verdict_for_an_open_question_without_a_verdict_word() -> None:
    assert extract_verdict("What are the risk factors for stroke?", "Age and hypertension [1].") is None
    assert extract_verdict("Does aspirin work?", "") is None
    assert extract_verdict("Does aspirin work?", "Nonetheless, aspirin helped [1].") == "yes"
