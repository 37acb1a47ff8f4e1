"""BM25 as raw term frequencies per metadata segment, weighted at query time: updates cost the update.

Why: bm25s precomputes every (term, document) weight, and a weight depends on the whole
collection (document count, average length, the term's document frequency), so one new abstract
changes every weight and the matrix had to be rebuilt from the whole store at every ingest (~1.1
CPU-hours at 24M abstracts). What does not depend on the collection is each document's own
term frequencies and length. So, per metadata segment (``index/meta_segments.py``; one BM25
segment per ``articles-NNNNNN.sqlite``, same number, same rows):

- ``bm25/NNNNNN.*.npy``: the segment's PMIDs (sorted; row i is the i-th), token counts per row,
  and a CSC matrix of raw term frequencies (``indptr``, ``rows``, ``tfs``) whose columns are the
  segment's stems in sorted order (``vocab``: their UTF-8 bytes end to end, ``offsets``: where
  each starts), looked up by binary search in the memory-mapped bytes; ``NNNNNN.json``: its
  document and token counts, written last (a segment without it is incomplete);
- written once, by the ingest that writes the metadata segment (new rows or a merge), with the
  same streamed two-pass build as the reference (``index/bm25.py``); hard-linked afterwards;
- a row is live while its metadata row is: the dead ``(segment, PMID)`` pairs come from the
  metadata segments' ``dead`` tables, read when the index is opened.

The global statistics are derived, not stored: the document count and total length are the
segments' counts minus the dead rows' (work in proportion to the segments and the dead rows),
and a query term's document frequency is the number of live rows in its columns, which the query
reads anyway. Nothing can drift from a fresh build. A query term's weights are then computed with
bm25s's own idf and term-frequency functions in the same dtypes as the precomputed build, and
summed in the same order, so scores equal a fresh ``bm25s`` build of the same records
(``tests/test_bm25_segments.py``). The cost moves to query time: a few numpy operations per
posting of the query's terms, which a query read already.
"""

from __future__ import annotations

import functools
import json
import logging
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from index import bm25
from ingest.records import Article

log = logging.getLogger(__name__)

_PARTS = ("pmids", "lengths", "indptr", "rows", "tfs", "vocab", "offsets")
_STATS = "json"  # the segment's counts; written last, so its presence says the segment is complete


def _path(folder: Path, number: int, part: str) -> Path:
    return folder / (f"{number:06d}.{part}" + ("" if part == _STATS else ".npy"))


def segment_files(folder: Path, number: int) -> list[Path]:
    return [_path(folder, number, part) for part in (*_PARTS, _STATS)]


def is_complete(folder: Path, number: int) -> bool:
    return _path(folder, number, _STATS).exists()


# --- writing -------------------------------------------------------------------------------------


def write_segment(folder: Path, number: int, articles: Iterable[Article], *, batch: int = bm25._BUILD_BATCH) -> None:
    """Segment ``number``'s term frequencies from ``articles`` (ascending PMIDs), memory bounded by
    ``batch`` and the segment's vocabulary (pass 1 and the CSC fill of ``index/bm25.py``)."""
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".bm25-build-", dir=folder) as tmp:
        counts = bm25._count_terms(articles, Path(tmp), batch)
        bm25._npy_from_raw(Path(tmp) / "pmids", _path(folder, number, "pmids"), np.int64, counts.n_docs)
        bm25._npy_from_raw(Path(tmp) / "lengths", _path(folder, number, "lengths"), np.int32, counts.n_docs)
        new_column = counts.sort_vocabulary() if counts.n_docs else np.zeros(0, dtype=np.int64)
        indptr = np.zeros(len(counts.vocab) + 1, dtype=np.int64)
        np.cumsum(counts.doc_freq[: len(counts.vocab)], out=indptr[1:])
        np.save(_path(folder, number, "indptr"), indptr, allow_pickle=False)
        targets = (_path(folder, number, "tfs"), _path(folder, number, "rows"))
        n_pairs = int(indptr[-1])
        for path in targets:
            if n_pairs:
                np.lib.format.open_memmap(path, mode="w+", dtype=np.int32, shape=(n_pairs,)).flush()
            else:
                np.save(path, np.zeros(0, dtype=np.int32), allow_pickle=False)
        if n_pairs:
            heads = indptr[:-1].copy()
            bm25._fill_csc(targets, Path(tmp), counts.n_docs, batch, _raw_frequency, new_column, heads)
    _save_vocabulary(folder, number, list(counts.vocab))
    stats = {"documents": counts.n_docs, "tokens": counts.total_length}
    _path(folder, number, _STATS).write_text(json.dumps(stats) + "\n", encoding="utf-8")


def _raw_frequency(term: np.ndarray, tf: np.ndarray, length: np.ndarray) -> np.ndarray:
    return tf


def _save_vocabulary(folder: Path, number: int, stems: list[str]) -> None:
    """The stems (already in sorted order) as their UTF-8 bytes end to end plus start offsets: no
    pickle, memory-mapped, and sorted by bytes as by code points, so binary search works."""
    encoded = [stem.encode("utf-8") for stem in stems]
    offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
    np.cumsum([len(e) for e in encoded], out=offsets[1:])
    blob = np.frombuffer(b"".join(encoded), dtype=np.uint8)
    np.save(_path(folder, number, "vocab"), blob, allow_pickle=False)
    np.save(_path(folder, number, "offsets"), offsets, allow_pickle=False)


def stage(staging: Path, previous: Path | None, meta_pairs: list[list]) -> list[int]:
    """The staged generation's BM25 segments, one per metadata segment of ``meta_pairs`` (its
    manifest's ``meta_segments``): hard links to ``previous``'s where it has them, built from the
    segment's own rows otherwise (this ingest's new segment, merge outputs, and every segment of an
    index from before segmented BM25, once). Returns the segment numbers built here."""
    from index.meta_segments import SegmentedStore, listed
    from index.segments import link

    folder = staging / bm25.BM25_DIR
    folder.mkdir(parents=True, exist_ok=True)
    old = previous / bm25.BM25_DIR if previous is not None else None
    built = []
    for segment in listed(meta_pairs):
        if old is not None and is_complete(old, segment.number):
            for path in segment_files(old, segment.number):
                link(path, folder / path.name)
            continue
        store = SegmentedStore(staging, [segment])  # this segment's rows alone
        try:
            write_segment(folder, segment.number, store.iter_articles())
        finally:
            store.close()
        built.append(segment.number)
    if built:
        log.info("BM25: wrote term frequencies of metadata segment(s) %s.", built)
    return built


# --- reading and scoring -------------------------------------------------------------------------


class _Vocabulary:
    """A segment's sorted stems, looked up by binary search in the memory-mapped bytes."""

    def __init__(self, blob: np.ndarray, offsets: np.ndarray) -> None:
        self.blob, self.offsets = blob, offsets

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def _stem(self, column: int) -> bytes:
        return self.blob[self.offsets[column] : self.offsets[column + 1]].tobytes()

    def column(self, stem: str) -> int:
        """The stem's column, -1 when the segment has no such stem."""
        key, low, high = stem.encode("utf-8"), 0, len(self)
        while low < high:
            middle = (low + high) // 2
            if self._stem(middle) < key:
                low = middle + 1
            else:
                high = middle
        return low if low < len(self) and self._stem(low) == key else -1


@dataclass
class _Segment:
    number: int
    start: int  # its first row in the index's row numbering (segments end to end)
    pmids: np.ndarray
    lengths: np.ndarray
    indptr: np.ndarray
    rows: np.ndarray
    tfs: np.ndarray
    vocab: _Vocabulary
    documents: int
    tokens: int

    @classmethod
    def load(cls, folder: Path, number: int, start: int) -> _Segment:
        def array(part: str) -> np.ndarray:  # mapped; a plain ndarray view slices faster than np.memmap
            return np.asarray(np.load(_path(folder, number, part), mmap_mode="r", allow_pickle=False))

        stats = json.loads(_path(folder, number, _STATS).read_text(encoding="utf-8"))
        vocab = _Vocabulary(array("vocab"), array("offsets"))
        return cls(
            number, start, array("pmids"), array("lengths"), array("indptr"), array("rows"), array("tfs"), vocab,
            int(stats["documents"]), int(stats["tokens"]),
        )  # fmt: skip

    def rows_of(self, pmids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(which of ``pmids`` are stored here, their rows in this segment)."""
        if len(self.pmids) == 0:
            return np.zeros(len(pmids), dtype=bool), np.zeros(0, dtype=np.int64)
        at = np.searchsorted(self.pmids, pmids).clip(0, len(self.pmids) - 1)
        found = np.asarray(self.pmids[at]) == pmids
        return found, at[found]

    def postings(self, stem: str) -> tuple[np.ndarray, np.ndarray]:
        """(rows within the segment, raw term frequencies) of the stem's column."""
        column = self.vocab.column(stem)
        if column < 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int32)
        first, last = int(self.indptr[column]), int(self.indptr[column + 1])
        return np.asarray(self.rows[first:last], dtype=np.int64), np.asarray(self.tfs[first:last])


class SegmentedBM25(bm25.BM25Search):
    """The BM25 scores of a generation's live articles, from its segments' term frequencies.

    Rows are the segments' rows end to end (a dead row scores 0 and is never returned); ``pmids[i]``
    is row i's PMID. Same interface as ``bm25.BM25Index``."""

    def __init__(self, segments: list[_Segment], dead: np.ndarray) -> None:
        self.segments = segments
        self._rows = sum(len(s.pmids) for s in segments)
        self.live = np.ones(self._rows, dtype=bool)
        self.documents = sum(s.documents for s in segments)
        self.total_length = sum(s.tokens for s in segments)
        dead = np.asarray(dead, dtype=np.int64).reshape(-1, 2)
        for segment in segments:
            _, rows = segment.rows_of(np.unique(dead[dead[:, 0] == segment.number, 1]))
            self.live[segment.start + rows] = False
            self.documents -= len(rows)
            self.total_length -= int(np.asarray(segment.lengths[rows], dtype=np.int64).sum())

    @classmethod
    def open(cls, folder: Path, numbers: list[int], dead: np.ndarray) -> SegmentedBM25:
        segments, start = [], 0
        for number in numbers:
            segments.append(_Segment.load(folder, number, start))
            start += len(segments[-1].pmids)
        return cls(segments, dead)

    def __len__(self) -> int:
        return self._rows

    @functools.cached_property
    def pmids(self) -> np.ndarray:
        parts = [np.asarray(s.pmids) for s in self.segments]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)

    def rows(self, pmids: np.ndarray) -> np.ndarray:
        """Row numbers of those of ``pmids`` that are indexed and live, in their order."""
        pmids = np.asarray(pmids, dtype=np.int64)
        rows = np.full(len(pmids), -1, dtype=np.int64)
        for segment in self.segments:  # a PMID may be stored in several segments, live in one at most
            found, here = segment.rows_of(pmids)
            here = segment.start + here
            alive = self.live[here]
            rows[np.flatnonzero(found)[alive]] = here[alive]
        return rows[rows >= 0]

    def live_postings(self, stem: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(rows, term frequencies, document lengths) of the live documents holding ``stem``;
        rows ascending (segments in order, rows in order within each)."""
        parts = []
        for segment in self.segments:
            rows, tfs = segment.postings(stem)
            keep = self.live[segment.start + rows]
            rows, tfs = rows[keep], tfs[keep]
            parts.append((segment.start + rows, tfs, np.asarray(segment.lengths[rows], dtype=np.int64)))
        if not parts:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int32), np.zeros(0, dtype=np.int64)
        return tuple(np.concatenate(p) for p in zip(*parts, strict=True))  # type: ignore[return-value]

    def document_frequency(self, stem: str) -> int:
        return len(self.live_postings(stem)[0])

    def weights(self, stem: str) -> tuple[np.ndarray, np.ndarray]:
        """(rows, BM25 weight) of ``stem`` in every live document holding it: bm25s's lucene idf
        and term-frequency component in the dtypes of its precomputed build, so the same float32
        values as a fresh build (``index/bm25.py``'s ``weigh``)."""
        rows, tfs, lengths = self.live_postings(stem)
        if len(rows) == 0:
            return rows, np.zeros(0, dtype=np.float32)
        idf_of, tfc_of, model = _scorers()
        average_length = np.float64(self.total_length) / self.documents
        idf = np.array([idf_of(len(rows), N=self.documents)], dtype=model.dtype)
        tfc = tfc_of(
            tf_array=tfs.astype(model.dtype), l_d=lengths, l_avg=average_length, k1=model.k1, b=model.b,
            delta=model.delta,
        )  # fmt: skip
        return rows, (idf * tfc).astype(model.dtype)

    def scores(self, query: str) -> np.ndarray:
        """The BM25 score of every row for ``query`` (zeros when it shares no indexed word, and for
        dead rows): each query term's weights added in query order, as bm25s sums its columns."""
        scores = np.zeros(len(self), dtype=np.float32)
        if not len(self) or not self.documents:
            return scores
        cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for stem in bm25.tokenize([query])[0]:
            if stem not in cache:
                cache[stem] = self.weights(stem)
            rows, weights = cache[stem]
            scores[rows] += weights  # a column's rows are distinct
        return scores

    def rows_with_all(self, stems: list[str]) -> np.ndarray | None:
        """Live rows holding every stem; None when a stem is in no live document (``index/exact.py``)."""
        if not stems:
            return None
        found: np.ndarray | None = None
        for stem in dict.fromkeys(stems):
            rows = self.live_postings(stem)[0]
            if len(rows) == 0:
                return None
            found = rows if found is None else np.intersect1d(found, rows)
        return found


@functools.cache
def _scorers():
    """bm25s's idf and term-frequency functions for our variant, and a model holding its settings."""
    model = bm25._bm25s().BM25(k1=bm25.K1, b=bm25.B)
    from bm25s import scoring

    return scoring._select_idf_scorer(model.idf_method), scoring._select_tfc_scorer(model.method), model


def open_generation(generation: Path, meta_pairs: list[list], store) -> SegmentedBM25 | None:
    """The generation's segmented BM25, or None when a segment lacks its files (an index written
    before segmented BM25). ``store``: the generation's metadata, for the dead rows."""
    from index.meta_segments import listed

    folder = generation / bm25.BM25_DIR
    numbers = [segment.number for segment in listed(meta_pairs)]
    if not all(is_complete(folder, number) for number in numbers):
        return None
    return SegmentedBM25.open(folder, numbers, store.dead_pairs())
