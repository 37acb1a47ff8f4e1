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
    """Ingest ``paths`` (already checked) into ``config.index_dir`` and commit a new generation."""
    layout = IndexDir(config.index_dir)
    summary = IngestSummary()
    with layout.write_lock():
        live = layout.current()
        manifest = Manifest.load(live / MANIFEST) if live else None
        encoder = encoder or _encoder_for(manifest, config)
        _check_same_encoder(manifest, encoder, config.index_dir)
        new_files = _files_to_ingest(paths, manifest)
        if not new_files:
            log.info("Nothing to do: every source is already in the index (same checksum).")
            return summary
        staging = layout.begin()
        try:
            store = MetadataStore(staging / METADATA)
            vectors = VectorIndex.load(live / VECTORS) if live else VectorIndex.create(encoder.dim)
            manifest = manifest or Manifest(encoder=encoder.name, dim=encoder.dim, created_at=_now())
            stale: set[int] = set()
            for path, sha in new_files:
                records = _apply(read(path), store, summary, stale, path, progress)
                manifest.files.append(SourceFile(path.name, sha, records, _now()))
                summary.sources.append(str(path))
            vectors.remove(np.fromiter(stale, dtype=np.int64))
            summary.embedded = _embed_pending(store, vectors, encoder, config.batch_size, progress)
            store.commit()
            manifest.documents, manifest.updated_at = store.count(), _now()
            store.close()
            vectors.save(staging / VECTORS)
            manifest.save(staging / MANIFEST)
            layout.commit(staging)
        except BaseException:
            layout.abort(staging)
            raise
    return summary


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
    events: Iterable[Event], store: MetadataStore, summary: IngestSummary, stale: set[int], path: Path, progress: bool
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
                if store.delete(pmid):
                    summary.deleted += 1
                    stale.add(int(pmid))
        else:
            _apply_article(event, store, summary, stale)
    return records


def _apply_article(article: Article, store: MetadataStore, summary: IngestSummary, stale: set[int]) -> None:
    state = store.state(article.pmid)
    previous = state[0] if state else None
    if not article.sections:  # nothing to retrieve on; a newer version without abstract retires the old one
        summary.without_abstract += 1
        if previous is not None and store.delete(article.pmid):
            stale.add(int(article.pmid))
        return
    unchanged = previous == article.text_hash
    store.upsert(article, embedded=unchanged and state[1])
    if previous is None:
        summary.added += 1
    elif unchanged:
        summary.unchanged += 1
    else:
        summary.replaced += 1
        stale.add(int(article.pmid))


def _embed_pending(
    store: MetadataStore, vectors: VectorIndex, encoder: Encoder, batch_size: int, progress: bool
) -> int:
    from tqdm import tqdm

    pending = store.pending()
    with tqdm(total=len(pending), desc="Embedding", unit=" abstracts", disable=not progress or not pending) as bar:
        for start in range(0, len(pending), batch_size * 4):
            ids = pending[start : start + batch_size * 4]
            articles = store.get(ids)
            texts = [articles[str(i)].text for i in ids]
            vectors.add(np.asarray(ids, dtype=np.int64), encoder.encode(texts))
            store.mark_embedded(ids)
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
