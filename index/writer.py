"""Apply ingestion events to an index, all or nothing, embedding while reading.

Events are applied in order to a staged copy of the metadata. Every text that differs from the
indexed one goes to a background encoder as soon as it is read (``index/embedder.py``); its
vector lands in a resume cache inside the staging folder. When all sources are read, the rows
whose text changed get their vectors from the cache, written as one new vector segment next to
hard links of the live ones (``index/segments.py``: the vectors that went are tombstoned, not
rewritten), and the new generation is committed atomically.

Failure semantics (issue #3, kept): if any source cannot be read, or a record is malformed under
``strict``, the remaining sources are still read so that every problem is reported at once, then
nothing is committed, the staging folder is deleted, and the index directory is exactly as it
was. Committing only the good files is deliberately not offered: update files must apply in
order, and skipping one would let an older record win over a newer one later. A process killed
outright (``kill -9``, power loss) leaves its staging folder behind; the next run adopts the
embeddings it had computed, so repeating the command finishes the work without re-encoding it.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from config import Config
from index import meta_segments
from index.ann import VectorChanges
from index.checks import check_for_ingest
from index.derived import finish_generation
from index.embedder import BackgroundEmbedder
from index.encoder import Encoder
from index.encoding import check_same_encoder, encoder_identity, load_for_ingest
from index.manifest import Manifest, SourceFile
from index.segments import SegmentWrite, write_segments
from index.storage import MANIFEST, RESUME_CACHE, IndexDir
from index.store import MetadataStore
from index.vector_cache import VectorCache
from ingest.records import Article, Deletion, Event, IngestFailed, IngestSummary, Skipped, SourceError

log = logging.getLogger(__name__)

EventReader = Callable[[Path], Iterable[Event]]
_WINDOW_BATCHES = 8  # texts per encoder call = batch_size * this: enough to sort by length, small to resume


def ingest_files(
    paths: list[Path],
    config: Config,
    *,
    read: EventReader,
    encoder: Encoder | None = None,
    progress: bool = True,
    strict: bool = False,
) -> IngestSummary:
    """Ingest ``paths`` (already checked) into ``config.index_dir`` and commit a new generation.

    ``strict`` turns a malformed record from a warning into a failure of its source. Raises
    ``IngestFailed`` (a ``SourceError``) listing every source that could not be read.
    """
    check_for_ingest(config.index_dir)  # a damaged index fails here, before any embedding (index/checks.py)
    layout = IndexDir(config.index_dir)
    summary = IngestSummary()
    with layout.write_lock():
        live = layout.current()
        manifest = Manifest.load(live / MANIFEST) if live else None
        if encoder is not None:
            check_same_encoder(manifest, encoder, config.index_dir)
        new_files = _files_to_ingest(paths, manifest)
        if not new_files:
            log.info("Nothing to do: every source is already in the index (same checksum).")
            return summary
        staging = layout.begin()
        number = manifest.meta_next if manifest else 0  # the metadata segment this ingest writes
        store = meta_segments.stage(staging, live, manifest.meta_segments if manifest else [], number)
        cache = VectorCache(staging / RESUME_CACHE, encoder_identity(encoder, manifest, config))
        embedder = BackgroundEmbedder(
            lambda: load_for_ingest(encoder, manifest, config),
            cache,
            window=config.batch_size * _WINDOW_BATCHES,
            progress=progress,
        )
        try:
            reading = _Reading(store, embedder, summary, strict, progress)
            files = [f for path, sha in new_files if (f := reading.read(path, sha, read)) is not None]
            if reading.errors:
                summary.failed = len(reading.errors)
                raise IngestFailed(reading.errors, summary)
            if not files:  # no source had a usable record: a new generation would change nothing
                log.warning("No usable record in %s: nothing changed, nothing was committed", _names(new_files))
                embedder.abort()
                cache.close()
                store.close()
                layout.abort(staging)
                return summary
            for name, count in store.changes().items():
                setattr(summary, name, count)
            manifest = _finish(store, embedder, manifest, summary)
            changes, written = _write_generation(staging, store, manifest, files, cache, live, reading.removed, summary)
            finish_generation(staging, config, new=live is None, previous=live, changes=changes, written=written)
            layout.commit(staging)
        except KeyboardInterrupt:
            embedder.abort()  # keep the staging folder: the same command resumes from its cache
            raise
        except BaseException:
            embedder.abort()
            cache.close()
            layout.abort(staging)
            raise
    summary.sources = [str(path) for path, _ in new_files]
    return summary


class _Reading:
    """Applies the events of one source after another, collecting unreadable sources."""

    def __init__(
        self, store: MetadataStore, embedder: BackgroundEmbedder, summary: IngestSummary, strict: bool, progress: bool
    ) -> None:
        self.store, self.embedder, self.summary = store, embedder, summary
        self.strict, self.progress = strict, progress
        self.removed: set[int] = set()  # PMIDs whose old vector must go
        self.errors: list[SourceError] = []

    def read(self, path: Path, sha: str, read: EventReader) -> SourceFile | None:
        from tqdm import tqdm

        records = used = 0
        try:
            events = tqdm(read(path), desc=f"Reading {path.name}", unit=" records", disable=not self.progress)
            for event in events:
                records += 1
                used += not isinstance(event, Skipped)
                self._apply(event)
        except SourceError as exc:
            self.errors.append(exc)
            log.error("%s", exc)
            return None
        if not used:  # not recorded as ingested: nothing came of it
            log.warning("%s holds no usable record (%d skipped); nothing from it was ingested", path, records)
            return None
        log.info("Read %s: %d records.", path, records)
        return SourceFile(path.name, sha, records, _now())

    def _apply(self, event: Event) -> None:
        if isinstance(event, Skipped):
            self._skip(event)
        elif isinstance(event, Deletion):
            for pmid in event.pmids:
                if (state := self.store.state(pmid)) is not None:
                    self.store.touch(pmid)
                    self._delete(pmid, state)
        else:
            self._apply_article(event)

    def _skip(self, event: Skipped) -> None:
        if self.strict:
            raise event.error()
        self.summary.skipped += 1
        log.warning("Skipped record at %s (PMID %s): %s", event.source, event.pmid, event.reason)

    def _apply_article(self, article: Article) -> None:
        state = self.store.state(article.pmid)  # (text_hash, indexed_hash) or None
        self.store.touch(article.pmid)
        if not article.sections:  # nothing to retrieve on; a newer version without abstract retires the old one
            self.summary.without_abstract += 1
            if state is not None:
                self._delete(article.pmid, state)
            return
        indexed = state[1] if state else None
        self.store.upsert(article, indexed_hash=indexed)
        if article.text_hash != indexed and not self.errors:  # after a failure nothing will be committed
            self.embedder.submit(article.text_hash, article.text)

    def _delete(self, pmid: str, state: tuple[str, str | None]) -> None:
        self.store.delete(pmid)
        if state[1] is not None:
            self.removed.add(int(pmid))


def _finish(
    store: MetadataStore, embedder: BackgroundEmbedder, manifest: Manifest | None, summary: IngestSummary
) -> Manifest:
    """Wait for the encoder (after queueing anything it has not seen) and settle the manifest."""
    pending = store.pending_hashes()
    missing = [pmid for pmid, text_hash, _ in pending if not embedder.submitted(text_hash)]
    for article in store.get(missing).values():  # normally none: every changed text was submitted
        embedder.submit(article.text_hash, article.text)
    embedder.finish()
    summary.resumed = embedder.resumed
    if manifest is None:
        encoder = embedder.encoder()
        backend = getattr(encoder, "backend", "torch")
        manifest = Manifest(encoder=encoder.name, dim=encoder.dim, encoder_backend=backend, created_at=_now())
    return manifest


def _write_generation(
    staging: Path,
    store: MetadataStore,
    manifest: Manifest,
    files: list[SourceFile],
    cache: VectorCache,
    live: Path | None,
    removed: set[int],
    summary: IngestSummary,
) -> tuple[VectorChanges, SegmentWrite]:
    pending = store.pending_hashes()
    removed.update(pmid for pmid, _, outdated in pending if outdated)
    added = np.asarray([pmid for pmid, _, _ in pending], dtype=np.int64)
    changes = VectorChanges(np.fromiter(removed, dtype=np.int64), added)  # for the ANN index (index/ann.py)

    def blocks():
        for start in range(0, len(pending), 4096):
            rows = pending[start : start + 4096]
            ids = np.asarray([pmid for pmid, _, _ in rows], dtype=np.int64)
            yield ids, cache.get([text_hash for _, text_hash, _ in rows], manifest.dim)
            store.mark_indexed(ids.tolist())

    gone = np.union1d(changes.removed, added)  # at most one live vector per PMID
    written = write_segments(staging, live, manifest.segments if live else [], manifest.dim, gone, blocks())
    summary.embedded = len(pending)
    cache.close()
    store.commit()
    manifest.files.extend(files)
    manifest.segments = written.names
    manifest.documents, manifest.updated_at = store.count(), _now()
    manifest.meta_segments, manifest.meta_next = meta_segments.finish(staging, store)
    manifest.save(staging / MANIFEST)
    return changes, written


def _files_to_ingest(paths: list[Path], manifest: Manifest | None) -> list[tuple[Path, str]]:
    todo = []
    for path in paths:
        sha = _sha256(path)
        if manifest and manifest.has_file(sha):
            log.info("Skipping %s: already ingested (same checksum).", path)
        elif sha not in (s for _, s in todo):
            todo.append((path, sha))
    return todo


def _names(files: list[tuple[Path, str]]) -> str:
    return ", ".join(str(path) for path, _ in files)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
