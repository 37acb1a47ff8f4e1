"""Recognise a question that describes a possible emergency happening now.

Such a question gets advice to contact emergency services before anything else. The test is a
pair: someone present in the question (I, my son, she, ...) and an emergency sign (chest pain,
not breathing, overdose, ...), or a first-person statement of intent to self-harm. Research
questions ("Does aspirin reduce mortality after myocardial infarction?") name no person and
pass through. A false alarm costs one conditional sentence, so the lists lean towards warning.
"""

from __future__ import annotations

import re

_PERSON = re.compile(
    r"\b(i|i'm|im|i've|i am|me|my|we|our|he|she|he's|she's|his|her|they're|someone|somebody|"
    r"mum|mom|dad|father|mother|son|daughter|baby|child|kid|husband|wife|partner|friend|brother|sister)\b",
    re.IGNORECASE,
)
_SIGN = re.compile(
    r"(chest pain|pain in (my|his|her) chest|crushing chest|heart attack|can'?t breathe|cannot breathe|"
    r"not breathing|stopped breathing|struggling to breathe|difficulty breathing|choking|"
    r"unconscious|unresponsive|passed out|won'?t wake|collapsed|seizure|convulsion|fitting|"
    r"having a stroke|face (is )?droop|slurred speech|can'?t move (my|his|her) (arm|leg)|"
    r"bleeding (heavily|a lot|badly)|heavy bleeding|won'?t stop bleeding|vomiting blood|coughing up blood|"
    r"anaphyla|throat (is )?(closing|swelling)|swollen (throat|tongue)|blue lips|"
    r"overdos|took (too many|a whole|all the|\d+) (pills|tablets)|swallowed (bleach|poison)|poisoned)",
    re.IGNORECASE,
)
_SELF_HARM = re.compile(
    r"\b(kill(ing)? myself|end(ing)? my (own )?life|take my (own )?life|want to die|hurt(ing)? myself|"
    r"(i am|i'm|im|i feel|feeling) suicidal)\b",
    re.IGNORECASE,
)


def is_emergency(question: str) -> bool:
    if _SELF_HARM.search(question):
        return True
    return bool(_SIGN.search(question) and _PERSON.search(question))
