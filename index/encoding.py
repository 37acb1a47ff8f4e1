"""Which encoder an ingest uses, run by what, on which device, and how long abstracts reach it.

An existing index keeps the encoder and backend named in its manifest (never a fallback, so its
vectors stay comparable); only a new index may fall back to the packaged MiniLM, or from an ONNX
backend to torch. ``--encoder-backend auto`` (the default) picks what was measured fastest at
equal retrieval quality on this kind of processor: ``onnx-int8`` on a CPU with int8 dot-product
instructions (VNNI: AVX512-VNNI, AVX-VNNI or AMX), ``torch`` on a CPU without them (ONNX
Runtime's int8 path is then no faster than float32 PyTorch) and when a GPU is present (int8
ONNX Runtime is a CPU path). The choice is recorded in the manifest, and queries use it.
``--workers`` sets the CPU threads the encoder may use (torch's or ONNX
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

INT8_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")  # /proc/cpuinfo flags of int8 dot-product units


def cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_backend(flags: set[str] | None = None) -> str:
    """onnx-int8 where the CPU has int8 dot-product instructions (measured 2-3x torch there, recall@10
    within 1 point), else torch (on an AVX2-only CPU int8 ONNX ran no faster than float32 torch)."""
    flags = cpu_flags() if flags is None else flags
    return "onnx-int8" if flags & set(INT8_FLAGS) else "torch"


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
    return "torch" if _gpu(config.device) else cpu_backend()


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
    log.info(describe(encoder, config))
    return encoder


def describe(encoder: Encoder, config: Config) -> str:
    """One line that explains an ingest's speed from its own log: encoder, backend, threads, CPU."""
    import torch

    backend = getattr(encoder, "backend", "torch")
    threads = config.workers or (torch.get_num_threads() if backend == "torch" else _cores())
    int8 = sorted(cpu_flags() & set(INT8_FLAGS)) or ["no VNNI"]
    return f"Embedding with {encoder.name} on {backend} ({threads} threads; CPU int8 units: {', '.join(int8)})"


def _cores() -> int:
    import os

    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1
