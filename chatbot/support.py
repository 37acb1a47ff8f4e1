"""Sentence-level support check: does each answer sentence match something in the sources?

Embedding similarity between an answer sentence and the sentences of each retrieved abstract
(with the index's own encoder). A sentence the model left uncited but that closely matches a
source gets that source's number (so a weak model's answer is still traceable); a sentence
that matches nothing is marked unsupported instead of being shown as evidence. Similarity
does not understand negation: it shows where a claim comes from, not that it is true.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from index.encoder import Encoder
from index.search import Hit

SUPPORT_THRESHOLD = 0.6  # cosine of sentence pairs; MiniLM paraphrases score > 0.7, topic-only matches < 0.5
UNSUPPORTED_MARK = " [unsupported]"
_BOUNDARY = re.compile(r"((?<=[.!?])\s+(?=[A-Z0-9\[(])|\n+)")  # captured, so the layout survives
_MARKER = re.compile(r"\[\d+(?:, \d+)*\]")


@dataclass(frozen=True)
class Checked:
    text: str
    attributed: int  # sentences that received a citation from the support check
    unsupported: int  # sentences with no citation and no matching source


def split_sentences(text: str) -> list[str]:
    return [s for s in _BOUNDARY.split(text)[::2] if s.strip()]


def check_support(text: str, sources: Sequence[Hit], encoder: Encoder, threshold: float = SUPPORT_THRESHOLD) -> Checked:
    parts = _BOUNDARY.split(text)  # sentence, separator, sentence, ...
    claims = [i for i in range(0, len(parts), 2) if not _MARKER.search(parts[i]) and len(parts[i].split()) >= 4]
    if not claims or not sources:
        return Checked(text, 0, 0)
    source_sentences = [(n, s) for n, hit in enumerate(sources, start=1) for s in split_sentences(hit.article.text)]
    claim_vectors = encoder.encode([parts[i] for i in claims])
    source_vectors = encoder.encode([s for _, s in source_sentences])
    similarity = claim_vectors @ source_vectors.T
    attributed = unsupported = 0
    for row, index in enumerate(claims):
        best = int(np.argmax(similarity[row]))
        if similarity[row, best] >= threshold:
            parts[index] = _append(parts[index], f" [{source_sentences[best][0]}]")
            attributed += 1
        else:
            parts[index] = _append(parts[index], UNSUPPORTED_MARK)
            unsupported += 1
    return Checked("".join(parts), attributed, unsupported)


def _append(sentence: str, mark: str) -> str:
    """Put the mark before the sentence's final punctuation, as citations usually sit."""
    stripped = sentence.rstrip()
    if stripped and stripped[-1] in ".!?":
        return stripped[:-1] + mark + stripped[-1]
    return stripped + mark
