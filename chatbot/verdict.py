"""A yes / no / maybe verdict from an answer, for evaluation harnesses (PubMedQA, BioASQ).

The system prompt asks the model to begin a yes/no answer with Yes, No or Maybe, so the verdict
is normally its first word. When a model ignores that and the question is a yes/no question,
the answer's first sentence decides: a hedge means "maybe", a negation means "no", otherwise
"yes". Deliberately simple and predictable: it reads the answer, never the sources.
"""

from __future__ import annotations

import re

VERDICTS = ("yes", "no", "maybe")

_AUXILIARY = (
    r"(is|are|was|were|do|does|did|can|could|should|would|will|has|have|had|may|might|must|shall|"
    r"isn't|aren't|doesn't|don't|didn't|can't)"
)
_YES_NO_QUESTION = re.compile(rf"^\W*{_AUXILIARY}\b", re.IGNORECASE)
_LEADING = re.compile(r"^\W*(yes|no|maybe|possibly|unclear|uncertain)\b", re.IGNORECASE)
_HEDGE = re.compile(
    r"\b(unclear|uncertain|inconclusive|mixed|conflicting|limited evidence|insufficient|may|might|possibly)\b",
    re.IGNORECASE,
)
_NEGATION = re.compile(
    r"\b(no|not|neither|nor|none|never|without|did not|does not|do not|was not|were not|failed to)\b",
    re.IGNORECASE,
)
_FIRST_SENTENCE = re.compile(r"(?<=[.!?])\s")


def is_yes_no_question(question: str) -> bool:
    """Starts (or its last clause starts) with an auxiliary verb: "Does X reduce Y?", "X: is it safe?"."""
    clauses = [c for c in re.split(r"[:;]", question) if c.strip()]
    return any(_YES_NO_QUESTION.match(c) for c in clauses[:1] + clauses[-1:])


def extract_verdict(question: str, answer: str) -> str | None:
    """The verdict, "yes", "no" or "maybe"; None when neither answer nor question is yes/no shaped."""
    leading = _LEADING.match(answer)
    if leading:
        word = leading.group(1).lower()
        return word if word in VERDICTS else "maybe"
    if not is_yes_no_question(question) or not answer.strip():
        return None
    first = _FIRST_SENTENCE.split(answer.strip(), maxsplit=1)[0]
    if _HEDGE.search(first):
        return "maybe"
    return "no" if _NEGATION.search(first) else "yes"
