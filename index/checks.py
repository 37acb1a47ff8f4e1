"""Up-front checks of an index directory: before an ingest embeds anything, and for ``index stats``.

Without them a damaged index shows up late and badly: a truncated ``vectors.faiss`` only fails
after all the embedding work, a garbage ``articles.sqlite`` fails while the staging copy is made
(and leaves the staging folder behind), an ``--index-dir`` that is a file or read-only fails with
a traceback. Here each problem is one ``IndexUnusable`` line naming the path and what to do,
raised before anything is written.

What is checked, in order: the folder (not a file, writable), ``CURRENT`` (names a complete
generation), and that generation's files: ``manifest.json`` parses, ``articles.sqlite`` passes
SQLite's ``PRAGMA quick_check`` and holds the articles table, ``vectors.faiss`` (and
``ann.faiss`` when the manifest names one) load, memory-mapped, with the manifest's dimension.
Not checked: every stored vector or row against the other files (that is a full scan).
"""

from __future__ import annotations

import re
import sqlite3
import tempfile
from pathlib import Path

from index.ann import ANN_FILE
from index.manifest import Manifest
from index.storage import MANIFEST, METADATA, VECTORS, IndexDir, IndexNotFound

REBUILD = "restore it from a backup, or rebuild the index into a new --index-dir"


class IndexUnusable(ValueError):
    """The index directory cannot be written, or a file of its live generation is damaged."""


def check_for_ingest(root: Path) -> None:
    """Everything an ingest into ``root`` relies on; ``IndexUnusable`` naming the first problem."""
    root = Path(root)
    _check_folder(root)
    try:
        live = IndexDir(root).current()
    except (IndexNotFound, OSError, UnicodeDecodeError) as exc:
        raise IndexUnusable(
            f"{root / 'CURRENT'} does not name a complete generation ({exc}); write the name of an intact "
            f"gen-* folder into it (the previous generation is kept), or rebuild the index into a new --index-dir"
        ) from exc
    if live is not None:
        check_generation(live)


def check_generation(generation: Path) -> Manifest:
    """The manifest of a committed generation whose files all open; ``IndexUnusable`` otherwise."""
    manifest = _manifest(generation / MANIFEST)
    _check_metadata(generation / METADATA)
    _check_faiss(generation / VECTORS, manifest.dim, mmap=True)
    if manifest.ann:
        _check_faiss(generation / ANN_FILE, manifest.dim, mmap=False)
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
    try:
        db = sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True)
        try:
            problems = [row[0] for row in db.execute("PRAGMA quick_check")]
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        finally:
            db.close()
    except sqlite3.Error as exc:
        raise IndexUnusable(f"{path}: the metadata database cannot be read ({exc}); {REBUILD}") from exc
    if problems != ["ok"]:
        raise IndexUnusable(f"{path}: the metadata database is damaged ({_short(problems[0])}); {REBUILD}")
    if "articles" not in tables:
        raise IndexUnusable(f"{path}: the metadata database holds no articles table; {REBUILD}")


def _check_faiss(path: Path, dim: int, *, mmap: bool) -> None:
    import faiss

    try:
        index = faiss.read_index(str(path), faiss.IO_FLAG_MMAP_IFC if mmap else 0)
    except RuntimeError as exc:
        raise IndexUnusable(f"{path}: cannot be read as a FAISS index ({_faiss_problem(exc)}); {REBUILD}") from exc
    if index.d != dim:
        raise IndexUnusable(f"{path}: holds {index.d}-d vectors, but the manifest says {dim}; {REBUILD}")


def _faiss_problem(exc: RuntimeError) -> str:
    """FAISS's message without the C++ signature and source location around it."""
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    match = re.search(r"\.cpp:\d+: (?:Error: )?(.*)", text)
    return _short(match.group(1) if match else text)


def _short(problem: object, limit: int = 120) -> str:
    text = " ".join(str(problem).split())
    return text if len(text) <= limit else text[:limit] + " …"
