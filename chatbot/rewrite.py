"""Follow-up questions ("and in children?") rewritten into standalone search queries.

Retrieval sees one query, not the conversation, so a follow-up that leans on earlier turns
must be made standalone first. When a question looks like a follow-up, the generator is asked
to rewrite it (greedy, a few dozen tokens); a reply that is empty, long, cites sources or shares
no word with the conversation is rejected, and a deterministic rewrite is used instead: the
previous question's content words, then the follow-up. The tiny offline model (SmolLM2-135M) is
not asked at all: measured, its rewrites lose to the deterministic one. A standalone question is
searched as is.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence

from chatbot.generate import Generator
from chatbot.prompts import REWRITE_SYSTEM, REWRITE_TEMPLATE, answer_body, says_insufficient

History = Sequence[tuple[str, str]]

MAX_REWRITE_TOKENS = 64
MAX_QUERY_WORDS = 40
ANSWER_CHARS = 300  # of the last answer shown to the rewriter: enough for its topic

_FOLLOW_UP_START = re.compile(
    r"^\W*(and|but|also|what about|how about|what if|then|so|in|for|with|without|among|versus|vs|compared)\b",
    re.IGNORECASE,
)
_REFERENCE = re.compile(r"\b(it|its|they|them|their|these|those|this one|the same|such)\b", re.IGNORECASE)
_STOPWORD_TEXT = (  # function words that say nothing about a topic
    "a an the of in on for to with without and or but is are was were be been do does did can could should would "
    "will has have had may might what which who whom whose when where why how than then that this these those "
    "there it its they them their about any some as at by from into vs versus"
)
_STOPWORDS = frozenset(_STOPWORD_TEXT.split())
_WORD = re.compile(r"[\w'-]+")
_PREFIX = re.compile(r"^\W*(standalone|rewritten)?\s*(question|query)\s*:\s*", re.IGNORECASE)


def looks_like_follow_up(question: str, history: History) -> bool:
    if not history:
        return False
    short = len(question.split()) <= 4
    return short or bool(_FOLLOW_UP_START.match(question) or _REFERENCE.search(question))


def rewrite_query(
    question: str,
    history: History,
    generator: Generator,
    *,
    stop: threading.Event | None = None,
    tiny_model: bool = False,
) -> str:
    """The query to search for ``question`` asked after ``history``. The tiny offline model is not
    asked (``tiny_model`` asks it anyway): its rewrites found the follow-up's abstract first less
    often than the deterministic rewrite (R@1 .82 against 1.00, BENCHMARKS.md issue #16)."""
    from chatbot.extractive import is_tiny

    if not looks_like_follow_up(question, history):
        return question
    if is_tiny(getattr(generator, "name", "")) and not tiny_model:
        return fallback_query(question, history)
    reply = "".join(
        generator.stream(
            rewrite_messages(question, history), max_new_tokens=MAX_REWRITE_TOKENS, temperature=0.0, stop=stop
        )
    )
    candidate = _clean(reply)
    return candidate if _acceptable(candidate, question, history) else fallback_query(question, history)


def rewrite_messages(question: str, history: History) -> list[dict[str, str]]:
    turns = []
    for user, assistant in list(history)[-2:]:
        turns += [f"User: {user}", f"Assistant: {answer_body(assistant)[:ANSWER_CHARS]}"]
    content = REWRITE_TEMPLATE.format(conversation="\n".join(turns), question=question)
    return [{"role": "system", "content": REWRITE_SYSTEM}, {"role": "user", "content": content}]


def fallback_query(question: str, history: History) -> str:
    """The previous question's content words not already asked, then the follow-up itself."""
    asked = {w.lower() for w in _WORD.findall(question)}
    previous = [w for w in _WORD.findall(history[-1][0]) if w.lower() not in _STOPWORDS | asked]
    return " ".join([*dict.fromkeys(previous), question.strip()])


def _clean(reply: str) -> str:
    line = next((line for line in reply.strip().splitlines() if line.strip()), "")
    return _PREFIX.sub("", line).strip().strip("\"'").strip()


def _acceptable(candidate: str, question: str, history: History) -> bool:
    if not candidate or len(candidate.split()) > MAX_QUERY_WORDS or re.search(r"\[\d", candidate):
        return False
    if says_insufficient(candidate):
        return False
    conversation = question + " " + " ".join(user for user, _ in history)
    known = {w.lower() for w in _WORD.findall(conversation)} - _STOPWORDS
    return any(w.lower() in known for w in _WORD.findall(candidate))
