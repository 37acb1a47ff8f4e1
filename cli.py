"""Shared command-line plumbing: logging that plays well with progress bars, error exits, and how
the process's worker threads wait.

Every entry point (``app.py``, ``python -m ingest|index|chatbot``) imports this module before torch
or llama.cpp load their OpenMP runtimes, which read ``OMP_WAIT_POLICY`` once, at load. PASSIVE makes
an idle worker thread sleep instead of spinning: on 2 cores shared with another job (an ingest, a
second chat, a browser) spinning threads burn the very core the others need, and a parallel region
then waits for a thread that is not running. Measured (BENCHMARKS.md, "Answer latency"): with one
busy process beside it, reranking took 5.4 s instead of 8.8 s and decoding 2-3x less time; idle,
no slower. A value the user set is kept.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def setup_logging(quiet: bool = False) -> None:
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO, format="%(levelname)s: %(message)s")
    for noisy in ("httpx", "sentence_transformers", "transformers", "urllib3", "faiss"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def run_cli(main: Callable[[], int], expected: tuple[type[BaseException], ...]) -> int:
    """Run ``main``; expected failures print one clear line and exit non-zero, no traceback."""
    try:
        return main()
    except expected as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; the index was left as it was before this run", file=sys.stderr)
        _exit_now(130)
        return 130  # not reached; for callers that replace _exit_now


def _exit_now(status: int) -> None:
    """End the process at once, as a kill would, but with ``status`` (130: interrupted).

    A model runtime may still be working in a background thread (the ingest's encoder between two
    Ctrl-C's, a generator): the normal interpreter exit would destroy its C++ thread pool under it,
    and the C++ runtime aborts the process (``terminate called without an active exception``,
    SIGABRT). Everything written so far is crash-safe, exactly as after ``kill -9``.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
