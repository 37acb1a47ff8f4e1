"""The evidence gate (chatbot/gate.py), the Chatbot's abstention on it, ``Without`` and the
``python -m chatbot eval --abstention`` rates, on the demo index with the hashing encoder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chatbot.chat import Chatbot
from chatbot.eval import EvalQuestion, Without, abstention_metrics, gate_pairs
from chatbot.gate import COVERAGE_WEIGHT, GATE_THRESHOLD, assess, check_gate, question_coverage
from chatbot.prompts import NO_EVIDENCE_ANSWER
from config import Config
from index.search import Hit, PubMedIndex
from ingest.records import Article, Section
from tests.conftest import HashingEncoder, ScriptedGenerator
from webui.render import RELATED_HEADING, render_sources


def _hit(text: str, score: float, rank: int = 1) -> Hit:
    return Hit(Article(pmid=str(rank), title="", sections=(Section("", text),)), score, rank)


@pytest.fixture(scope="module")
def index(demo_index: Path) -> PubMedIndex:
    return PubMedIndex(demo_index, encoder=HashingEncoder())


def test_coverage_is_the_share_of_question_words_one_hit_holds() -> None:
    hits = [_hit("Aspirin reduced stroke recurrence.", 0.5), _hit("Aspirin in children.", 0.4, 2)]
    assert question_coverage("Does aspirin reduce stroke?", hits) == 1.0  # stemmed: reduce ~ reduced
    assert question_coverage("Does aspirin help children?", hits) == pytest.approx(2 / 3)
    assert question_coverage("Does aspirin help children?", []) == 0.0


def test_gate_combines_similarity_and_coverage_at_the_threshold() -> None:
    question = "Does aspirin reduce stroke?"
    on_topic = [_hit("Aspirin reduced stroke recurrence.", GATE_THRESHOLD - COVERAGE_WEIGHT)]
    decision = assess(question, on_topic)
    assert decision.answerable and decision.coverage == 1.0
    assert decision.evidence == pytest.approx(GATE_THRESHOLD)
    off_topic = [_hit("Statins and muscle pain in adults.", GATE_THRESHOLD - COVERAGE_WEIGHT)]
    assert not assess(question, off_topic).answerable  # same similarity, no shared word
    assert not assess(question, []).answerable
    assert assess(question, off_topic, threshold=0.0).answerable


def test_unknown_gate_setting_is_refused() -> None:
    assert check_gate("off") == "off"
    with pytest.raises(ValueError, match="on, off"):
        check_gate("maybe")


def test_gate_abstains_before_generation_and_keeps_the_related_abstracts(index: PubMedIndex) -> None:
    generator = ScriptedGenerator("Never generated [1].")
    question = "Does whole-body cryotherapy improve sprint times in elite rowers?"
    bot = Chatbot(index, generator, Config(top_k=3, min_score=0.0), encoder=HashingEncoder())
    final = bot.ask(question)
    assert final.sufficiency is not None and not final.sufficiency.answerable  # precondition: the gate said no
    assert final.abstained and final.text == NO_EVIDENCE_ANSWER and generator.calls == []
    assert len(final.sources) == 3  # the closest abstracts are still shown ...
    html = render_sources(final)
    assert RELATED_HEADING in html and "Evidence score" in html  # ... labelled as not answering
    off = Chatbot(index, generator, Config(top_k=3, min_score=0.0, gate="off"), encoder=HashingEncoder())
    assert not off.ask(question).abstained and generator.calls  # the gate alone decided


def test_without_hides_the_gold_abstract_from_every_retriever(index: PubMedIndex) -> None:
    article = list(index.store.iter_articles())[5]
    for retriever in ("dense", "bm25", "hybrid"):
        assert index.search(article.title, k=3, retriever=retriever)[0].pmid == article.pmid
        hidden = index.search(article.title, k=3, retriever=retriever, filters=Without([article.pmid]))
        assert len(hidden) == 3 and article.pmid not in {h.pmid for h in hidden}


def test_gate_pairs_and_rates(index: PubMedIndex) -> None:
    articles = list(index.store.iter_articles())[:6]
    questions = [EvalQuestion(a.title, frozenset({a.pmid})) for a in articles]
    pairs = gate_pairs(questions, index, k=5, progress=False)
    assert all(a.similarity > u.similarity for a, u in pairs)  # its own abstract is the closest
    rates = abstention_metrics(pairs)
    assert rates["questions"] == 6
    assert rates["answer_on_answerable"] == sum(a.answerable for a, _ in pairs) / 6
    assert rates["abstain_on_unanswerable"] == sum(not u.answerable for _, u in pairs) / 6


def test_cli_eval_reports_abstention_rates(tmp_path: Path, index: PubMedIndex, monkeypatch, capsys) -> None:
    from chatbot.__main__ import main

    monkeypatch.setattr("index.search.load_encoder", lambda *a, **k: HashingEncoder())
    articles = list(index.store.iter_articles())[:5]
    path = tmp_path / "q.jsonl"
    path.write_text("".join(json.dumps({"pmid": a.pmid, "question": a.title}) + "\n" for a in articles))
    args = ["eval", str(path), "--index-dir", str(index.index_dir), "--json", "--retrieval-only", "--abstention"]
    assert main(args) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["abstention"]["questions"] == 5
    assert set(result["abstention"]) == {"questions", "answer_on_answerable", "abstain_on_unanswerable"}
