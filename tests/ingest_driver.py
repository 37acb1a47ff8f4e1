"""Run the real ``python -m ingest`` command line with a deterministic, deliberately slow encoder.

``tests/test_kill.py`` kills this process with SIGKILL at chosen moments. Everything is the real
CLI code (argument parsing, reading, staging, resume cache, commit) except two things, both only
to make the moments catchable: the encoder is the hashing encoder of ``conftest.py`` (exact,
deterministic vectors; no model to load) sleeping ``ENCODE_DELAY_S`` per call, each vector segment
written (``index/segments.py``: the new one, then any merge) and each metadata merge
(``index/meta_segments.py``) and each BM25 segment's arrays (``index/bm25_segments.py``, before its
``.json``) is followed by ``SEGMENT_DELAY_S``,
and each fsync of a commit waits ``FSYNC_DELAY_S`` first, so these steps take long enough to be
interrupted.

    python -m tests.ingest_driver SOURCE... --index-dir DIR [ingest flags]
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence

import numpy as np

import index.bm25_segments
import index.encoding
import index.meta_segments
import index.segments
import index.storage
from tests.conftest import HashingEncoder

ENCODE_DELAY_S = 0.05
FSYNC_DELAY_S = 0.15
SEGMENT_DELAY_S = 0.3


class SlowHashingEncoder(HashingEncoder):
    def encode(self, texts: Sequence[str]) -> np.ndarray:
        time.sleep(ENCODE_DELAY_S)
        return super().encode(texts)


def main() -> int:
    real_fsync = index.storage._fsync

    def slow_fsync(path) -> None:
        time.sleep(FSYNC_DELAY_S)
        real_fsync(path)

    real_write_segment = index.segments._write_segment

    def slow_write_segment(*args, **kwargs):
        segment = real_write_segment(*args, **kwargs)
        time.sleep(SEGMENT_DELAY_S)
        return segment

    real_meta_merge = index.meta_segments._merge

    def slow_meta_merge(*args, **kwargs):
        segment = real_meta_merge(*args, **kwargs)
        time.sleep(SEGMENT_DELAY_S)
        return segment

    real_save_vocabulary = index.bm25_segments._save_vocabulary

    def slow_save_vocabulary(*args, **kwargs) -> None:  # a BM25 segment's files, all but its .json
        real_save_vocabulary(*args, **kwargs)
        time.sleep(SEGMENT_DELAY_S)

    index.encoding._load = lambda manifest, config: SlowHashingEncoder()
    index.bm25_segments._save_vocabulary = slow_save_vocabulary
    index.segments._write_segment = slow_write_segment
    index.meta_segments._merge = slow_meta_merge
    index.storage._fsync = slow_fsync
    from ingest.__main__ import main as cli

    return cli(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
