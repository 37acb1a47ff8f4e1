"""Fit the retrieved sources into the generator's context window, by tokens, best first.

The prompt is counted as the model will read it (its chat template or completion format,
its tokenizer) where the backend can say; otherwise the text length gives a conservative
estimate. Sources are added in retrieval order (best first) while the whole prompt plus the
answer's token budget fits; the first source that does not fit whole is cut at a word to fill
what is left, and the rest are left out. When not even a short excerpt of the best source fits,
the conversation history goes first, then a clear error.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from chatbot.prompts import build_messages
from index.search import Hit
from ingest.records import EMBED_CHARS

Messages = list[dict[str, str]]

DEFAULT_CONTEXT = 4096  # for a generator, preset and configuration that all leave it open
CHARS_PER_TOKEN = 3.0  # estimate without a tokenizer: English averages ~4, medical terms split finer
MESSAGE_OVERHEAD = 8  # tokens of role markers around each message in a chat template
MIN_EXCERPT_WORDS = 40  # a shorter excerpt says too little to be worth citing
ELLIPSIS = " …"


class ContextTooSmall(ValueError):
    pass


@dataclass(frozen=True)
class Fitted:
    messages: Messages
    sources: tuple[Hit, ...]  # what the model sees, numbered [1], [2], ... in this order
    truncated: int  # sources shown only in part (0 or 1)
    dropped: int  # retrieved sources left out for lack of room


def prompt_counter(generator: object) -> Callable[[Messages], int]:
    """Tokens of a prompt for ``generator``: exact when it can render and count, else estimated."""
    render = getattr(generator, "render", None)
    count = getattr(generator, "count_tokens", None)
    if render is not None and count is not None:
        return lambda messages: count(render(messages))
    count = count or (lambda text: math.ceil(len(text) / CHARS_PER_TOKEN))
    return lambda messages: sum(count(m["content"]) + MESSAGE_OVERHEAD for m in messages)


def context_window(generator: object, configured: int = 0) -> int:
    return getattr(generator, "context_window", 0) or configured or DEFAULT_CONTEXT


def fit_sources(
    question: str,
    hits: Sequence[Hit],
    history: Sequence[tuple[str, str]],
    *,
    window: int,
    reserve: int,
    count: Callable[[Messages], int],
    texts: Sequence[str] | None = None,
) -> Fitted:
    """The prompt with as many of ``hits`` as fit in ``window`` minus ``reserve`` answer tokens.

    ``texts`` (one per hit) is what the model reads of each source, e.g. its question-relevant
    passages (``chatbot.passages``); by default the abstract, at most ``EMBED_CHARS`` of it."""
    budget = window - reserve
    texts = list(texts) if texts is not None else [source_text(h) for h in hits]
    for turns in (history, ()):
        chosen: list[Hit] = []
        excerpts: list[str] = []
        for hit, text in zip(hits, texts, strict=True):
            if count(build_messages(question, [*chosen, hit], turns, excerpts=[*excerpts, text])) <= budget:
                chosen.append(hit)
                excerpts.append(text)
                continue
            cut = _longest_excerpt(question, chosen, excerpts, hit, text, turns, budget, count)
            if cut is not None:
                chosen.append(hit)
                excerpts.append(cut)
            break
        if chosen:
            messages = build_messages(question, chosen, turns, excerpts=excerpts)
            truncated = int(excerpts[-1] != texts[len(chosen) - 1])
            return Fitted(messages, tuple(chosen), truncated, len(hits) - len(chosen))
        if not hits:
            return Fitted(build_messages(question, [], turns), (), 0, 0)
    raise ContextTooSmall(
        f"a context window of {window} tokens leaves no room for a source after the prompt and "
        f"{reserve} answer tokens; lower --max-new-tokens or use a model with a larger window"
    )


def source_text(hit: Hit) -> str:
    """The abstract as the model may read it: at most ``EMBED_CHARS`` (what was embedded), so that
    one huge record cannot make fitting, counting or reading a prompt costly."""
    abstract = hit.article.abstract
    return abstract if len(abstract) <= EMBED_CHARS else abstract[:EMBED_CHARS].rsplit(" ", 1)[0] + ELLIPSIS


def _longest_excerpt(
    question: str,
    chosen: list[Hit],
    excerpts: list[str],
    hit: Hit,
    text: str,
    turns: Sequence[tuple[str, str]],
    budget: int,
    count: Callable[[Messages], int],
) -> str | None:
    """The longest word-boundary prefix of ``text`` (``hit``'s) that still fits (binary search)."""
    words = text.split(" ")

    def excerpt(n: int) -> str:
        return " ".join(words[:n]) + ELLIPSIS

    def fits(n: int) -> bool:
        return count(build_messages(question, [*chosen, hit], turns, excerpts=[*excerpts, excerpt(n)])) <= budget

    low, high = MIN_EXCERPT_WORDS, len(words) - 1
    if high < low or not fits(low):
        return None
    while low < high:
        middle = (low + high + 1) // 2
        low, high = (middle, high) if fits(middle) else (low, middle - 1)
    return excerpt(low)
