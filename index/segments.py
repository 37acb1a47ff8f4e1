"""Vectors as immutable segments plus a deletion set, shared between generations by hard links.

Why: the flat vectors of all of PubMed are ~37 GB (384-d). Loading them whole, editing them and
writing a new copy at every ingest (what a single ``vectors.faiss`` forced) costs the whole
collection for a 30,000-record update file. Here an ingest never rewrites a vector it did not
change, as Lucene does it:

- a *segment* is one FAISS ``IndexIDMap2(IndexFlatIP)`` file (``vectors.faiss`` for the first,
  ``vectors-NNNNNN.faiss`` after) with its PMIDs, sorted, beside it (``<name>.ids.npy``). It is
  written once, into the staging folder of the ingest that created it, and never modified;
- the next ingest *hard-links* the live generation's segment files into its staging folder (no
  bytes copied), writes the vectors it computed as one new segment, and records the PMIDs whose
  vector went (deleted, replaced, re-embedded) in ``tombstones.npy``: ``(segment number, PMID)``
  pairs, small, rewritten whole each time;
- a *merge* rewrites some segments' live vectors as one new segment and drops their tombstones:
  segments of the same size class (``level``: log base ``MERGE_FACTOR`` of the live count) merge
  once ``MERGE_FACTOR`` of them exist, and a segment more than ``MAX_DEAD`` dead is rewritten. Each
  vector is thus rewritten about log_F(N / update) times over its life, not once per ingest.

Segments and tombstones live in the generation folder like every other file, so the atomic
commit, crash recovery, resume and old readers of ``index/storage.py`` apply unchanged: a merge
happens in the staging folder, before the commit, so a kill during a merge is a kill before the
commit. A hard-linked file must never be written in place (it is the live generation's file too):
everything here only creates new files. A PMID has at most one live vector in a generation.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from index.vectors import VectorIndex, search_params

log = logging.getLogger(__name__)

FIRST = "vectors.faiss"  # the first segment: the name a single-file index had (older indexes load as is)
TOMBSTONES = "tombstones.npy"
IDS_SUFFIX = ".ids.npy"
MERGE_FACTOR = 10  # segments per size class before they merge (Lucene's LogMergePolicy default)
MAX_DEAD = 0.5  # a segment with more dead vectors than this fraction is rewritten
_COPY_BATCH = 100_000  # vectors read back at a time during a merge


def segment_number(name: str) -> int:
    """0 for ``vectors.faiss``, N for ``vectors-N.faiss``."""
    stem = name.removesuffix(".faiss")
    return 0 if stem == "vectors" else int(stem.split("-")[1])


def ids_file(name: str) -> str:
    return name.removesuffix(".faiss") + IDS_SUFFIX


def level(live: int, factor: int | None = None) -> int:
    """The size class of a segment of ``live`` vectors: floor(log_factor(live)), in integers."""
    factor, found = factor or MERGE_FACTOR, 0
    while live >= factor:
        live //= factor
        found += 1
    return found


@dataclass
class Segment:
    """One segment of a generation: its vectors' sorted PMIDs and those of them that are dead."""

    name: str
    ids: np.ndarray  # sorted PMIDs stored in the segment file (live and dead)
    dead: np.ndarray  # sorted PMIDs of this segment whose vector no longer counts

    @property
    def number(self) -> int:
        return segment_number(self.name)

    @property
    def live(self) -> int:
        return len(self.ids) - len(self.dead)

    def holds(self, pmids: np.ndarray) -> np.ndarray:
        """Which of ``pmids`` have their live vector here."""
        return _member(pmids, self.ids) & ~_member(pmids, self.dead)


def _member(values: np.ndarray, sorted_set: np.ndarray) -> np.ndarray:
    if len(sorted_set) == 0:
        return np.zeros(len(values), dtype=bool)
    at = np.searchsorted(sorted_set, values).clip(0, len(sorted_set) - 1)
    return sorted_set[at] == values


def read_segments(generation: Path, names: list[str]) -> list[Segment]:
    """The segments of a generation (``names`` from its manifest; [] = an older single-file index)."""
    names = names or ([FIRST] if (generation / FIRST).exists() else [])
    for name in names:  # a manifest may come from a downloaded index: names are never paths
        if not re.fullmatch(r"vectors(-\d{6})?\.faiss", name):
            raise ValueError(f"manifest names {name!r} as a vector segment; rebuild the index")
    pairs = _load_tombstones(generation / TOMBSTONES)
    segments = []
    for name in names:
        dead = np.sort(pairs[pairs[:, 0] == segment_number(name), 1])
        segments.append(Segment(name, _segment_ids(generation, name), dead))
    return segments


def _load_tombstones(path: Path) -> np.ndarray:
    if not path.exists():
        return np.zeros((0, 2), dtype=np.int64)
    return np.load(path, allow_pickle=False).reshape(-1, 2)


def _segment_ids(generation: Path, name: str) -> np.ndarray:
    path = generation / ids_file(name)
    if path.exists():
        return np.load(path, mmap_mode="r")
    import faiss  # an index written before segments existed: the ids are in the FAISS file only

    index = faiss.read_index(str(generation / name), faiss.IO_FLAG_MMAP_IFC)
    return np.sort(faiss.vector_to_array(index.id_map).astype(np.int64))


class SegmentedVectors:
    """Every live vector of a generation, searched and read like one ``VectorIndex``."""

    def __init__(self, generation: Path, segments: list[Segment], dim: int) -> None:
        self.generation, self.segments, self.dim = generation, segments, dim
        self._indexes: dict[str, VectorIndex] = {}

    @classmethod
    def open(cls, generation: Path, names: list[str], dim: int, *, eager: bool = True) -> SegmentedVectors:
        """``eager``: every segment opened now, so a reader keeps working after its generation is
        rotated away; an ingest opens only the segments it reads (each costs its id map in RAM)."""
        vectors = cls(generation, read_segments(generation, names), dim)
        for segment in vectors.segments if eager else []:
            vectors.index(segment)
        return vectors

    def index(self, segment: Segment) -> VectorIndex:
        """A segment's FAISS index, memory-mapped, opened on first use."""
        if segment.name not in self._indexes:
            self._indexes[segment.name] = VectorIndex.load(self.generation / segment.name, mmap=True)
        return self._indexes[segment.name]

    def __len__(self) -> int:
        return sum(s.live for s in self.segments)

    def ids(self) -> np.ndarray:
        """Every live PMID, sorted."""
        parts = [np.setdiff1d(s.ids, s.dead, assume_unique=True) for s in self.segments]
        return np.sort(np.concatenate(parts)) if parts else np.zeros(0, dtype=np.int64)

    def search(self, query: np.ndarray, k: int, *, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """As ``VectorIndex.search``: the best ``k`` of every segment's best ``k``, dead ones excluded."""
        query = np.ascontiguousarray(query, dtype=np.float32)
        results = [self._search_segment(s, query, k, allowed) for s in self.segments if s.live]
        if not results:
            return np.full((len(query), k), -np.inf, dtype=np.float32), np.full((len(query), k), -1, dtype=np.int64)
        return merge_top(results, k)

    def _search_segment(self, segment: Segment, query: np.ndarray, k: int, allowed: np.ndarray | None):
        index = self.index(segment)
        params = live_params(segment, allowed)
        if params is None:
            return index.index.search(query, k)
        return index.index.search(query, k, params=params)

    def vectors(self, ids: np.ndarray) -> np.ndarray:
        """The live vectors of ``ids`` (each must be present), one row each."""
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        out = np.zeros((len(ids), self.dim), dtype=np.float32)
        found = np.zeros(len(ids), dtype=bool)
        for segment in self.segments:
            here = segment.holds(ids) & ~found
            if here.any():
                out[here] = self.index(segment).vectors(ids[here])
                found |= here
        if not found.all():
            raise KeyError(f"no vector for PMID {int(ids[~found][0])} in {self.generation}")
        return out

    def batches(self, size: int = _COPY_BATCH) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(PMIDs, vectors) of every live vector, segment after segment, in blocks of ``size``."""
        for segment in self.segments:
            yield from segment_batches(self.index(segment), segment.dead, size)


def segment_batches(index: VectorIndex, dead: np.ndarray, size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(PMIDs, vectors) of one segment's vectors not in ``dead``, in storage order."""
    import faiss

    ids = faiss.vector_to_array(index.index.id_map).astype(np.int64)
    inner = faiss.downcast_index(index.index.index)
    for start in range(0, len(ids), size):
        block = ids[start : start + size]
        keep = ~_member(block, dead)
        if keep.any():
            yield block[keep], inner.reconstruct_n(start, len(block))[keep]


def live_params(segment: Segment, allowed: np.ndarray | None, **kwargs: object):
    """FAISS search parameters admitting only ``segment``'s live vectors (and ``allowed``); None if all."""
    import faiss

    if len(segment.dead) == 0:
        return search_params(allowed, **kwargs) if allowed is not None else None
    dead = faiss.IDSelectorBatch(np.ascontiguousarray(segment.dead, dtype=np.int64))
    selector = faiss.IDSelectorNot(dead)
    keep = [dead, selector]
    if allowed is not None:
        wanted = faiss.IDSelectorBatch(np.ascontiguousarray(allowed, dtype=np.int64))
        selector = faiss.IDSelectorAnd(wanted, selector)
        keep += [wanted, selector]
    kind = faiss.SearchParametersIVF if "nprobe" in kwargs else faiss.SearchParameters
    params = kind(sel=selector, **kwargs)
    params.keep = keep  # SWIG holds raw pointers: keep the selectors alive with the parameters
    return params


def merge_top(results: list[tuple[np.ndarray, np.ndarray]], k: int) -> tuple[np.ndarray, np.ndarray]:
    """The best ``k`` (score, id) per query row over several searches' results (-1 ids ignored)."""
    scores = np.concatenate([s for s, _ in results], axis=1)
    ids = np.concatenate([i for _, i in results], axis=1)
    scores = np.where(ids >= 0, scores, -np.inf).astype(np.float32)
    order = np.lexsort((ids, -scores), axis=1)[:, :k]  # ties: lower PMID first
    top_scores = np.take_along_axis(scores, order, axis=1)
    top_ids = np.where(np.isfinite(top_scores), np.take_along_axis(ids, order, axis=1), -1)
    if top_ids.shape[1] < k:
        pad = k - top_ids.shape[1]
        top_scores = np.pad(top_scores, ((0, 0), (0, pad)), constant_values=-np.inf)
        top_ids = np.pad(top_ids, ((0, 0), (0, pad)), constant_values=-1)
    return top_scores, top_ids


# --- writing ------------------------------------------------------------------------------------


@dataclass
class SegmentWrite:
    """What ``write_segments`` did, for the ANN index and the benchmark."""

    names: list[str]  # the staged generation's segments, oldest first
    created: list[str]  # segments written by this ingest (the new one and merges)
    merged: list[str]  # live segments a merge replaced


def write_segments(
    staging: Path,
    live: Path | None,
    live_names: list[str],
    dim: int,
    removed: np.ndarray,
    added: Iterable[tuple[np.ndarray, np.ndarray]],
) -> SegmentWrite:
    """Stage a generation's vectors: the live segments hard-linked, ``removed`` PMIDs tombstoned,
    the ``added`` (PMIDs, vectors) blocks as one new segment, then the merges ``plan_merges`` asks
    for. New segments are numbered above every live one, so a name never changes meaning between a
    generation and the next."""
    segments = _link_live(staging, live, live_names)
    _tombstone(segments, np.asarray(removed, dtype=np.int64))
    created: list[str] = []
    number = max(s.number for s in segments) + 1 if segments else 0
    new = _write_segment(staging, dim, added, number)
    if new is not None:
        segments.append(new)
        created.append(new.name)
        number += 1
    merged: list[str] = []
    for group in plan_merges(segments):
        merged_into = _merge(staging, dim, group, number)
        number += 1
        merged += [s.name for s in group if s.name not in created]
        created = [n for n in created if n not in {s.name for s in group}]
        segments = [s for s in segments if s not in group]
        if merged_into is not None:
            segments.append(merged_into)
            created.append(merged_into.name)
    _write_tombstones(staging, segments)
    return SegmentWrite([s.name for s in segments], created, merged)


def _link_live(staging: Path, live: Path | None, names: list[str]) -> list[Segment]:
    if live is None:
        return []
    segments = read_segments(live, names)
    for segment in segments:
        link(live / segment.name, staging / segment.name)
        if (live / ids_file(segment.name)).exists():
            link(live / ids_file(segment.name), staging / ids_file(segment.name))
        else:  # an index from before segments: its sorted ids, written once
            _save_array(staging / ids_file(segment.name), np.asarray(segment.ids))
    return segments


def link(source: Path, target: Path) -> None:
    """``target`` as another name of ``source`` (same file, no bytes copied); a copy where the file
    system has no hard links (correct, only not proportional)."""
    try:
        os.link(source, target)
    except OSError as exc:
        log.warning("Cannot hard-link %s (%s); copying it.", source, exc)
        shutil.copyfile(source, target)


def _tombstone(segments: list[Segment], removed: np.ndarray) -> None:
    """Mark the live vector of each ``removed`` PMID dead, in whichever segment holds it."""
    for segment in segments:
        here = removed[segment.holds(removed)]
        if len(here):
            segment.dead = np.union1d(segment.dead, here)


def _write_segment(
    staging: Path, dim: int, blocks: Iterable[tuple[np.ndarray, np.ndarray]], number: int
) -> Segment | None:
    index = VectorIndex.create(dim)
    for ids, vectors in blocks:
        if len(ids):
            index.add(np.asarray(ids, dtype=np.int64), vectors)
    if len(index) == 0:
        return None
    import faiss

    name = FIRST if number == 0 else f"vectors-{number:06d}.faiss"
    index.save(staging / name)
    ids = np.sort(faiss.vector_to_array(index.index.id_map).astype(np.int64))
    _save_array(staging / ids_file(name), ids)
    return Segment(name, ids, np.zeros(0, dtype=np.int64))


def plan_merges(segments: list[Segment]) -> list[list[Segment]]:
    """Groups of segments to rewrite as one each: a size class grown to ``MERGE_FACTOR``
    segments, and any segment more than ``MAX_DEAD`` dead (alone)."""
    groups: list[list[Segment]] = []
    rest = []
    for segment in segments:
        if len(segment.dead) > MAX_DEAD * len(segment.ids):
            groups.append([segment])
        else:
            rest.append(segment)
    by_level: dict[int, list[Segment]] = {}
    for segment in rest:
        by_level.setdefault(level(segment.live), []).append(segment)
    groups += [group for group in by_level.values() if len(group) >= MERGE_FACTOR]
    return groups


def _merge(staging: Path, dim: int, group: list[Segment], number: int) -> Segment | None:
    """The live vectors of ``group`` as one new segment; the group's files leave the staging folder."""
    log.info("Merging %d vector segments (%d live vectors).", len(group), sum(s.live for s in group))
    blocks = (
        block
        for segment in group
        for block in segment_batches(VectorIndex.load(staging / segment.name, mmap=True), segment.dead, _COPY_BATCH)
    )
    merged = _write_segment(staging, dim, blocks, number)
    for segment in group:
        (staging / segment.name).unlink()
        (staging / ids_file(segment.name)).unlink()
    return merged


def _write_tombstones(staging: Path, segments: list[Segment]) -> None:
    pairs = [np.stack([np.full(len(s.dead), s.number), s.dead], axis=1) for s in segments if len(s.dead)]
    if pairs:
        _save_array(staging / TOMBSTONES, np.concatenate(pairs))


def _save_array(path: Path, values: np.ndarray) -> None:
    np.save(path, np.ascontiguousarray(values, dtype=np.int64), allow_pickle=False)


def new_files(staging: Path) -> list[Path]:
    """Files of a staging folder written by this ingest (not hard links to the live generation)."""
    return [p for p in staging.iterdir() if p.is_file() and p.stat().st_nlink == 1]


def open_generation(generation: Path) -> SegmentedVectors:
    """The live vectors of a committed (or staged) generation folder, as its manifest lists them."""
    from index.manifest import Manifest

    manifest = Manifest.load(generation / "manifest.json")
    return SegmentedVectors.open(generation, manifest.segments, manifest.dim)
