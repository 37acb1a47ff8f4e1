"""Exact terms: the few abstracts that contain an identifier the query names.

A sentence encoder has never seen most gene symbols, drug codes and trial acronyms ("ZX-4471",
"SGLT2", "ACCORD"), so a query naming one gets abstracts about similar-sounding topics from the
dense side, and hybrid fusion, which weights dense 0.85, buries the few abstracts BM25 found by
the exact word. Here an **identifier** is a query word that mixes letters and digits or holds two
or more capitals; it is **rare** when between 1 and ``RARE_DF`` abstracts contain all of its BM25
terms. ``index/hybrid.py`` moves the abstracts holding a rare identifier up to just after the
fused first hit (in fused order among themselves; BENCHMARKS.md issue #16 has both dev sets).

Deliberately narrow: plain lower-case words, however rare (a new drug name), are left to the
fusion (often misspellings or inflections; not measured), and an identifier common enough to
appear in more than ``RARE_DF`` abstracts is no longer an exact pointer but a topic, which the
fusion handles.
"""

from __future__ import annotations

import re

import numpy as np

RARE_DF = 10  # abstracts; an identifier in more of them names a topic, not a few specific papers
_WORD = re.compile(r"[A-Za-z0-9][\w-]*[A-Za-z0-9]|[A-Za-z0-9]")


def identifiers(query: str) -> list[str]:
    """Words of ``query`` shaped like a gene symbol, drug code or acronym: letters with digits, or 2+ capitals."""
    found = []
    for word in _WORD.findall(query):
        letters = any(c.isalpha() for c in word)
        if letters and (any(c.isdigit() for c in word) or sum(c.isupper() for c in word) >= 2):
            found.append(word)
    return list(dict.fromkeys(found))


def rare_identifier_rows(bm25, query: str, *, max_df: int = RARE_DF) -> np.ndarray:
    """Rows of ``bm25`` (an ``index.bm25.BM25Search``) holding every term of some rare identifier of ``query``."""
    from index.bm25 import tokenize

    words = identifiers(query)
    if not words or not len(bm25):
        return np.zeros(0, dtype=np.int64)
    found: set[int] = set()
    for terms in tokenize(words):
        rows = bm25.rows_with_all(terms)
        if rows is not None and 0 < len(rows) <= max_df:
            found.update(rows.tolist())
    return np.asarray(sorted(found), dtype=np.int64)
