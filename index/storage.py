"""Atomic index generations.

An index directory holds numbered generations (``gen-000001/`` ...) and a ``CURRENT`` file
naming the live one. A write builds a complete new generation in a staging folder, then
renames it into place and swaps ``CURRENT`` with ``os.replace`` (atomic on POSIX). A crash at
any point leaves ``CURRENT`` pointing at the previous, intact generation; readers that opened
the old generation keep working until they reopen.

Crash recovery happens at the start of the next write (``begin``): staging folders of dead
runs are removed, except that the newest one's embedding cache (``RESUME_CACHE``) moves into the
new staging folder so that the same ingest resumes instead of re-encoding; a generation folder
that was renamed into place but never made ``CURRENT`` (a crash between the two steps) is
removed, as are half-written ``CURRENT`` replacements.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

MANIFEST = "manifest.json"
METADATA = "articles.sqlite"
VECTORS = "vectors.faiss"
RESUME_CACHE = "embeddings.sqlite"  # see index/vector_cache.py; never part of a committed generation
_KEEP_OLD = 1  # previous generations kept for readers still using them


class IndexNotFound(FileNotFoundError):
    pass


class IndexBusy(RuntimeError):
    pass


class IndexDir:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def current(self) -> Path | None:
        """The live generation folder, or None for a new index."""
        pointer = self.root / "CURRENT"
        if not pointer.exists():
            return None
        generation = self.root / pointer.read_text(encoding="utf-8").strip()
        if not (generation / MANIFEST).exists():
            raise IndexNotFound(f"{self.root}: CURRENT names {generation.name}, which is incomplete")
        return generation

    def require_current(self) -> Path:
        generation = self.current()
        if generation is None:
            raise IndexNotFound(
                f"no index in {self.root}; build one with: python -m ingest SOURCE --index-dir {self.root}"
            )
        return generation

    @contextmanager
    def write_lock(self) -> Iterator[None]:
        """One writer at a time; a second ingest fails at once instead of racing."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "w") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError as exc:
                raise IndexBusy(f"{self.root} is being written by another ingest; wait for it to finish") from exc
            yield

    def begin(self) -> Path:
        """A fresh staging folder (the writer links the live segments into it: nothing is copied)."""
        self.root.mkdir(parents=True, exist_ok=True)
        staging = self.root / f".staging-{uuid.uuid4().hex[:8]}"
        staging.mkdir()
        self._adopt_resume_cache(staging)
        self._remove_stale_staging(keep=staging)
        self._remove_orphans()
        return staging

    def commit(self, staging: Path) -> Path:
        """Make ``staging`` the live generation."""
        for path in _written_here(staging):  # hard links to the live generation's files are durable already
            _fsync(path)
        (staging / RESUME_CACHE).unlink(missing_ok=True)  # last: a crash before here can still resume
        live = self.current()
        number = int(live.name.split("-")[1]) + 1 if live else 1
        generation = self.root / f"gen-{number:06d}"
        shutil.rmtree(generation, ignore_errors=True)  # an orphan of a crash, never live
        os.rename(staging, generation)
        pointer_tmp = self.root / f".CURRENT-{uuid.uuid4().hex[:8]}"
        pointer_tmp.write_text(generation.name + "\n", encoding="utf-8")
        _fsync(pointer_tmp)
        os.replace(pointer_tmp, self.root / "CURRENT")
        self._remove_old_generations(keep=number)
        return generation

    def abort(self, staging: Path) -> None:
        shutil.rmtree(staging, ignore_errors=True)

    def _adopt_resume_cache(self, staging: Path) -> None:
        """Move the newest dead run's embedding cache (and its journal) into ``staging``."""
        stale = [p for p in self.root.glob(".staging-*") if p != staging and (p / RESUME_CACHE).exists()]
        if not stale:
            return
        newest = max(stale, key=lambda p: (p / RESUME_CACHE).stat().st_mtime)
        for suffix in ("", "-journal"):  # a hot journal must travel with its database to roll back
            if (newest / (RESUME_CACHE + suffix)).exists():
                os.rename(newest / (RESUME_CACHE + suffix), staging / (RESUME_CACHE + suffix))

    def _remove_stale_staging(self, keep: Path) -> None:
        for leftover in self.root.glob(".staging-*"):
            if leftover != keep:
                shutil.rmtree(leftover, ignore_errors=True)

    def _remove_orphans(self) -> None:
        """Generations newer than ``CURRENT`` and pointer files that a crash left half-done."""
        live = self.current()
        number = int(live.name.split("-")[1]) if live else 0
        for generation in self.root.glob("gen-*"):
            if int(generation.name.split("-")[1]) > number:
                shutil.rmtree(generation, ignore_errors=True)
        for pointer in self.root.glob(".CURRENT-*"):
            pointer.unlink(missing_ok=True)

    def _remove_old_generations(self, keep: int) -> None:
        for old in self.root.glob("gen-*"):
            if int(old.name.split("-")[1]) < keep - _KEEP_OLD:
                shutil.rmtree(old, ignore_errors=True)


def _written_here(staging: Path) -> list[Path]:
    """The staged generation's own files (not links to an older generation's, nor the cache)."""
    names = {RESUME_CACHE, RESUME_CACHE + "-journal"}
    return sorted(p for p in staging.iterdir() if p.is_file() and p.stat().st_nlink == 1 and p.name not in names)


def _fsync(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())
