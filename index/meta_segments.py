"""Article metadata as immutable SQLite segments, read through one view named ``articles``.

Why: copying the whole metadata database into every staging folder (62 GB at 24M abstracts) made
each ingest cost the collection. Here, as for the vectors (``index/segments.py``):

- a *segment* is an SQLite database with the ``articles`` table of ``index/store.py`` and a
  ``dead`` table of ``(segment number, PMID)``: rows of *older* segments this one made obsolete
  (deleted, revised, or re-read). It is written by one ingest and never modified again;
- an ingest hard-links the live segments into its staging folder, attaches them read-only
  (``immutable=1``: no locks, no journal), and writes into a new segment only the rows it inserts or
  revises, plus its ``dead`` rows;
- every connection sees one TEMP VIEW ``articles``: the union of the segments' rows minus the dead
  ones, so the SQL of ``index/store.py``, ``index/filters.py`` and the facets is unchanged;
- a *merge* copies the live rows of some segments into a new one, with the ``dead`` rows they hold
  that point at segments outside the merge. Segments merge by size class (``MERGE_FACTOR`` of a
  class), alone when more than ``MAX_DEAD`` is dead, and the smallest together when there are more
  than ``MAX_SEGMENTS`` (SQLite attaches at most 10 databases to one connection).

Segment numbers come from a counter in the manifest and are never reused: a ``dead`` row lives in
an immutable segment, and must never hit a later segment that happened to get the same number.
A PMID has at most one live row. Like the vectors, the segments are staged in ``.staging-*`` and
committed by the generation swap of ``index/storage.py``; nothing here writes a live file.
"""

from __future__ import annotations

import logging
import re
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from index.segments import level, link
from index.store import _SCHEMA, ARTICLES_TABLE, MetadataStore

log = logging.getLogger(__name__)

FIRST = "articles.sqlite"  # the first segment: the name the single database had
MERGE_FACTOR = 10
MAX_DEAD = 0.5
MAX_SEGMENTS = 8  # live segments after an ingest: a writer attaches them besides its own new one
_DEAD = "CREATE TABLE IF NOT EXISTS dead (seg INTEGER NOT NULL, pmid INTEGER NOT NULL, PRIMARY KEY (seg, pmid))"


@dataclass
class MetaSegment:
    name: str
    rows: int  # rows stored in the segment (live and dead); -1: not recorded (an index from before)

    @property
    def number(self) -> int:
        return 0 if self.name == FIRST else int(self.name.removesuffix(".sqlite").split("-")[1])


def segment_name(number: int) -> str:
    return FIRST if number == 0 else f"articles-{number:06d}.sqlite"


def listed(pairs: list[list]) -> list[MetaSegment]:
    """The manifest's ``meta_segments`` ([name, rows] pairs); [] = an index with one database."""
    segments = [MetaSegment(str(name), int(rows)) for name, rows in pairs] if pairs else [MetaSegment(FIRST, -1)]
    for segment in segments:  # a manifest may come from a downloaded index: names are never paths
        if not re.fullmatch(r"articles(-\d{6})?\.sqlite", segment.name):
            raise ValueError(f"manifest names {segment.name!r} as a metadata segment; rebuild the index")
    return segments


class SegmentedStore(MetadataStore):
    """The metadata of a generation's segments as one ``MetadataStore``; with ``new``, writes go to
    that new segment (created in ``folder``), the others are read-only."""

    def __init__(self, folder: Path, segments: list[MetaSegment], *, new: str | None = None) -> None:
        self.folder, self.segments, self.new = folder, list(segments), new
        uri = (folder / new).resolve().as_uri() if new else "file::memory:"
        self.db = sqlite3.connect(uri, uri=True, check_same_thread=False)
        if new:
            self.table = "main.articles"
            # A staged file is discarded whole on any failure, so its journal need not reach the disk,
            # and a page cache that holds a daily file's rows writes each page once, at the commit.
            self.db.executescript("PRAGMA journal_mode = MEMORY; PRAGMA cache_size = -131072;")
            self.db.executescript(_SCHEMA + _DEAD + ";")
        for segment in self.segments:
            path = (folder / segment.name).resolve().as_uri() + "?mode=ro&immutable=1"
            self.db.execute(f"ATTACH DATABASE ? AS s{segment.number}", (path,))
        self._holders = [f"s{s.number}" for s in self.segments if self._has_dead(f"s{s.number}")]
        if new:
            self._holders.append("main")
        self._create_views()

    def _has_dead(self, alias: str) -> bool:
        query = f"SELECT 1 FROM {alias}.sqlite_master WHERE type = 'table' AND name = 'dead'"
        return self.db.execute(query).fetchone() is not None

    def _live_rows(self, segment: MetaSegment, columns: str) -> str:
        """SQL selecting ``columns`` of a segment's rows that no segment marked dead."""
        alias = f"s{segment.number}"
        checks = [
            f"NOT EXISTS (SELECT 1 FROM {h}.dead d WHERE d.seg = {segment.number} AND d.pmid = a.pmid)"
            for h in self._holders
            if h != alias
        ]
        return f"SELECT {columns} FROM {alias}.articles a" + (" WHERE " + " AND ".join(checks) if checks else "")

    def _create_views(self) -> None:
        arms = [self._live_rows(s, "a.*") for s in self.segments]
        if self.new:
            arms.append("SELECT * FROM main.articles")
        self.db.execute("DROP VIEW IF EXISTS temp.articles")
        self.db.execute("CREATE TEMP VIEW articles AS " + " UNION ALL ".join(arms))  # never empty: see listed()
        older = [self._live_rows(s, f"{s.number} AS seg, a.pmid") for s in self.segments]
        self.db.execute("DROP VIEW IF EXISTS temp.older_live")
        self.db.execute(
            "CREATE TEMP VIEW older_live AS " + " UNION ALL ".join(older or ["SELECT 0 AS seg, 0 AS pmid WHERE 0"])
        )

    # --- writes: rows of older segments are marked dead, never changed --------------------------

    def _kill_older(self, pmid: int) -> bool:
        found = self.db.execute("SELECT seg FROM older_live WHERE pmid = ?", (pmid,)).fetchall()
        for (seg,) in found:
            self.db.execute("INSERT OR IGNORE INTO main.dead VALUES (?, ?)", (seg, pmid))
        return bool(found)

    def upsert(self, article, *, indexed_hash: str | None) -> None:
        self._kill_older(int(article.pmid))
        super().upsert(article, indexed_hash=indexed_hash)

    def delete(self, pmid: str) -> bool:
        killed = self._kill_older(int(pmid))
        return super().delete(pmid) or killed

    # --- counts without scanning the collection ------------------------------------------------

    def dead_counts(self) -> dict[int, int]:
        """Dead rows per segment number (only segments of this store)."""
        present = {s.number for s in self.segments}
        counts: dict[int, int] = {}
        for holder in self._holders:
            for seg, n in self.db.execute(f"SELECT seg, COUNT(*) FROM {holder}.dead GROUP BY seg"):
                if seg in present:
                    counts[seg] = counts.get(seg, 0) + n
        return counts

    def dead_pairs(self) -> np.ndarray:
        """Every (segment number, PMID) row of this store's segments marked dead, as an (n, 2) array."""
        present = {s.number for s in self.segments}
        pairs = [row for h in self._holders for row in self.db.execute(f"SELECT seg, pmid FROM {h}.dead")]
        found = np.asarray([p for p in pairs if p[0] in present], dtype=np.int64).reshape(-1, 2)
        return np.unique(found, axis=0)

    def segment_rows(self) -> list[MetaSegment]:
        """The segments with their row counts (counted once for an index from before)."""
        for segment in self.segments:
            if segment.rows < 0:
                segment.rows = self.db.execute(f"SELECT COUNT(*) FROM s{segment.number}.articles").fetchone()[0]
        return self.segments

    def count(self) -> int:
        rows = sum(s.rows for s in self.segment_rows()) - sum(self.dead_counts().values())
        if self.new:
            rows += self.db.execute("SELECT COUNT(*) FROM main.articles").fetchone()[0]
        return rows


def open_store(generation: Path, pairs: list[list]) -> SegmentedStore:
    """A reader of a generation's metadata (``pairs``: its manifest's ``meta_segments``)."""
    return SegmentedStore(generation, listed(pairs))


def stage(staging: Path, live: Path | None, pairs: list[list], number: int) -> SegmentedStore:
    """The writer's store: the live segments linked into ``staging`` and a new segment ``number``."""
    segments = listed(pairs) if live is not None else []
    for segment in segments:
        link(live / segment.name, staging / segment.name)
    return SegmentedStore(staging, segments, new=segment_name(number))


# --- after the write: the new segment joins the list, then merges ----------------------------------


def finish(staging: Path, store: MetadataStore) -> tuple[list[list], int]:
    """Close the writer's store; the staged generation's [name, rows] segment list and the next
    unused segment number, after the merges the policy asks for."""
    assert isinstance(store, SegmentedStore) and store.new is not None
    rows = store.db.execute("SELECT COUNT(*) FROM main.articles").fetchone()[0]
    new = MetaSegment(store.new, rows)
    segments, counter = [*store.segment_rows(), new], new.number + 1
    store.close()
    while group := _next_merge(staging, segments):
        merged = _merge(staging, segments, group, segment_name(counter))
        counter += 1
        segments = [s for s in segments if s not in group] + [merged]
    return [[s.name, s.rows] for s in segments], counter


def _live_counts(staging: Path, segments: list[MetaSegment]) -> dict[str, tuple[int, int]]:
    reader = SegmentedStore(staging, segments)
    try:
        dead = reader.dead_counts()
        return {s.name: (s.rows, dead.get(s.number, 0)) for s in reader.segment_rows()}
    finally:
        reader.close()


def _next_merge(staging: Path, segments: list[MetaSegment]) -> list[MetaSegment]:
    """One group to merge now, or []."""
    counts = _live_counts(staging, segments)
    for segment in segments:
        rows, dead = counts[segment.name]
        if dead and dead > MAX_DEAD * rows:
            return [segment]
    by_level: dict[int, list[MetaSegment]] = {}
    for segment in segments:
        rows, dead = counts[segment.name]
        by_level.setdefault(level(rows - dead, MERGE_FACTOR), []).append(segment)
    for group in by_level.values():
        if len(group) >= MERGE_FACTOR:
            return group
    if len(segments) > MAX_SEGMENTS:
        smallest = sorted(segments, key=lambda s: counts[s.name][0] - counts[s.name][1])
        return smallest[: len(segments) - MAX_SEGMENTS + 1]
    return []


def _merge(staging: Path, segments: list[MetaSegment], group: list[MetaSegment], name: str) -> MetaSegment:
    """The live rows of ``group`` as segment ``name``, with the dead rows they hold for segments
    outside the group; the group's files leave the staging folder."""
    log.info("Merging %d metadata segments.", len(group))
    reader = SegmentedStore(staging, segments)
    try:
        reader.db.execute("ATTACH DATABASE ? AS out", ((staging / name).resolve().as_uri(),))
        reader.db.executescript(ARTICLES_TABLE.replace("EXISTS articles", "EXISTS out.articles"))
        reader.db.execute(_DEAD.replace("EXISTS dead", "EXISTS out.dead"))
        for segment in group:
            reader.db.execute("INSERT INTO out.articles " + reader._live_rows(segment, "a.*"))
        inside = {s.number for s in group}
        outside = ",".join(str(s.number) for s in segments if s.number not in inside) or "NULL"
        for segment in group:
            if f"s{segment.number}" in reader._holders:
                reader.db.execute(
                    f"INSERT OR IGNORE INTO out.dead SELECT seg, pmid FROM s{segment.number}.dead "
                    f"WHERE seg IN ({outside})"
                )
        reader.db.commit()
        rows = reader.db.execute("SELECT COUNT(*) FROM out.articles").fetchone()[0]
    finally:
        reader.close()
    for segment in group:
        (staging / segment.name).unlink()
    return MetaSegment(name, rows)


def open_generation(generation: Path) -> SegmentedStore:
    """A reader of a committed generation folder's metadata, as its manifest lists it."""
    from index.manifest import Manifest

    return open_store(generation, Manifest.load(generation / "manifest.json").meta_segments)
