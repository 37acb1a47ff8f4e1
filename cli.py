"""Shared command-line plumbing: logging that plays well with progress bars, and error exits."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable


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
