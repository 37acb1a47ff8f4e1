"""Which encoder an ingest uses, run by what, on which device, and how long abstracts reach it.

An existing index keeps the encoder and backend named in its manifest (never a fallback, so its
vectors stay comparable); only a new index may fall back to the packaged MiniLM, or from an ONNX
backend to torch. ``--encoder-backend auto`` (the default) picks what was measured fastest at
equal retrieval quality: ``onnx-int8`` on a CPU, ``torch`` when a GPU is present (int8 ONNX
Runtime is a CPU path). ``--workers`` sets the CPU threads the encoder may use (torch's or ONNX
Runtime's) and ``--device`` where a torch encoder runs (``auto``: a GPU when present).
Texts over the encoder's token limit are split into windows (``index/chunking.py``).
"""

from __future__ import annotations

import logging
from pathlib import Path

from config import Config
from index.chunking import long_text_encoder
from index.encoder import Encoder, load_encoder
from index.manifest import Manifest

log = logging.getLogger(__name__)

CPU_BACKEND = "onnx-int8"  # fastest on a CPU with recall@10 within 1 point of fp32 (BENCHMARKS.md)


def load_for_ingest(encoder: Encoder | None, manifest: Manifest | None, config: Config) -> Encoder:
    """The given encoder, or the manifest's / config's, wrapped for long texts."""
    if encoder is None:
        encoder = _load(manifest, config)
        check_same_encoder(manifest, encoder, config.index_dir)
    return long_text_encoder(encoder)


def encoder_identity(encoder: Encoder | None, manifest: Manifest | None, config: Config) -> str:
    """What a vector depends on besides its text: the encoder, its backend and its token limit."""
    name = encoder.name if encoder else manifest.encoder if manifest else config.encoder
    backend = getattr(encoder, "backend", "torch") if encoder else ingest_backend(manifest, config)
    suffix = "" if backend == "torch" else f"|backend={backend}"  # torch: the identity of older caches
    return f"{name}|max_seq_length={config.max_seq_length}{suffix}"


def ingest_backend(manifest: Manifest | None, config: Config) -> str:
    """The manifest's backend for an existing index; else the configured one, ``auto`` resolved."""
    if manifest:
        return manifest.encoder_backend
    if config.encoder_backend != "auto":
        return config.encoder_backend
    return "torch" if _gpu(config.device) else CPU_BACKEND


def check_same_encoder(manifest: Manifest | None, encoder: Encoder, index_dir: Path) -> None:
    if not manifest:
        return
    backend = getattr(encoder, "backend", "torch")
    if (manifest.encoder, manifest.dim, manifest.encoder_backend) != (encoder.name, encoder.dim, backend):
        raise ValueError(
            f"{index_dir} was built with {manifest.encoder} ({manifest.dim}-d, {manifest.encoder_backend}), "
            f"not {encoder.name} ({encoder.dim}-d, {backend}); use a new --index-dir to change encoders"
        )


def _gpu(device: str) -> bool:
    if device not in ("", "auto"):
        return device != "cpu"
    import torch

    return torch.cuda.is_available()


def _load(manifest: Manifest | None, config: Config) -> Encoder:
    import torch

    backend = ingest_backend(manifest, config)
    if config.workers > 0:
        torch.set_num_threads(config.workers)
    model = manifest.encoder if manifest else config.encoder
    encoder = load_encoder(
        model,
        fallback=manifest is None,
        max_seq_length=config.max_seq_length,
        batch_size=config.batch_size,
        backend=backend,
        threads=config.workers,
    )
    if config.device not in ("", "auto") and hasattr(encoder, "model"):
        encoder.model.to(config.device)
    elif config.device not in ("", "auto", "cpu"):
        log.warning("The %s encoder backend runs on the CPU; --device %s is ignored", backend, config.device)
    return encoder
