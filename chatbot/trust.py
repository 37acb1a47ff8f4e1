"""A yes / no verdict is never stated more strongly than the support check allows.

The system prompt asks a model to open a yes/no answer with Yes, No or Maybe, and readers take
that first word as the answer. The support check (``chatbot/support.py``) judges the first
claim: only when it cites an abstract that closely matches it ("supported") may the answer
open with Yes or No. Otherwise (the citation was added by the check, the match is weak, or no
abstract matches) the opening word is replaced by ``TEMPERED_VERDICT``, and the verdict becomes
"maybe". Without a support check (no encoder) nothing is changed: there is nothing to go by.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from chatbot.prompts import TEMPERED_VERDICT
from chatbot.support import SentenceSupport

_LEADING = re.compile(r"^(\W*)(yes|no)\b[\s,:;.!-]*", re.IGNORECASE)


def temper_verdict(text: str, support: Sequence[SentenceSupport]) -> tuple[str, bool]:
    """``text`` with a Yes / No opening softened when its first claim is not supported, and whether it was."""
    match = _LEADING.match(text)
    if not match or not support or support[0].status == "supported":
        return text, False
    rest = text[match.end() :]
    if re.match(r"[A-Z][a-z]", rest):  # "Intravenous ..." reads on after the colon; "IL-6 ..." keeps its case
        rest = rest[0].lower() + rest[1:]
    return f"{match.group(1)}{TEMPERED_VERDICT} {rest}", True
