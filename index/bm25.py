"""BM25 over title + abstract, stored in every index generation next to the vectors.

Why lexical search at all: a question naming a drug, gene or scale ("Does intravenous
paracetamol ...") is answered by the abstract that shares those rare words, and a small sentence
encoder sometimes ranks a topically similar abstract above it. BM25 and the dense encoder make
different mistakes, so ``index/fusion.py`` combines them (figures in BENCHMARKS.md).

Built with bm25s: the BM25 weight of every (term, document) pair is precomputed into a sparse
matrix, saved as ``.npy`` arrays and JSON (loaded with ``allow_pickle=False``, memory-mapped), so
a query is a sum of a few sparse columns. Text is lower-cased, English stopwords are dropped and
words are Snowball-stemmed (PyStemmer), which is what lifted BM25 most on the dev sets.

bm25s cannot add documents to an existing matrix, and every weight depends on the whole
collection, so an ingest no longer builds this matrix: it writes raw term frequencies for its own
rows and weights them at query time (``index/bm25_segments.py``, same scores). The precomputed
build below stays as the reference those scores are tested against, for generations written
before segments, and as the streamed two-pass machinery the segments reuse (``_count_terms``,
``_fill_csc``). bm25s's own ``BM25.index`` needs every
document's tokens at once (Python lists, then flat arrays and their sorted copies): its peak
memory grew ~8-11 kB per abstract, ~200-280 GB for all of PubMed. So the build here streams the
store in two passes of ``_BUILD_BATCH`` abstracts (``BM25Index.write``): pass 1 tokenises each
batch with ``bm25s.tokenize`` and appends every document's length and (term, frequency) pairs to
temporary files, keeping only the vocabulary and document frequencies; pass 2 weights each batch
with bm25s's own idf and term-frequency functions (``bm25s.scoring``) and writes the weights
straight into their slots of the on-disk CSC arrays, the counting sort bm25s does in memory. Peak
memory is the batch plus the vocabulary (~80 MB at 33k abstracts, +230 B per further abstract,
which is the vocabulary growing; BENCHMARKS.md "BM25 build memory"); the temporary files take
about as much disk as the index. The files are those ``BM25.save`` writes, with the same scores
to the last bit. bm25s's scoring helpers are private names, hence its pinned version. Columns are
numbered in the stems' sorted order, so a rebuild of the same articles writes the same bytes.
Row i of the matrix is the i-th article in PMID order; ``pmids.npy`` maps rows back to PMIDs.

Deliberately not handled: field weights (title vs abstract), phrase queries, query syntax.
"""

from __future__ import annotations

import functools
import itertools
import json
import logging
import shutil
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ingest.records import Article

log = logging.getLogger(__name__)

BM25_DIR = "bm25"  # folder inside a generation
_PMIDS = "pmids.npy"
# Lucene's BM25 with k1 = 1.5, b = 0.75 (bm25s' defaults); on the dev sets no other (k1, b) or
# variant (BM25+, BM25L) was better on both PubMedQA and BioASQ, so the textbook values stay.
K1, B = 1.5, 0.75
_BUILD_BATCH = 2_500  # abstracts tokenised, then scored, at a time: ~20 kB each (bm25s.tokenize's lists, sorts)
# The files bm25s.BM25.save writes and BM25.load reads (its default names).
_DATA, _INDICES, _INDPTR = "data.csc.index.npy", "indices.csc.index.npy", "indptr.csc.index.npy"
_VOCAB, _PARAMS = "vocab.index.json", "params.index.json"


class BM25Unavailable(RuntimeError):
    pass


def _bm25s():
    try:
        import bm25s
    except ImportError as exc:  # pragma: no cover - bm25s is a runtime requirement
        raise BM25Unavailable("BM25 search needs bm25s and PyStemmer: pip install bm25s PyStemmer") from exc
    logging.getLogger("bm25s").setLevel(logging.WARNING)  # bm25s turns on DEBUG logging on import
    return bm25s


@functools.cache
def _stemmer():
    try:
        import Stemmer
    except ImportError as exc:  # pragma: no cover
        raise BM25Unavailable("BM25 stemming needs PyStemmer: pip install PyStemmer") from exc
    return Stemmer.Stemmer("english")


def tokenize(texts: Sequence[str]) -> list[list[str]]:
    """Lower-cased, stopword-free, stemmed word tokens: the same for abstracts and queries."""
    return _bm25s().tokenize(list(texts), stopwords="en", stemmer=_stemmer(), return_ids=False, show_progress=False)


class BM25Search:
    """Top-k search over ``scores``, shared by the precomputed matrix here and the segmented index
    (``index/bm25_segments.py``): subclasses give ``scores``, ``rows``, ``pmids``, ``documents`` (live
    articles) and ``document_frequency``."""

    pmids: np.ndarray
    documents: int

    def scores(self, query: str) -> np.ndarray:
        raise NotImplementedError

    def document_frequency(self, stem: str) -> int:
        """Live articles holding ``stem`` (a token of ``tokenize``), without scoring every article."""
        raise NotImplementedError

    def rows(self, pmids: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def search(
        self, query: str, k: int, *, allowed: np.ndarray | None = None, scores: np.ndarray | None = None
    ) -> list[tuple[int, float]]:
        """(PMID, score) of the ``k`` best-scoring articles with a positive score, best first;
        ``allowed`` (PMIDs) restricts the candidates, as a filter does; ``scores``: this query's
        ``scores(query)``, when the caller already has them."""
        scores = self.scores(query) if scores is None else scores
        if allowed is not None:
            mask = np.zeros(len(scores), dtype=bool)
            mask[self.rows(allowed)] = True
            scores = np.where(mask, scores, 0.0)
        k = min(k, int(np.count_nonzero(scores > 0)))
        if k <= 0:
            return []
        kth = np.partition(scores, len(scores) - k)[len(scores) - k]  # the k-th best score
        top = np.flatnonzero(scores >= kth)  # every row tied with it too, so that the choice among
        top = top[np.lexsort((self.pmids[top], -scores[top]))][:k]  # ties is by PMID (lower first), not row order
        return [(int(self.pmids[i]), float(scores[i])) for i in top]


class BM25Index(BM25Search):
    """Scores every article for a query; ``pmids[i]`` is the PMID of row ``i`` (ascending).

    bm25s's precomputed weight matrix: what generations before segmented BM25 hold, and the
    reference a segmented index is tested against (a fresh build of the same records)."""

    def __init__(self, model, pmids: np.ndarray) -> None:
        self.model = model
        self.pmids = np.asarray(pmids, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.pmids)

    @property
    def documents(self) -> int:
        return len(self.pmids)

    def document_frequency(self, stem: str) -> int:
        column = self.model.vocab_dict.get(stem) if len(self) else None
        if column is None:
            return 0
        indptr = self.model.scores["indptr"]
        return int(indptr[column + 1] - indptr[column])

    @classmethod
    def build(cls, articles: Iterable[Article]) -> BM25Index:
        """Index ``articles`` (ascending PMID order, as the metadata store yields them) in memory:
        written to a temporary folder by ``write``, then read back whole (small collections, tests,
        generations built before BM25 existed)."""
        with tempfile.TemporaryDirectory(prefix="bm25-") as tmp:
            cls.write(Path(tmp), articles)
            return cls.load(Path(tmp), mmap=False)

    @classmethod
    def write(cls, folder: Path, articles: Iterable[Article], *, batch: int = _BUILD_BATCH) -> BM25Index:
        """Index ``articles`` (ascending PMID order) straight into ``folder`` with memory bounded by
        ``batch`` and the vocabulary, not by the collection; the result, memory-mapped."""
        _write_files(folder, articles, batch)
        return cls.load(folder)

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        np.save(folder / _PMIDS, self.pmids, allow_pickle=False)
        if len(self):
            self.model.save(str(folder), allow_pickle=False)

    @classmethod
    def load(cls, folder: Path, *, mmap: bool = True) -> BM25Index:
        pmids = np.load(folder / _PMIDS, allow_pickle=False)
        bm25s = _bm25s()
        if len(pmids) == 0:
            return cls(bm25s.BM25(k1=K1, b=B), pmids)
        model = bm25s.BM25.load(str(folder), mmap=mmap, allow_pickle=False, show_progress=False)
        return cls(model, pmids)

    def scores(self, query: str) -> np.ndarray:
        """The BM25 score of every row for ``query`` (zeros when it shares no indexed word)."""
        if not len(self):
            return np.zeros(0, dtype=np.float32)
        ids = self.model.get_tokens_ids(tokenize([query])[0])
        if not ids:
            return np.zeros(len(self), dtype=np.float32)
        return np.asarray(self.model.get_scores_from_ids(ids), dtype=np.float32)

    def rows(self, pmids: np.ndarray) -> np.ndarray:
        """Row numbers of those of ``pmids`` that are indexed."""
        pmids = np.asarray(pmids, dtype=np.int64)
        at = np.searchsorted(self.pmids, pmids).clip(0, max(len(self) - 1, 0))
        return at[self.pmids[at] == pmids] if len(self) else at[:0]

    def rows_with_all(self, stems: list[str]) -> np.ndarray | None:
        """Rows holding every stem (a stem's column lists them); None when a stem is unknown."""
        if not stems or not len(self):
            return None
        vocab = self.model.vocab_dict
        indptr, indices = self.model.scores["indptr"], self.model.scores["indices"]
        rows: np.ndarray | None = None
        for stem in dict.fromkeys(stems):
            if stem not in vocab:
                return None
            column = np.asarray(indices[indptr[vocab[stem]] : indptr[vocab[stem] + 1]], dtype=np.int64)
            rows = column if rows is None else np.intersect1d(rows, column)
        return rows


def build_for_generation(generation: Path) -> BM25Index:
    """A fresh bm25s build of the generation's whole store, saved in its ``bm25/``: the reference
    that segmented BM25 is checked against, and the full rebuild that ingests did before it."""
    store = _open_store(generation)
    try:
        return BM25Index.write(generation / BM25_DIR, store.iter_articles())
    finally:
        store.close()


def open_for_generation(generation: Path) -> BM25Search:
    """The generation's BM25 index: its segments' term frequencies (``index/bm25_segments.py``),
    else the precomputed matrix of a generation written before them; one built before BM25
    existed is built in memory (with a notice)."""
    from index.bm25_segments import open_generation

    folder = generation / BM25_DIR
    if folder.is_dir():
        store = _open_store(generation)
        try:
            segmented = open_generation(generation, _meta_pairs(generation), store)
        finally:
            store.close()
        if segmented is not None:
            return segmented
    if (folder / _PMIDS).exists():
        return BM25Index.load(folder)
    log.warning("%s has no BM25 index (built by an older version); building it in memory.", generation)
    return _build_from_store(generation)


def _build_from_store(generation: Path) -> BM25Index:
    store = _open_store(generation)
    try:
        return BM25Index.build(store.iter_articles())
    finally:
        store.close()


def _meta_pairs(generation: Path) -> list[list]:
    from index.manifest import Manifest
    from index.storage import MANIFEST

    return Manifest.load(generation / MANIFEST).meta_segments


def _open_store(generation: Path):
    from index.meta_segments import open_store

    return open_store(generation, _meta_pairs(generation))


# The two-pass build. bm25s.BM25.index needs every document's tokens at once (Python lists, then
# three flat arrays and their sorted copies), so its memory grows with the collection. The glue
# below is what bm25s lacks: streaming the corpus. Tokenising (bm25s.tokenize), idf and
# term-frequency weights (bm25s.scoring) and the files (BM25.load reads them) stay bm25s's own.


def _write_files(folder: Path, articles: Iterable[Article], batch: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".bm25-build-", dir=folder) as tmp:  # gone before derived.py's fsync
        counts = _count_terms(articles, Path(tmp), batch)
        _npy_from_raw(Path(tmp) / "pmids", folder / _PMIDS, np.int64, counts.n_docs)
        if counts.n_docs:
            _score_into_csc(folder, Path(tmp), counts, batch)
            _write_vocab_and_params(folder, counts)


@dataclass
class _TermCounts:
    """What pass 1 keeps in memory: the vocabulary and per-term counts, nothing per document."""

    vocab: dict[str, int] = field(default_factory=dict)  # stem -> column, as bm25s's vocab_dict
    doc_freq: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # [:len(vocab)] used
    n_docs: int = 0
    total_length: int = 0  # tokens in all documents, for the average document length

    def columns(self, batch_vocab: dict[str, int]) -> np.ndarray:
        """Global column of each of a batch's token ids; new stems get the next columns."""
        for stem in batch_vocab.keys() - self.vocab.keys():
            self.vocab[stem] = len(self.vocab)
        to_column = np.zeros(len(batch_vocab), dtype=np.int64)
        to_column[list(batch_vocab.values())] = [self.vocab[stem] for stem in batch_vocab]
        return to_column

    def count_documents(self, term: np.ndarray) -> None:
        """Add a batch's distinct (document, term) pairs to the document frequencies; work and
        memory in proportion to the batch, not the vocabulary (the array grows by doubling)."""
        if len(self.doc_freq) < len(self.vocab):
            grown = np.zeros(max(len(self.vocab), 2 * len(self.doc_freq)), dtype=np.int64)
            grown[: len(self.doc_freq)] = self.doc_freq
            self.doc_freq = grown
        seen, n_docs = np.unique(term, return_counts=True)
        self.doc_freq[seen] += n_docs

    def sort_vocabulary(self) -> np.ndarray:
        """Renumber the columns in the stems' sorted order, so that the files depend on the
        articles only (not on the batch size or hash seed); the new column of each old one."""
        stems = sorted(self.vocab)
        new_column = np.zeros(len(stems), dtype=np.int64)
        new_column[[self.vocab[stem] for stem in stems]] = np.arange(len(stems))
        self.vocab = dict(zip(stems, range(len(stems)), strict=True))  # in column order, as it is saved
        doc_freq = np.zeros(len(stems), dtype=np.int64)
        doc_freq[new_column] = self.doc_freq[: len(stems)]
        self.doc_freq = doc_freq
        return new_column


def _count_terms(articles: Iterable[Article], tmp: Path, batch: int) -> _TermCounts:
    """Pass 1: tokenise ``batch`` articles at a time; append every document's length, its distinct
    terms and their frequencies to files in ``tmp``; keep only the vocabulary and document
    frequencies."""
    bm25s, counts = _bm25s(), _TermCounts()
    names = ("pmids", "lengths", "pairs", "terms", "tfs")
    files = {name: open(tmp / name, "wb") for name in names}  # noqa: SIM115 - closed below
    try:
        articles = iter(articles)
        while chunk := list(itertools.islice(articles, batch)):
            ids, batch_vocab = bm25s.tokenize(
                [a.text for a in chunk], stopwords="en", stemmer=_stemmer(), return_ids=True, show_progress=False
            )
            lengths = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
            tokens = np.fromiter(itertools.chain.from_iterable(ids), dtype=np.int64, count=int(lengths.sum()))
            tokens = counts.columns(batch_vocab)[tokens]
            width = max(len(counts.vocab), 1)
            doc = np.repeat(np.arange(len(ids), dtype=np.int64), lengths)
            pair, tf = np.unique(doc * width + tokens, return_counts=True)  # distinct (doc, term), doc-major
            pair_doc, term = np.divmod(pair, width)
            counts.count_documents(term)
            counts.n_docs += len(ids)
            counts.total_length += int(lengths.sum())
            np.array([int(a.pmid) for a in chunk], dtype=np.int64).tofile(files["pmids"])
            lengths.astype(np.int32).tofile(files["lengths"])
            np.bincount(pair_doc, minlength=len(ids)).astype(np.int32).tofile(files["pairs"])
            term.astype(np.int32).tofile(files["terms"])
            tf.astype(np.int32).tofile(files["tfs"])
    finally:
        for handle in files.values():
            handle.close()
    return counts


def _score_into_csc(folder: Path, tmp: Path, counts: _TermCounts, batch: int) -> None:
    """Pass 2: the BM25 weight of every (document, term) pair, ``batch`` documents at a time, put
    straight into its slot of the CSC arrays on disk. bm25s's own CSC builder is a counting sort
    (``bm25s.scoring._np_csc_jit_ready``); this is the same sort spread over batches: column t's
    slots start at the sum of the document frequencies before it, and rows arrive in order."""
    bm25s = _bm25s()
    from bm25s import scoring

    model = bm25s.BM25(k1=K1, b=B)
    if model.method in model.methods_requiring_nonoccurrence:  # pragma: no cover - not our variant
        raise NotImplementedError(f"streaming build of BM25 variant {model.method}")
    new_column = counts.sort_vocabulary()
    average_length = np.float64(counts.total_length) / counts.n_docs  # bm25s's np.mean of the lengths, bit for bit
    idf = _idf(counts.doc_freq, counts.n_docs, scoring._select_idf_scorer(model.idf_method), model.dtype)
    term_weight = scoring._select_tfc_scorer(model.method)

    def weigh(term: np.ndarray, tf: np.ndarray, length: np.ndarray) -> np.ndarray:
        """As bm25s: idf_array[terms] * tfc(tf as dtype, len(doc), mean length), stored as dtype."""
        tf = tf.astype(model.dtype)
        tfc = term_weight(tf_array=tf, l_d=length, l_avg=average_length, k1=model.k1, b=model.b, delta=model.delta)
        return (idf[term] * tfc).astype(model.dtype)

    indptr = np.zeros(len(counts.doc_freq) + 1, dtype=np.int64)
    np.cumsum(counts.doc_freq, out=indptr[1:])
    np.save(folder / _INDPTR, indptr, allow_pickle=False)
    n_pairs = int(indptr[-1])
    for name, dtype in ((_DATA, model.dtype), (_INDICES, model.int_dtype)):
        if n_pairs:  # sparse files of the final size, filled below
            np.lib.format.open_memmap(folder / name, mode="w+", dtype=dtype, shape=(n_pairs,)).flush()
        else:  # no document has a word: nothing to map or fill
            np.save(folder / name, np.zeros(0, dtype=dtype), allow_pickle=False)
    if n_pairs:
        targets = (folder / _DATA, folder / _INDICES)
        _fill_csc(targets, tmp, counts.n_docs, batch, weigh, new_column, heads=indptr[:-1].copy())


def _fill_csc(
    targets: tuple[Path, Path],
    tmp: Path,
    n_docs: int,
    batch: int,
    weigh: Callable,
    new_column: np.ndarray,
    heads: np.ndarray,
) -> None:
    """Read pass 1's files back ``batch`` documents at a time and place their weights (or, for a
    segment of ``index/bm25_segments.py``, whatever ``weigh`` returns: the raw frequencies) and rows
    in the ``targets`` (values, rows) files."""
    names = ("lengths", "pairs", "terms", "tfs")
    files = {name: open(tmp / name, "rb") for name in names}  # noqa: SIM115 - closed below
    try:
        for first in range(0, n_docs, batch):
            size = min(batch, n_docs - first)
            lengths = np.fromfile(files["lengths"], dtype=np.int32, count=size).astype(np.int64)
            pairs = np.fromfile(files["pairs"], dtype=np.int32, count=size).astype(np.int64)
            n_pairs = int(pairs.sum())
            term = new_column[np.fromfile(files["terms"], dtype=np.int32, count=n_pairs)]
            tf = np.fromfile(files["tfs"], dtype=np.int32, count=n_pairs)
            row = np.repeat(np.arange(first, first + size, dtype=np.int64), pairs)
            _place(targets, heads, term, row, weigh(term, tf, np.repeat(lengths, pairs)))
    finally:
        for handle in files.values():
            handle.close()


def _idf(doc_freq: np.ndarray, n_docs: int, idf_of: Callable, dtype: str) -> np.ndarray:
    """bm25s's idf of every term, its function called once per distinct document frequency."""
    values, inverse = np.unique(doc_freq, return_inverse=True)
    return np.array([idf_of(int(df), N=n_docs) for df in values], dtype=dtype)[inverse]


def _place(
    targets: tuple[Path, Path], heads: np.ndarray, term: np.ndarray, row: np.ndarray, weight: np.ndarray
) -> None:
    """Write one batch's weights and rows into their columns' next slots (rows stay ascending)."""
    order = np.argsort(term, kind="stable")
    term = term[order]
    slot = heads[term] + np.arange(len(term)) - np.searchsorted(term, term)  # + rank within the column
    for path, values in zip(targets, (weight, row), strict=True):
        # Mapped per batch, unmapped after: the written pages leave this process for the page
        # cache, which the kernel writes back (no msync per batch; derived.py fsyncs the files).
        array = np.lib.format.open_memmap(path, mode="r+")
        array[slot] = values[order]
        del array
    seen, n_rows = np.unique(term, return_counts=True)
    heads[seen] += n_rows


def _write_vocab_and_params(folder: Path, counts: _TermCounts) -> None:
    """``vocab.index.json`` and ``params.index.json`` as ``bm25s.BM25.save`` writes them."""
    bm25s = _bm25s()
    from bm25s.utils import json_functions

    model = bm25s.BM25(k1=K1, b=B)
    vocab = counts.vocab
    if "" not in vocab:  # bm25s's create_empty_token
        vocab[""] = len(vocab)
    (folder / _VOCAB).write_text(json_functions.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    params = {
        "k1": model.k1,
        "b": model.b,
        "delta": model.delta,
        "method": model.method,
        "idf_method": model.idf_method,
        "dtype": model.dtype,
        "int_dtype": model.int_dtype,
        "num_docs": counts.n_docs,
        "version": bm25s.__version__,
        "backend": model.backend,
    }
    (folder / _PARAMS).write_text(json.dumps(params, indent=4))


def _npy_from_raw(raw: Path, npy: Path, dtype: type, count: int) -> None:
    """A ``.npy`` file holding the ``count`` values of a raw file, copied without loading them."""
    with open(npy, "wb") as out, open(raw, "rb") as values:
        header = {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False, "shape": (count,)}
        np.lib.format.write_array_header_1_0(out, header)
        shutil.copyfileobj(values, out)
