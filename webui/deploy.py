"""Deployment concerns: login, who may ingest, a prebuilt index from the Hub, ZeroGPU.

A public deployment (a Hugging Face Space binds 0.0.0.0) must not let anonymous visitors rewrite
its index, so the "Add abstracts" tab is on by default only when the app listens on the loopback
interface or asks for a login. A prebuilt index can be fetched from a Hugging Face dataset repo
(``owner/name[@revision]``) or storage bucket (``hf://buckets/owner/name[/prefix]``) instead of
being built at start: its root is an index directory as ``python -m ingest`` writes it
(``CURRENT`` and the generation it names; older generations are not downloaded). It is downloaded
next to the index, checked, and moved into place with ``CURRENT`` last, so an interrupted download
never leaves an index that loads wrong.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from config import Config
from index.storage import MANIFEST, IndexDir, IndexNotFound

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable)
# download(repo_or_bucket, revision, patterns, target_folder): fetch the matching files.
Download = Callable[[str, str | None, Sequence[str], Path], None]
BUCKET = "hf://buckets/"
INGEST_MODES = ("auto", "on", "off")
GPU_SECONDS = 120  # ZeroGPU time asked per chat turn: a 1.5B model answers in well under a minute on a GPU
_DOWNLOAD = ".download"


def parse_auth(value: str) -> list[tuple[str, str]] | None:
    """``user:password[,user2:password2]`` (from ``PUBMED_RAG_AUTH``) as Gradio's ``auth`` list."""
    if not value.strip():
        return None
    pairs = []
    for entry in value.split(","):
        user, _, password = entry.strip().partition(":")
        if not user or not password:
            raise ValueError("PUBMED_RAG_AUTH must look like user:password[,user2:password2]")
        pairs.append((user, password))
    return pairs


def is_loopback(host: str) -> bool:
    return host in ("localhost", "::1") or host.startswith("127.")


def ingest_enabled(config: Config) -> bool:
    """``allow_ingest``: on, off, or auto (on for a local app or one behind a login)."""
    mode = config.allow_ingest.lower()
    if mode not in INGEST_MODES:
        raise ValueError(f"allow_ingest={config.allow_ingest!r}: choose one of {', '.join(INGEST_MODES)}")
    if mode == "auto":
        return is_loopback(config.host) or bool(config.auth.strip())
    return mode == "on"


def fetch_prebuilt_index(config: Config, *, download: Download | None = None) -> bool:
    """Download ``config.index_repo`` into an empty index directory; True when it did."""
    if not config.index_repo or IndexDir(config.index_dir).current() is not None:
        return False
    repo, _, revision = config.index_repo.partition("@")
    download = download or _hub_download
    staging = config.index_dir / _DOWNLOAD
    shutil.rmtree(staging, ignore_errors=True)
    log.info("Downloading the prebuilt index from the dataset repo %s into %s.", config.index_repo, config.index_dir)
    download(repo, revision or None, ["CURRENT"], staging)
    generation = _generation_named(staging, repo)
    download(repo, revision or None, [f"{generation}/*"], staging)
    if not (staging / generation / MANIFEST).is_file():
        raise IndexNotFound(f"dataset {repo}: {generation}/{MANIFEST} is missing; upload the whole index directory")
    target = config.index_dir / generation
    shutil.rmtree(target, ignore_errors=True)
    os.rename(staging / generation, target)
    os.replace(staging / "CURRENT", config.index_dir / "CURRENT")  # last: the index is complete now
    shutil.rmtree(staging, ignore_errors=True)
    return True


def _generation_named(staging: Path, repo: str) -> str:
    pointer = staging / "CURRENT"
    if not pointer.is_file():
        raise IndexNotFound(f"dataset {repo} holds no index: no CURRENT file at its root")
    name = pointer.read_text(encoding="utf-8").strip()
    if not name.startswith("gen-") or "/" in name:
        raise IndexNotFound(f"dataset {repo}: CURRENT names {name!r}, not a generation folder")
    return name


def _hub_download(source: str, revision: str | None, patterns: Sequence[str], target: Path) -> None:
    """A dataset repo's or a bucket's files matching ``patterns`` (HF_TOKEN is used when set)."""
    from huggingface_hub import HfApi, snapshot_download

    if source.startswith(BUCKET):
        HfApi().sync_bucket(source, str(target), include=list(patterns), quiet=True)
    else:
        snapshot_download(
            source, repo_type="dataset", revision=revision, local_dir=target, allow_patterns=list(patterns)
        )


def on_gpu(fn: F, *, duration: int = GPU_SECONDS) -> F:
    """``spaces.GPU(fn)`` where the ``spaces`` package is installed (it is a no-op off ZeroGPU)."""
    try:
        import spaces
    except ImportError:
        return fn
    return spaces.GPU(duration=duration)(fn)


def zero_gpu() -> bool:
    """Running on a ZeroGPU Space? (``spaces`` must be imported before torch touches CUDA.)"""
    try:
        import spaces.config
    except ImportError:
        return False
    return bool(getattr(spaces.config.Config, "zero_gpu", False))
