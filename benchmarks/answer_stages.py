"""One process of the answer-latency benchmark: open the chatbot, ask questions, time every stage.

Run by ``benchmarks/answer_latency.py`` inside a source tree (today's code checked out from git,
or the working tree), with the configuration in ``PUBMED_RAG_*`` variables, and prints one JSON
object. It uses only interfaces that both trees share (``open_chatbot``, ``Chatbot.stream``, the
index's query encoder and reranker, the generator's ``stream``), and times each stage by wrapping
those objects' methods in this process, so the answer path itself is the product's, unchanged.

    PUBMED_RAG_INDEX_DIR=... python benchmarks/answer_stages.py --spawned-at EPOCH "question" ...
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator


class Clock:
    """Seconds spent in each wrapped stage during the current question."""

    def __init__(self) -> None:
        self.spent: dict[str, float] = defaultdict(float)
        self.active: list[str] = []  # the stages running now, outermost first

    def wrap(self, stage: str, func: Callable, *, inside: str = "") -> Callable:
        """Time ``func`` as ``stage``; with ``inside``, only calls made while that stage runs."""

        @functools.wraps(func)
        def timed(*args, **kwargs):
            if inside and inside not in self.active:
                return func(*args, **kwargs)
            start = time.perf_counter()
            self.active.append(stage)
            try:
                return func(*args, **kwargs)
            finally:
                self.active.pop()
                self.spent[stage] += time.perf_counter() - start

        return timed

    def wrap_stream(self, func: Callable[..., Iterator[str]], pieces: list[str]) -> Callable:
        """Prompt evaluation (call -> first piece) and decoding (first piece -> last) of a generator."""

        @functools.wraps(func)
        def timed(*args, **kwargs):
            start = time.perf_counter()
            first = None
            for piece in func(*args, **kwargs):
                if first is None:
                    first = time.perf_counter()
                    self.spent["prompt_eval"] += first - start
                pieces.append(piece)
                yield piece
            end = time.perf_counter()
            if first is not None:
                self.spent["decode"] += end - first

        return timed


def instrument(bot, clock: Clock, pieces: list[str]) -> None:
    import chatbot.chat as chat_module

    index = bot.retriever
    encoder = index.query_encoder
    encoder.encode = clock.wrap("query_encoding", encoder.encode, inside="search_total")
    index.search = clock.wrap("search_total", index.search)
    if getattr(index, "reranker", None) is not None:
        index.reranker.rerank = clock.wrap("rerank", index.reranker.rerank)
    bot._fit = clock.wrap("prompt_building", bot._fit)
    bot.generator.stream = clock.wrap_stream(bot.generator.stream, pieces)
    chat_module.check_support = clock.wrap("support_check", chat_module.check_support)


def ask(bot, question: str, clock: Clock, pieces: list[str]) -> dict[str, object]:
    from webui.passages import matched_passages

    clock.spent.clear()
    pieces.clear()
    start = time.perf_counter()
    sources_at = first_word_at = None
    final = None
    for answer in bot.stream(question):
        now = time.perf_counter()
        if sources_at is None and answer.sources:
            sources_at = now
            # The app quotes each source's best-matching passage when the sources first show.
            passages_start = time.perf_counter()
            matched_passages(answer.query or question, answer.sources, bot.encoder)
            clock.spent["passage_matching"] += time.perf_counter() - passages_start
            sources_at = time.perf_counter()
        if first_word_at is None and pieces:
            first_word_at = now
        final = answer
    total = time.perf_counter() - start
    stages = dict(clock.spent)
    searching = stages.pop("search_total", 0.0)
    encoding, reranking = stages.get("query_encoding", 0.0), stages.get("rerank", 0.0)
    # Encoding inside search is counted once, as query encoding; the rest of search is the first stage.
    stages["first_stage_search"] = max(searching - reranking - min(encoding, searching), 0.0)
    tokens = _count_tokens(bot.generator, "".join(pieces))
    return {
        "question": question,
        "stages_s": stages,
        "sources_visible_s": (sources_at - start) if sources_at else None,
        "first_word_s": (first_word_at - start) if first_word_at else None,
        "total_s": total,
        "answer_tokens": tokens,
        "abstained": bool(final and final.abstained),
        "sources": [h.pmid for h in final.sources] if final else [],
    }


def _count_tokens(generator, text: str) -> int:
    count = getattr(generator, "count_tokens", None)
    return int(count(text)) if count and text else len(text.split())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("questions", nargs="+")
    parser.add_argument("--spawned-at", type=float, required=True, help="time.time() when the process was started")
    args = parser.parse_args(argv)

    from chatbot.chat import open_chatbot
    from config import Config

    config = Config.from_env()
    bot = open_chatbot(config)
    ready_s = time.time() - args.spawned_at
    clock, pieces = Clock(), []
    instrument(bot, clock, pieces)
    results = [ask(bot, question, clock, pieces) for question in args.questions]
    print(json.dumps({"ready_s": ready_s, "generator": bot.generator.name, "questions": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
