"""Abstracts longer than the encoder's token limit: overlapping windows pooled into one vector.

A transformer encoder silently truncates its input, so without this the end of a long abstract
(often its results and conclusions) would never reach the index. Instead a text over the limit
is cut into windows of at most ``max_tokens`` tokens that overlap by ``overlap`` tokens (cuts
move to word boundaries), every window is embedded, and the article's vector is the normalised
mean of its window vectors.

Why one pooled vector rather than one vector per window: the index stays keyed by PMID (one
vector per article), so search returns each article once with no de-duplication step, deletes
and replacements stay one FAISS id, and the search code is unchanged. The price is that a query
matching one window of a very long abstract scores a little lower than it would against that
window alone; PubMed abstracts are at most a few windows long, so the dilution is small.

Texts within the limit are encoded exactly as before (one window, no pooling).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from index.encoder import Encoder

Offsets = list[tuple[int, int]]  # (start, end) character offsets of each token


class LongTextEncoder:
    """Wraps an ``Encoder``: same name, dimension and vectors for short texts; pooled windows for long."""

    def __init__(
        self, inner: Encoder, *, offsets: Callable[[list[str]], list[Offsets]], max_tokens: int, overlap: int
    ) -> None:
        if not 0 <= overlap < max_tokens:
            raise ValueError(f"overlap {overlap} must be smaller than the window of {max_tokens} tokens")
        self.inner = inner
        self.name, self.dim = inner.name, inner.dim
        self.backend = getattr(inner, "backend", "torch")
        self._offsets, self.max_tokens, self.overlap = offsets, max_tokens, overlap

    windows_encoded = 0  # windows encoded so far (the unit of encoder work: a long abstract makes several)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        texts = list(texts)
        pieces: list[str] = []
        owners: list[int] = []
        for row, (text, offsets) in enumerate(zip(texts, self._offsets(texts), strict=True)):
            windows = split_text(text, offsets, self.max_tokens, self.overlap)
            pieces.extend(windows)
            owners.extend([row] * len(windows))
        self.windows_encoded += len(pieces)
        if len(pieces) == len(texts):
            return self.inner.encode(texts)
        vectors = self.inner.encode(pieces)
        rows = np.asarray(owners)
        pooled = np.zeros((len(texts), self.dim), dtype=np.float32)
        np.add.at(pooled, rows, vectors)
        pooled /= np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
        single = np.bincount(rows, minlength=len(texts)) == 1
        pooled[single] = vectors[np.isin(rows, np.flatnonzero(single))]  # one window: its vector, untouched
        return pooled


def split_text(text: str, offsets: Offsets, max_tokens: int, overlap: int) -> list[str]:
    """``text`` itself if it has at most ``max_tokens`` tokens, else overlapping windows of it."""
    if len(offsets) <= max_tokens:
        return [text]
    windows = []
    start = 0
    while True:
        end = min(start + max_tokens, len(offsets))
        if end < len(offsets):
            end = _word_start(offsets, end, lowest=start + 1, highest=end)
        windows.append(text[offsets[start][0] : offsets[end - 1][1]])
        if end >= len(offsets):
            return windows
        start = _word_start(offsets, max(end - overlap, start + 1), lowest=start + 1, highest=end)


def _word_start(offsets: Offsets, index: int, *, lowest: int, highest: int) -> int:
    """The first token of ``index``'s word, searching back to ``lowest``, else forward to ``highest``
    (a word longer than the window is cut where it must be)."""
    starts_word = [i for i in range(lowest, highest + 1) if offsets[i][0] != offsets[i - 1][1]]
    before = [i for i in starts_word if i <= index]
    after = [i for i in starts_word if i > index]
    return before[-1] if before else after[0] if after else index


def long_text_encoder(encoder: Encoder) -> Encoder:
    """``encoder`` wrapped in ``LongTextEncoder`` when it exposes a fast ``tokenizer`` and a token
    limit ``max_seq_length`` (the torch and ONNX encoders do); any other encoder (test fakes, APIs)
    is returned as is."""
    tokenizer = getattr(encoder, "tokenizer", None)
    limit = getattr(encoder, "max_seq_length", None)
    if tokenizer is None or not getattr(tokenizer, "is_fast", False) or not limit:
        return encoder
    max_tokens = int(limit) - tokenizer.num_special_tokens_to_add()  # [CLS] and [SEP] count too

    def offsets(texts: list[str]) -> list[Offsets]:
        encoded = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
        return [list(map(tuple, o)) for o in encoded["offset_mapping"]]

    # A quarter of the window (at most 64 tokens, about two sentences) carries context across a cut.
    return LongTextEncoder(encoder, offsets=offsets, max_tokens=max_tokens, overlap=min(64, max_tokens // 4))
