"""Emergencies: recognised in the question, and answered with advice to call emergency services first."""

from __future__ import annotations

import pytest

from chatbot.chat import Chatbot
from chatbot.prompts import EMERGENCY_NOTICE, NO_EVIDENCE_ANSWER
from chatbot.safety import is_emergency
from config import Config
from index.search import PubMedIndex
from tests.conftest import ScriptedGenerator


@pytest.mark.parametrize(
    "question",
    [
        "I have crushing chest pain and my left arm is numb, is it aspirin time?",
        "My son swallowed bleach, what do I do?",
        "my father is unconscious and not breathing",
        "She took 30 pills of paracetamol an hour ago",
        "I want to kill myself",
        "I'm feeling suicidal tonight",
        "My wife's face is drooping and she has slurred speech",
        "My baby has blue lips",
    ],
)
def test_emergencies_are_recognised(question: str) -> None:
    assert is_emergency(question)


@pytest.mark.parametrize(
    "question",
    [
        "Does aspirin reduce mortality after myocardial infarction?",
        "What is the risk of suicide in adolescents treated with SSRIs?",
        "Is chest pain in emergency departments often non-cardiac?",
        "Does ketamine reduce suicidal ideation?",
        "Outcomes of paracetamol overdose in adults: a cohort study",
        "What are the risk factors for severe COVID-19?",
    ],
)
def test_research_questions_are_not_emergencies(question: str) -> None:
    assert not is_emergency(question)


def test_emergency_advice_comes_first_in_every_streamed_answer(index: PubMedIndex) -> None:
    bot = Chatbot(index, ScriptedGenerator("Aspirin reduced events [1]."), Config(top_k=3, min_score=0.0, gate="off"))
    answers = list(bot.stream("I have chest pain right now, should I take aspirin?"))
    assert answers[0].text == EMERGENCY_NOTICE and not answers[0].sources  # before retrieval
    assert all(a.text.startswith(EMERGENCY_NOTICE) and a.emergency for a in answers)
    final = answers[-1]
    assert final.done and "Aspirin reduced events [1]." in final.text
    assert final.as_dict()["emergency"] is True


def test_emergency_advice_also_precedes_an_abstention(index: PubMedIndex) -> None:
    bot = Chatbot(index, ScriptedGenerator("never [1]."), Config(top_k=3, min_score=0.99))
    final = bot.ask("my husband collapsed and zzzz qqqq")
    assert final.abstained
    assert final.text == EMERGENCY_NOTICE + "\n\n" + NO_EVIDENCE_ANSWER
    assert bot.generator.messages == []


def test_research_question_gets_no_notice(index: PubMedIndex) -> None:
    bot = Chatbot(index, ScriptedGenerator("Aspirin reduced events [1]."), Config(top_k=3, min_score=0.0, gate="off"))
    final = bot.ask("Does aspirin reduce mortality after myocardial infarction?")
    assert not final.emergency and EMERGENCY_NOTICE not in final.text
