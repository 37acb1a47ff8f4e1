"""Up-front checks of an index directory: before an ingest embeds anything, and before a search.

Without them a damaged index shows up late and badly: a truncated vector segment only fails after
all the embedding work, a garbage metadata segment fails while the staging folder is prepared (and
leaves it behind), an ``--index-dir`` that is a file or read-only fails with a traceback. Here each
problem is one ``IndexUnusable`` line naming the path and what to do, raised before anything is
written or embedded; ``open_index`` (the app, ``python -m index search|stats``, ``python -m chatbot``)
runs the same checks.

What is checked, in order: the folder (not a file, writable: ingest only), ``CURRENT`` (names a
complete generation), then that generation's files as its manifest lists them (the segment layout
of ``index/segments.py`` and ``index/meta_segments.py``):

- ``manifest.json`` parses, and names only valid segment files;
- each metadata segment (``articles.sqlite``, ``articles-NNNNNN.sqlite``) opens as SQLite (a
  truncated file fails: SQLite compares its header's page count with the file) and holds the
  ``articles`` table;
- each vector segment (``vectors.faiss``, ``vectors-NNNNNN.faiss``) has a FAISS header with the
  manifest's dimension, as many vectors as its ``.ids.npy`` lists, and a file long enough to hold
  them; the ``.ids.npy`` files and ``tombstones.npy`` load as plain arrays;
- the approximate index files the manifest names exist (IVF-PQ ones also open, memory-mapped).

Each check reads headers only: its cost does not grow with the collection (PubMed's metadata is
tens of GB). Not checked: every page, vector or row (SQLite's ``quick_check`` is a full read), and
the derived BM25 folder.
"""

from __future__ import annotations

import re
import sqlite3
import struct
import tempfile
from pathlib import Path

import numpy as np

from index import meta_segments
from index.ann import ANN_FILE
from index.manifest import Manifest
from index.segments import FIRST, TOMBSTONES, ids_file
from index.storage import MANIFEST, IndexDir, IndexNotFound

REBUILD = "restore it from a backup, or rebuild the index into a new --index-dir"
_IDMAP2 = b"IxM2"  # FAISS's fourcc of IndexIDMap2, the type of every vector segment (index/vectors.py)
_HEADER = struct.Struct("<4siq")  # fourcc, dimension, number of vectors


class IndexUnusable(ValueError):
    """The index directory cannot be written, or a file of its live generation is damaged."""


def check_for_ingest(root: Path) -> None:
    """Everything an ingest into ``root`` relies on; ``IndexUnusable`` naming the first problem."""
    root = Path(root)
    _check_folder(root)
    live = live_generation(root)
    if live is not None:
        check_generation(live)


def check_index(root: Path) -> None:
    """What a reader of ``root`` relies on; a missing index is left to ``IndexNotFound`` downstream."""
    live = live_generation(Path(root))
    if live is not None:
        check_generation(live)


def live_generation(root: Path) -> Path | None:
    """The generation ``CURRENT`` names (None: no index yet); ``IndexUnusable`` when it names none."""
    try:
        return IndexDir(root).current()
    except (IndexNotFound, OSError, UnicodeDecodeError) as exc:
        raise IndexUnusable(
            f"{root / 'CURRENT'} does not name a complete generation ({exc}); write the name of an intact "
            f"gen-* folder into it (the previous generation is kept), or rebuild the index into a new --index-dir"
        ) from exc


def check_generation(generation: Path) -> Manifest:
    """The manifest of a committed generation whose files all open; ``IndexUnusable`` otherwise."""
    manifest = _manifest(generation / MANIFEST)
    try:
        metadata = meta_segments.listed(manifest.meta_segments)
    except ValueError as exc:
        raise IndexUnusable(f"{generation / MANIFEST}: {exc}") from exc
    for segment in metadata:
        _check_metadata(generation / segment.name)
    names = manifest.segments or ([FIRST] if (generation / FIRST).exists() else [])
    for name in names:
        if not re.fullmatch(r"vectors(-\d{6})?\.faiss", name):  # never a path: a manifest may be downloaded
            raise IndexUnusable(f"{generation / MANIFEST}: names {name!r} as a vector segment; {REBUILD}")
        _check_segment(generation / name, manifest.dim)
    if (generation / TOMBSTONES).exists():
        _load_array(generation / TOMBSTONES)
    _check_ann(generation, manifest, names)
    return manifest


def _check_folder(root: Path) -> None:
    existing = next(p for p in (root, *root.parents) if p.exists())  # "/" always exists
    if not existing.is_dir():
        where = "" if existing == root else f" ({existing} is a file)"
        raise IndexUnusable(f"{root}: not a folder{where}; give --index-dir a folder, new or holding an index")
    try:
        with tempfile.TemporaryFile(dir=existing):  # unnamed on Linux: nothing to leave behind
            pass
    except OSError as exc:
        raise IndexUnusable(
            f"{existing}: cannot write there ({exc.strerror}); give --index-dir a folder you can write to, "
            "or fix its permissions"
        ) from exc


def _manifest(path: Path) -> Manifest:
    try:
        return Manifest.load(path)
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise IndexUnusable(f"{path}: not a readable index manifest ({_short(exc)}); {REBUILD}") from exc


def _check_metadata(path: Path) -> None:
    """Opens, reads its schema and one row: a garbage or truncated file fails here, in O(1)."""
    _require(path, "metadata segment")
    try:
        db = sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True)
        try:
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if "articles" in tables:
                db.execute("SELECT pmid, title FROM articles LIMIT 1").fetchall()
        finally:
            db.close()
    except sqlite3.Error as exc:
        raise IndexUnusable(f"{path}: the metadata database cannot be read ({exc}); {REBUILD}") from exc
    if "articles" not in tables:
        raise IndexUnusable(f"{path}: the metadata database holds no articles table; {REBUILD}")


def _check_segment(path: Path, dim: int) -> None:
    """A vector segment's header, length and id file, without reading its vectors or id map."""
    _require(path, "vector segment")
    with open(path, "rb") as handle:
        head = handle.read(_HEADER.size)
    if len(head) < _HEADER.size or head[:4] != _IDMAP2:
        raise IndexUnusable(f"{path}: not a FAISS vector segment (no IndexIDMap2 header); {REBUILD}")
    _, found_dim, count = _HEADER.unpack(head)
    if found_dim != dim:
        raise IndexUnusable(f"{path}: holds {found_dim}-d vectors, but the manifest says {dim}; {REBUILD}")
    needed = count * (4 * dim + 8)  # float32 vectors, then one int64 PMID each
    if count < 0 or path.stat().st_size < needed:
        raise IndexUnusable(
            f"{path}: truncated ({path.stat().st_size:,} bytes; {count:,} vectors need {needed:,}); {REBUILD}"
        )
    ids_path = path.with_name(ids_file(path.name))
    if ids_path.exists():
        ids = _load_array(ids_path)
        if ids.ndim != 1 or len(ids) != count:
            raise IndexUnusable(f"{ids_path}: lists {ids.size:,} PMIDs for {count:,} vectors in {path.name}; {REBUILD}")


def _load_array(path: Path) -> np.ndarray:
    """A ``.npy`` file of PMIDs, memory-mapped (its header is read, not its data); never a pickle."""
    try:
        values = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise IndexUnusable(f"{path}: not a readable array of PMIDs ({_short(exc)}); {REBUILD}") from exc
    if values.dtype != np.int64:
        raise IndexUnusable(f"{path}: holds {values.dtype} values, not PMIDs; {REBUILD}")
    return values


def _check_ann(generation: Path, manifest: Manifest, segments: list[str]) -> None:
    """The approximate index's files exist; IVF-PQ ones open memory-mapped (HNSW loads whole: left to
    the search, which rebuilds nothing)."""
    from index.ann_segments import TEMPLATE, ann_file

    if not manifest.ann:
        return
    if manifest.ann == "ivfpq" and (generation / TEMPLATE).exists():
        files = [TEMPLATE, *(ann_file(name) for name in segments)]
    else:
        files = [ANN_FILE] if (generation / ANN_FILE).exists() else []  # none: the flat vectors are searched
    for name in files:
        _require(generation / name, "approximate index file")
        if manifest.ann == "ivfpq":
            _read_faiss(generation / name)


def _read_faiss(path: Path) -> None:
    import faiss

    try:
        faiss.read_index(str(path), faiss.IO_FLAG_MMAP)
    except RuntimeError as exc:
        raise IndexUnusable(f"{path}: cannot be read as a FAISS index ({_faiss_problem(exc)}); {REBUILD}") from exc


def _require(path: Path, what: str) -> None:
    if not path.is_file():
        raise IndexUnusable(f"{path}: the manifest lists this {what}, but it is missing; {REBUILD}")


def _faiss_problem(exc: RuntimeError) -> str:
    """FAISS's message without the C++ signature and source location around it."""
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    match = re.search(r"\.cpp:\d+: (?:Error: )?(.*)", text)
    return _short(match.group(1) if match else text)


def _short(problem: object, limit: int = 120) -> str:
    text = " ".join(str(problem).split())
    return text if len(text) <= limit else text[:limit] + " …"
