"""Which encoder an ingest uses, on which device, and how long abstracts reach it.

An existing index keeps the encoder named in its manifest (never a fallback, so its vectors stay
comparable); only a new index may fall back to the packaged MiniLM. ``--workers`` sets the CPU
threads the encoder may use and ``--device`` where it runs (``auto``: a GPU when present).
Texts over the encoder's token limit are split into windows (``index/chunking.py``).
"""

from __future__ import annotations

from pathlib import Path

from config import Config
from index.chunking import long_text_encoder
from index.encoder import Encoder, load_encoder
from index.manifest import Manifest


def load_for_ingest(encoder: Encoder | None, manifest: Manifest | None, config: Config) -> Encoder:
    """The given encoder, or the manifest's / config's, wrapped for long texts."""
    if encoder is None:
        encoder = _load(manifest, config)
        check_same_encoder(manifest, encoder, config.index_dir)
    return long_text_encoder(encoder)


def encoder_identity(encoder: Encoder | None, manifest: Manifest | None, config: Config) -> str:
    """What a vector depends on besides its text: the encoder and its token limit."""
    name = encoder.name if encoder else manifest.encoder if manifest else config.encoder
    return f"{name}|max_seq_length={config.max_seq_length}"


def check_same_encoder(manifest: Manifest | None, encoder: Encoder, index_dir: Path) -> None:
    if manifest and (manifest.encoder != encoder.name or manifest.dim != encoder.dim):
        raise ValueError(
            f"{index_dir} was built with {manifest.encoder} ({manifest.dim}-d), not {encoder.name} "
            f"({encoder.dim}-d); use a new --index-dir to change encoders"
        )


def _load(manifest: Manifest | None, config: Config) -> Encoder:
    import torch

    if config.workers > 0:
        torch.set_num_threads(config.workers)
    model = manifest.encoder if manifest else config.encoder
    encoder = load_encoder(
        model, fallback=manifest is None, max_seq_length=config.max_seq_length, batch_size=config.batch_size
    )
    if config.device not in ("", "auto") and hasattr(encoder, "model"):
        encoder.model.to(config.device)
    return encoder
