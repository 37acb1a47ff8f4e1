"""The evaluation harness (chatbot/eval.py, ``python -m chatbot eval``) and the corpus builder
(scripts/build_eval_corpora.py), on the demo index and on small hand-made question files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chatbot.chat import Chatbot
from chatbot.eval import EvalQuestion, evaluate, first_gold_rank, read_questions, retrieval_metrics
from config import Config
from index.search import PubMedIndex
from index.writer import ingest_files
from ingest import Article, read_source
from tests.conftest import SHARED, HashingEncoder, ScriptedGenerator


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def articles(index: PubMedIndex) -> list[Article]:
    return list(index.store.iter_articles())


def test_reads_pubmedqa_and_bioasq_records(tmp_path):
    path = write_jsonl(
        tmp_path / "q.jsonl",
        [
            {"pmid": "123", "question": "Does A help?", "final_decision": "yes", "contexts": ["..."]},
            {"id": "x", "question": "Is B safe?", "final_decision": "no", "gold_pmids": ["7", "8"]},
            {"question": "Without a decision?", "gold_pmids": [9]},
        ],
    )
    assert read_questions(path) == [
        EvalQuestion("Does A help?", frozenset({"123"}), "yes"),
        EvalQuestion("Is B safe?", frozenset({"7", "8"}), "no"),
        EvalQuestion("Without a decision?", frozenset({"9"}), None),
    ]
    assert len(read_questions(path, limit=2)) == 2


@pytest.mark.parametrize("line", ['{"question": "no gold"}', '{"pmid": "1"}', "not json"])
def test_bad_question_lines_name_their_line(tmp_path, line):
    path = tmp_path / "q.jsonl"
    path.write_text('{"pmid": "1", "question": "ok?"}\n' + line + "\n")
    with pytest.raises(ValueError, match=r"q\.jsonl:2"):
        read_questions(path)


def test_metrics_on_known_ranks():
    assert first_gold_rank(["5", "7", "8"], frozenset({"8", "7"})) == 2
    assert first_gold_rank(["5"], frozenset({"8"})) is None
    metrics = retrieval_metrics([1, 2, None, 7], k=10)
    assert metrics == {
        "recall@1": 0.25,
        "recall@5": 0.5,
        "recall@10": 0.75,
        "mrr": pytest.approx((1 + 0.5 + 1 / 7) / 4),
    }
    assert set(retrieval_metrics([1], k=3)) == {"recall@1", "recall@3", "mrr"}


def test_title_questions_on_the_demo_index(index, articles):
    questions = [EvalQuestion(a.title, frozenset({a.pmid})) for a in articles[:30]]
    result = evaluate(questions, index, k=10, progress=False)
    assert result["n"] == 30 and result["recall@1"] >= 0.9 and result["mrr"] >= 0.9
    assert result["recall@1"] <= result["recall@5"] <= result["recall@10"] <= 1.0
    assert "accuracy" not in result  # retrieval only


def test_wrong_gold_scores_zero(index, articles):
    questions = [EvalQuestion(a.title, frozenset({"1"})) for a in articles[:5]]
    result = evaluate(questions, index, k=10, progress=False)
    assert result["recall@10"] == 0 and result["mrr"] == 0


def test_answers_accuracy_and_citation_precision(index, articles):
    questions = [
        EvalQuestion(articles[0].title, frozenset({articles[0].pmid}), "yes"),
        EvalQuestion(articles[1].title, frozenset({articles[1].pmid}), "no"),
        EvalQuestion(articles[2].title, frozenset({articles[2].pmid}), "yes"),
    ]
    config = Config(top_k=3, min_score=0.05, gate="off")  # the gate is calibrated for MiniLM, not hashing
    bot = Chatbot(index, ScriptedGenerator("Yes, it does [1]."), config, encoder=None)
    result = evaluate(questions, index, k=10, chatbot=bot, progress=False)
    assert result["accuracy"] == pytest.approx(2 / 3)  # the scripted model always says yes
    assert result["judged"] == 3 and result["no_verdict"] == 0 and result["abstained"] == 0
    assert result["citations"] == 3 and result["citation_precision"] == 1.0
    assert result["citations_to_gold"] == 1.0  # [1] is the title's own abstract each time


def test_abstention_has_no_verdict_and_counts_as_wrong(index):
    questions = [EvalQuestion("zzzz qqqq xxxx", frozenset({"1"}), "no")]
    bot = Chatbot(index, ScriptedGenerator("No [1]."), Config(top_k=3, min_score=0.9), encoder=None)
    result = evaluate(questions, index, chatbot=bot, progress=False)
    assert result["abstained"] == 1 and result["no_verdict"] == 1 and result["accuracy"] == 0.0
    assert result["citation_precision"] is None  # no citation at all


def test_cli_eval_retrieval_only_json(tmp_path, index, articles, monkeypatch, capsys):
    from chatbot.__main__ import main

    monkeypatch.setattr("index.search.load_encoder", lambda *a, **k: HashingEncoder())
    questions = [{"pmid": a.pmid, "question": a.title, "final_decision": "yes"} for a in articles[:12]]
    path = write_jsonl(tmp_path / "q.jsonl", questions)
    args = ["eval", str(path), "--index-dir", str(index.index_dir), "--json", "--retrieval-only"]
    assert main([*args, "-k", "5", "--limit", "10", "--retriever", "bm25"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["n"] == 10 and result["k"] == 5 and result["retriever"] == "bm25"
    assert {"recall@1", "recall@5", "mrr"} <= set(result) and result["recall@1"] >= 0.9


def test_cli_eval_with_answers(tmp_path, index, articles, monkeypatch, capsys):
    from chatbot.__main__ import main

    monkeypatch.setattr("index.search.load_encoder", lambda *a, **k: HashingEncoder())
    replies = [f"No: {a.title.rstrip('.?')} [1]." for a in articles[:4]]  # its own title: a supported "No"
    monkeypatch.setattr("chatbot.generate.open_generator", lambda config: ScriptedGenerator(*replies))
    questions = [{"pmid": a.pmid, "question": a.title, "final_decision": "no"} for a in articles[:4]]
    path = write_jsonl(tmp_path / "q.jsonl", questions)
    args = ["eval", str(path), "--index-dir", str(index.index_dir), "--json", "--min-score", "0.05", "--gate", "off"]
    assert main(args) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["n"] == 4 and result["accuracy"] == 1.0 and result["citation_precision"] == 1.0
    assert {"recall@1", "recall@5", "recall@10", "mrr", "citations_to_gold"} <= set(result)


def test_cli_eval_unknown_retriever_fails_cleanly(tmp_path, index, monkeypatch, capsys):
    from chatbot.__main__ import main

    path = write_jsonl(tmp_path / "q.jsonl", [{"pmid": "1", "question": "q?"}])
    code = main(["eval", str(path), "--index-dir", str(index.index_dir), "--retrieval-only", "--retriever", "magic"])
    assert code == 2 and "unknown retriever" in capsys.readouterr().err


@pytest.mark.skipif(not (SHARED / "eval").exists(), reason="needs ../shared/eval")
def test_build_eval_corpora_then_ingest_and_evaluate(tmp_path):
    """Both corpora are built as the shared README describes, and ``python -m ingest``'s reader takes
    every record, title-less PubMedQA abstracts included; a small ingest then finds the gold abstracts."""
    from scripts.build_eval_corpora import DISTRACTOR_FILE, build

    counts = build(tmp_path, count=40, distractor_file=DISTRACTOR_FILE)
    assert counts == {"pubmedqa": 500 + 40, "bioasq": 1205 + 40}
    pubmedqa = tmp_path / "pubmedqa_corpus.jsonl"
    events = list(read_source(pubmedqa))
    assert all(isinstance(e, Article) and e.sections for e in events) and len(events) == 540
    assert events[0].title == "" and len({e.pmid for e in events}) == 540
    assert all(e.title for e in events[500:])  # distractors keep their titles
    sample = tmp_path / "sample.jsonl"
    sample.write_text(
        "".join(
            pubmedqa.read_text().splitlines(keepends=True)[:20] + pubmedqa.read_text().splitlines(keepends=True)[500:]
        )
    )
    config = Config(index_dir=tmp_path / "index")
    ingest_files([sample], config, read=read_source, encoder=HashingEncoder(), progress=False)
    questions = read_questions(SHARED / "eval" / "pubmedqa_dev.jsonl", limit=20)
    result = evaluate(questions, PubMedIndex(config.index_dir, encoder=HashingEncoder()), progress=False)
    assert result["n"] == 20 and result["recall@10"] >= 0.9


def test_jsonl_record_without_title_is_read_when_it_has_an_abstract(tmp_path):
    """PubMedQA evidence has no title; ``python -m ingest``'s JSON Lines reader must keep it."""
    path = write_jsonl(
        tmp_path / "c.jsonl",
        [{"pmid": "5", "title": "", "abstract": "Contexts and conclusion."}, {"pmid": "6", "title": ""}],
    )
    first, second = read_source(path)
    assert isinstance(first, Article) and first.title == "" and first.text == "Contexts and conclusion."
    assert not isinstance(second, Article) and "title" in second.reason  # neither title nor abstract
