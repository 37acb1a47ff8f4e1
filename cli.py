"""Shared command-line plumbing: logging that plays well with progress bars, and error exits."""

from __future__ import annotations

import logging
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
        return 130
