"""Apply ingestion events to an index, all or nothing.

Events are applied in order to a staged copy of the metadata; vectors are computed at the
end only for rows whose text changed, then the new generation is committed atomically. If a
source cannot be read, the staging copy is discarded and the live index is untouched.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from config import Config
from index.encoder import Encoder, load_encoder
from index.manifest import Manifest, SourceFile
from index.storage import MANIFEST, METADATA, VECTORS, IndexDir
from index.store import MetadataStore
from index.vectors import VectorIndex
from ingest.records import Article, Deletion, Event, IngestSummary, Skipped

log = logging.getLogger(__name__)

EventReader = Callable[[Path], Iterable[Event]]


def ingest_files(
    paths: list[Path],
    config: Config,
    *,
    read: EventReader,
    encoder: Encoder | None = None,
    progress: bool = True,
) -> IngestSummary:
    """Ingest ``paths`` (already checked) into ``config.index_dir`` and commit a new generation.

    Every source is read before the encoder is loaded, so a bad file fails fast, and a run with
    nothing new to embed never loads a model.
    """
    layout = IndexDir(config.index_dir)
    summary = IngestSummary()
    with layout.write_lock():
        live = layout.current()
        manifest = Manifest.load(live / MANIFEST) if live else None
        new_files = _files_to_ingest(paths, manifest)
        if not new_files:
            log.info("Nothing to do: every source is already in the index (same checksum).")
            return summary
        staging = layout.begin()
        try:
            store = MetadataStore(staging / METADATA)
            removed: set[int] = set()  # PMIDs whose old vector must go
            files = [_read_file(path, sha, read, store, summary, removed, progress) for path, sha in new_files]
            for name, count in store.changes().items():
                setattr(summary, name, count)
            pending = store.pending()
            if pending or manifest is None:
                encoder = encoder or _encoder_for(manifest, config)
                _check_same_encoder(manifest, encoder, config.index_dir)
            manifest = manifest or Manifest(encoder=encoder.name, dim=encoder.dim, created_at=_now())
            vectors = VectorIndex.load(live / VECTORS) if live else VectorIndex.create(manifest.dim)
            removed.update(pmid for pmid, outdated in pending if outdated)
            vectors.remove(np.fromiter(removed, dtype=np.int64))
            summary.embedded = _embed(store, [pmid for pmid, _ in pending], vectors, encoder, config, progress)
            _write_generation(staging, store, vectors, manifest, files)
            layout.commit(staging)
        except BaseException:
            layout.abort(staging)
            raise
    summary.sources = [str(path) for path, _ in new_files]
    return summary


def _read_file(
    path: Path, sha: str, read: EventReader, store: MetadataStore, summary: IngestSummary, removed: set[int],
    progress: bool,
) -> SourceFile:
    records = _apply(read(path), store, summary, removed, path, progress)
    return SourceFile(path.name, sha, records, _now())


def _write_generation(
    staging: Path, store: MetadataStore, vectors: VectorIndex, manifest: Manifest, files: list[SourceFile]
) -> None:
    store.commit()
    manifest.files.extend(files)
    manifest.documents, manifest.updated_at = store.count(), _now()
    store.close()
    vectors.save(staging / VECTORS)
    manifest.save(staging / MANIFEST)


def _encoder_for(manifest: Manifest | None, config: Config) -> Encoder:
    """An existing index keeps its encoder; only a new one may fall back to the packaged model."""
    model = manifest.encoder if manifest else config.encoder
    return load_encoder(
        model, fallback=manifest is None, max_seq_length=config.max_seq_length, batch_size=config.batch_size
    )


def _check_same_encoder(manifest: Manifest | None, encoder: Encoder, index_dir: Path) -> None:
    if manifest and (manifest.encoder != encoder.name or manifest.dim != encoder.dim):
        raise ValueError(
            f"{index_dir} was built with {manifest.encoder} ({manifest.dim}-d), not {encoder.name} "
            f"({encoder.dim}-d); use a new --index-dir to change encoders"
        )


def _files_to_ingest(paths: list[Path], manifest: Manifest | None) -> list[tuple[Path, str]]:
    todo = []
    for path in paths:
        sha = _sha256(path)
        if manifest and manifest.has_file(sha):
            log.info("Skipping %s: already ingested (same checksum).", path)
        elif sha not in (s for _, s in todo):
            todo.append((path, sha))
    return todo


def _apply(
    events: Iterable[Event], store: MetadataStore, summary: IngestSummary, removed: set[int], path: Path, progress: bool
) -> int:
    from tqdm import tqdm

    records = 0
    for event in tqdm(events, desc=f"Reading {path.name}", unit=" records", disable=not progress, mininterval=0.5):
        records += 1
        if isinstance(event, Skipped):
            summary.skipped += 1
            log.warning("Skipped record in %s (PMID %s): %s", event.source, event.pmid, event.reason)
        elif isinstance(event, Deletion):
            for pmid in event.pmids:
                if (state := store.state(pmid)) is not None:
                    store.touch(pmid)
                    _delete(pmid, state, store, removed)
        else:
            _apply_article(event, store, summary, removed)
    return records


def _apply_article(article: Article, store: MetadataStore, summary: IngestSummary, removed: set[int]) -> None:
    state = store.state(article.pmid)  # (text_hash, indexed_hash) or None
    store.touch(article.pmid)
    if not article.sections:  # nothing to retrieve on; a newer version without abstract retires the old one
        summary.without_abstract += 1
        if state is not None:
            _delete(article.pmid, state, store, removed)
        return
    store.upsert(article, indexed_hash=state[1] if state else None)


def _delete(pmid: str, state: tuple[str, str | None], store: MetadataStore, removed: set[int]) -> None:
    store.delete(pmid)
    if state[1] is not None:
        removed.add(int(pmid))


def _embed(
    store: MetadataStore, pending: list[int], vectors: VectorIndex, encoder: Encoder, config: Config, progress: bool
) -> int:
    from tqdm import tqdm

    batch_size = config.batch_size
    with tqdm(total=len(pending), desc="Embedding", unit=" abstracts", disable=not progress or not pending) as bar:
        for start in range(0, len(pending), batch_size * 4):
            ids = pending[start : start + batch_size * 4]
            articles = store.get(ids)
            texts = [articles[str(i)].text for i in ids]
            vectors.add(np.asarray(ids, dtype=np.int64), encoder.encode(texts))
            store.mark_indexed(ids)
            bar.update(len(ids))
    return len(pending)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
