"""What an ingest derives from a staged generation before committing it: BM25, the approximate
vector index, and the manifest fields that say how queries must be served.

Called by ``index/writer.py`` after the vectors, metadata and manifest are written to the staging
folder and before it is committed, so the new files are part of the same atomic generation swap:
a reader never sees vectors without their BM25 index, and a failure here leaves the live
generation untouched like any other ingest failure.
"""

from __future__ import annotations

import os
from pathlib import Path

from config import Config
from index import ann, bm25, bm25_segments
from index.ann_segments import build_for_segments
from index.encoder import query_partner
from index.manifest import Manifest
from index.segments import SegmentedVectors, SegmentWrite
from index.storage import MANIFEST

BM25_DESCRIPTION = (
    f"bm25s lucene k1={bm25.K1} b={bm25.B}, English stopwords, Snowball stemming; "
    "term frequencies per metadata segment, weighted at query time"
)


def finish_generation(
    staging: Path,
    config: Config,
    *,
    new: bool,
    previous: Path | None = None,
    changes: ann.VectorChanges | None = None,
    written: SegmentWrite | None = None,
) -> Manifest:
    """Stage BM25 and (for large indexes) the ANN index into ``staging``; settle the manifest.

    ``previous`` is the live generation, ``changes`` what this ingest did to its vectors and
    ``written`` which vector segments it wrote: with all three, a trained IVF-PQ index is updated
    segment by segment instead of retrained (``index/ann_segments.py``)."""
    manifest = Manifest.load(staging / MANIFEST)
    _settle_query_encoder(manifest, config, new=new)
    bm25_segments.stage(staging, previous, manifest.meta_segments)
    manifest.bm25 = BM25_DESCRIPTION
    vectors = SegmentedVectors.open(staging, manifest.segments, manifest.dim, eager=False)
    written = written or SegmentWrite(manifest.segments, manifest.segments, [])
    manifest.ann = build_for_segments(
        staging, vectors, config.index_type, previous=previous, changes=changes, written=written
    )
    manifest.save(staging / MANIFEST)
    for path in (staging / bm25.BM25_DIR).iterdir():  # durable before the swap (the rest: IndexDir.commit)
        if path.is_file() and path.stat().st_nlink == 1:  # links to the live generation's files are durable
            _fsync(path)
    return manifest


def _settle_query_encoder(manifest: Manifest, config: Config, *, new: bool) -> None:
    """A new index records its query encoder; an existing one keeps it (changing it is refused)."""
    requested = config.query_encoder if manifest.encoder == config.encoder else ""  # not for a fallback encoder
    if new:
        manifest.query_encoder = query_partner(manifest.encoder, requested)
    elif config.query_encoder and config.query_encoder != (manifest.query_encoder or manifest.encoder):
        raise ValueError(
            f"{config.index_dir} embeds queries with {manifest.query_encoder or manifest.encoder}, not "
            f"{config.query_encoder}; use a new --index-dir to change encoders"
        )


def _fsync(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())
