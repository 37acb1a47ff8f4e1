"""Offline-first model resolution.

Loading a Hub id with no network makes huggingface_hub retry for over a minute before failing.
So: a local folder is used as is, a cached snapshot is used without touching the network, and
only then is the Hub probed (one short TCP connect) before any download is attempted.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from urllib.parse import urlparse

PROBE_TIMEOUT_S = 3.0


def resolve_model(model_id: str) -> str | None:
    """A local path or loadable id for ``model_id``; None when it can only come from an unreachable Hub."""
    if Path(model_id).expanduser().exists():
        return str(Path(model_id).expanduser())
    cached = cached_snapshot(model_id)
    if cached:
        return cached
    return model_id if hub_reachable() else None


def cached_snapshot(model_id: str) -> str | None:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

    try:
        return snapshot_download(model_id, local_files_only=True)
    except (LocalEntryNotFoundError, HFValidationError, OSError, ValueError):
        return None


def hub_reachable(timeout: float = PROBE_TIMEOUT_S) -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return False
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        with socket.create_connection((url.hostname or "", url.port or 443), timeout=timeout):
            return True
    except OSError:
        return False
