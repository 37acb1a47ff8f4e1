"""The passage of each retrieved abstract that matched the question, for its source card.

The index holds one vector per abstract, so it cannot say *where* an abstract matched. Here the
question and every sentence of the retrieved abstracts are embedded in one encoder call and each
card quotes its closest sentence (with the next one when it is short). That is a few dozen short
texts per question: cheap next to generation. Without an encoder the card falls back to the
abstract's conclusion.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from index.encoder import Encoder
from index.search import Hit
from ingest.records import EMBED_CHARS

# A sentence ends at . ! or ? before a capital, digit or bracket, except after abbreviations that
# abstracts use mid-sentence ("30 vs. 15 mg", "Smith et al. 2019", "e.g. 5 days").
_SENTENCE_END = re.compile(r"(?<=[.!?])(?<!\bvs\.)(?<!\bal\.)(?<!\be\.g\.)(?<!\bi\.e\.)(?<!\bca\.)\s+(?=[A-Z0-9(\[])")
SHORT_SENTENCE = 120  # characters; a shorter best match gets its next sentence for context


def sentences(hit: Hit) -> list[str]:
    """The abstract's sentences, section by section (a label never joins two sections), within its
    first ``EMBED_CHARS`` characters: a huge record costs a question no more than a long abstract."""
    found, length = [], 0
    for section in hit.article.sections:
        for sentence in _SENTENCE_END.split(section.text.strip()):
            if sentence and length < EMBED_CHARS:
                found.append(sentence[: EMBED_CHARS - length])
                length += len(sentence)
    return found


def matched_passages(query: str, hits: Sequence[Hit], encoder: Encoder | None) -> dict[str, str]:
    """PMID -> the sentence(s) of that abstract closest to ``query``."""
    if encoder is None or not query.strip() or not hits:
        return {h.pmid: h.article.conclusion for h in hits}
    split = [sentences(h) for h in hits]
    flat = [s for group in split for s in group]
    if not flat:
        return {h.pmid: h.article.conclusion for h in hits}
    vectors = encoder.encode([query, *flat])
    scores = vectors[1:] @ vectors[0]  # unit vectors: inner product is cosine
    passages, start = {}, 0
    for hit, group in zip(hits, split, strict=True):
        if not group:
            passages[hit.pmid] = hit.article.conclusion
            continue
        best = int(np.argmax(scores[start : start + len(group)]))
        passage = group[best]
        if len(passage) < SHORT_SENTENCE and best + 1 < len(group):
            passage += " " + group[best + 1]
        passages[hit.pmid] = passage
        start += len(group)
    return passages
