"""Distributed ingestion on Ray Data: read files in parallel, embed on a pool of actors, merge.

``python -m ingest FILES --engine ray`` runs the expensive part of an ingest, embedding, on a
Ray cluster, and leaves everything else to the single-machine writer (``index/writer.py``):

1. Ray, one task per new source file: read it with the ordinary readers and keep the texts
   that are neither in the live index (their hash is in its metadata) nor already in the shard
   folder (an interrupted run embedded them).
2. Ray, a pool of actors (one per GPU, or CPU workers): each loads the encoder exactly as a
   local ingest does (``load_for_ingest``: the manifest's model, same long-abstract windows)
   and embeds its batches.
3. Ray: the vectors are written as Parquet shards (``index/shards.py``) to a local folder or
   object storage.
4. Here: ``ingest_files`` runs over the same files, in the same order, with a
   ``PrecomputedEncoder`` that looks every vector up in the shards. Deletions, replacements,
   duplicates, the summary, manifest, BM25, ANN, the atomic commit and crash-safety are thus
   the single-machine code's, and an index built this way takes plain incremental ingests.
   The cost is reading the sources a second time (see docs/CLUSTER.md for figures).

On success the shards the merge used are deleted. After a failure they stay, and the same
command embeds only the texts that are not in them yet.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from config import Config
from index.checks import check_for_ingest
from index.encoder import Encoder
from index.encoding import ingest_backend, load_for_ingest
from index.manifest import Manifest
from index.meta_segments import open_store
from index.shards import ShardDir, shard_table
from index.storage import MANIFEST, IndexDir
from index.writer import EventReader, ingest_files
from ingest.records import Article, IngestSummary, SourceError

log = logging.getLogger(__name__)

RAY_MISSING = "the Ray engine needs Ray Data: pip install -r requirements-ray.txt (ray[data] and pyarrow)"
DEFAULT_SHARDS = ".ray-shards"  # inside the index directory, unless --shard-dir says otherwise
_WINDOW_BATCHES = 8  # texts per actor call = batch_size * this, as in a local ingest
_ROWS_PER_SHARD = 16384  # vectors per Parquet file (25 MB at 384-d): few files, fine-grained resume


class RayUnavailable(RuntimeError):
    pass


def require_ray() -> None:
    """Fail at once, with the install command, where Ray Data is not installed."""
    import importlib.util

    if importlib.util.find_spec("ray") is None or importlib.util.find_spec("pyarrow") is None:
        raise RayUnavailable(RAY_MISSING)


@dataclass(frozen=True)
class RayOptions:
    address: str = ""  # "": RAY_ADDRESS, else a cluster started on this machine, else a new local one
    shard_dir: str = ""  # local folder or s3://, gs://... URI; "": <index_dir>/.ray-shards (one machine only)
    workers: int = 0  # embedding actors; 0: one per GPU, else one per CPU but one (left for reading)
    gpus_per_worker: float | None = None  # None: 1 when the cluster has GPUs, else 0 (CPU actors)


def ingest_on_ray(
    paths: list[Path],
    config: Config,
    *,
    read: EventReader,
    options: RayOptions = RayOptions(),
    encoder_factory: Callable[[], Encoder] | None = None,
    progress: bool = True,
    strict: bool = False,
) -> IngestSummary:
    """Embed ``paths``' new texts on Ray, then commit them exactly as ``ingest_files`` does.

    ``encoder_factory`` (importable by the Ray workers) replaces the configured encoder, as
    ``ingest_files``' ``encoder`` does; it is called once per actor.
    """
    check_for_ingest(config.index_dir)  # before the cluster embeds anything (index/checks.py)
    shards = ShardDir(options.shard_dir or config.index_dir / DEFAULT_SHARDS)
    embed_on_ray(
        paths, config, read=read, shards=shards, options=options, encoder_factory=encoder_factory, progress=progress
    )
    manifest = _live_manifest(config)
    encoder, used = shards.encoder(max_seq_length=config.max_seq_length, encoder=_identity(manifest))
    if encoder is None and manifest is not None:  # nothing new was embedded: a merge that needs a vector fails
        encoder = _empty_encoder(manifest)
    log.info("Merging %d precomputed vectors into %s.", len(encoder) if encoder else 0, config.index_dir)
    summary = ingest_files(paths, config, read=read, encoder=encoder, progress=progress, strict=strict)
    shards.remove(used)
    return summary


def embed_on_ray(
    paths: list[Path],
    config: Config,
    *,
    read: EventReader,
    shards: ShardDir,
    options: RayOptions = RayOptions(),
    encoder_factory: Callable[[], Encoder] | None = None,
    progress: bool = True,
) -> None:
    """Write a vector to ``shards`` for every text of the new sources that is in neither the
    live index nor ``shards`` already (steps 1-3 above)."""
    require_ray()
    manifest = _live_manifest(config)
    todo = _new_files(paths, manifest)
    if not todo:
        return
    known = shards.hashes(max_seq_length=config.max_seq_length, encoder=_identity(manifest))
    if known:
        log.info("%s holds %d vectors of an earlier run: they are not computed again.", shards.uri, len(known))
    live = IndexDir(config.index_dir).current()
    if live is not None:
        store = open_store(live, Manifest.load(live / MANIFEST).meta_segments)
        known |= store.indexed_hashes()
        store.close()
    _run_pipeline(todo, config, manifest, read, frozenset(known), shards, options, encoder_factory, progress)


def _run_pipeline(
    paths: list[Path],
    config: Config,
    manifest: Manifest | None,
    read: EventReader,
    known: frozenset[str],
    shards: ShardDir,
    options: RayOptions,
    encoder_factory: Callable[[], Encoder] | None,
    progress: bool,
) -> None:
    import ray
    import ray.data

    _connect(options.address, quiet=not progress)
    resources = ray.cluster_resources()
    _check_shared_storage(options)
    gpus = options.gpus_per_worker if options.gpus_per_worker is not None else float(resources.get("GPU", 0) > 0)
    workers = options.workers or _default_workers(resources, gpus)
    config = _actor_config(config, manifest, gpus)
    window = config.batch_size * _WINDOW_BATCHES
    ray.data.DataContext.get_current().enable_progress_bars = progress
    log.info(
        "Ray: %d embedding actors (%g GPU each, %s) for %d files.", workers, gpus, config.encoder_backend, len(paths)
    )
    (
        ray.data.from_items([{"path": str(path)} for path in paths], override_num_blocks=len(paths))
        .flat_map(_new_texts, fn_kwargs={"read": read, "known": known})
        .repartition(target_num_rows_per_block=window)
        .map_batches(
            _EmbedActor,
            fn_constructor_kwargs={"config": config, "manifest": manifest, "factory": encoder_factory},
            batch_size=window,
            compute=ray.data.ActorPoolStrategy(size=workers),
            num_gpus=gpus,
            num_cpus=1,
        )
        .write_parquet(shards.path, filesystem=shards.filesystem, min_rows_per_file=_ROWS_PER_SHARD)
    )


def _new_texts(row: dict[str, str], *, read: EventReader, known: frozenset[str]) -> Iterator[dict[str, str]]:
    """The texts of one source that need a vector, each once; runs on a Ray worker.

    A source that cannot be read stops here quietly: the merge reads it again and reports it
    with every other failure, committing nothing."""
    path = Path(row["path"])
    seen: set[str] = set()
    try:
        for event in read(path):
            if not isinstance(event, Article) or not event.sections:
                continue
            if event.text_hash not in known and event.text_hash not in seen:
                seen.add(event.text_hash)
                yield {"text_hash": event.text_hash, "text": event.text}
    except SourceError as exc:
        log.warning("%s (reported again by the merge)", exc)


class _EmbedActor:
    """One encoder per actor, loaded once; called with batches of texts, returns shard rows."""

    def __init__(self, config: Config, manifest: Manifest | None, factory: Callable[[], Encoder] | None) -> None:
        self.encoder = load_for_ingest(factory() if factory else None, manifest, config)
        self.max_seq_length = config.max_seq_length

    def __call__(self, batch: dict) -> object:
        vectors = self.encoder.encode(list(batch["text"]))
        backend = getattr(self.encoder, "backend", "torch")
        return shard_table(
            batch["text_hash"], vectors, encoder=self.encoder.name, backend=backend, max_seq_length=self.max_seq_length
        )


def _actor_config(config: Config, manifest: Manifest | None, gpus: float) -> Config:
    """The configuration every actor loads its encoder with. A new index's ``auto`` backend is
    settled here, by the actors' kind (GPU or CPU), so that no two actors can pick differently."""
    if manifest is None:
        device = "cuda" if gpus else "cpu"
        config = replace(config, encoder_backend=ingest_backend(None, replace(config, device=device)))
    if config.workers == 0 and not gpus:
        config = replace(config, workers=1)  # one CPU per actor: its thread pool must not oversubscribe the node
    return config


def _connect(address: str, *, quiet: bool) -> None:
    import ray

    level = logging.WARNING if quiet else logging.INFO
    logging.getLogger("ray.data").setLevel(level)
    if not ray.is_initialized():
        ray.init(address=address or None, logging_level=level)


def _default_workers(resources: dict[str, float], gpus: float) -> int:
    if gpus > 0:
        return max(1, int(resources.get("GPU", 0) // gpus))
    return max(1, int(resources.get("CPU", 1)) - 1)


def _check_shared_storage(options: RayOptions) -> None:
    """The default shard folder is on this machine's disk: workers on other nodes could not write it."""
    import ray

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    if not options.shard_dir and len(nodes) > 1:
        raise ValueError(
            f"a Ray cluster of {len(nodes)} nodes needs --shard-dir on storage every node can write "
            "(a shared file system path, or s3://BUCKET/PATH, gs://...)"
        )


def _new_files(paths: list[Path], manifest: Manifest | None) -> list[Path]:
    """Sources not in the index yet (by SHA-256, as ``ingest_files`` decides), each once."""
    todo: dict[str, Path] = {}
    for path in paths:
        with open(path, "rb") as handle:
            sha = hashlib.file_digest(handle, "sha256").hexdigest()
        if not (manifest and manifest.has_file(sha)):
            todo.setdefault(sha, path)
    return list(todo.values())


def _identity(manifest: Manifest | None) -> tuple[str, str] | None:
    """The (encoder, backend) of an existing index, which every vector merged into it must match."""
    return (manifest.encoder, manifest.encoder_backend) if manifest else None


def _live_manifest(config: Config) -> Manifest | None:
    live = IndexDir(config.index_dir).current()
    return Manifest.load(live / MANIFEST) if live else None


def _empty_encoder(manifest: Manifest) -> Encoder:
    import numpy as np

    from index.shards import PrecomputedEncoder

    empty = np.zeros((0, manifest.dim), np.float32)
    return PrecomputedEncoder(manifest.encoder, manifest.dim, [], empty, backend=manifest.encoder_backend)
