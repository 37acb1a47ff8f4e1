"""The same sentence encoder run by ONNX Runtime, in fp32 or with int8 weights: 2-3x faster on a CPU.

On a CPU the encoder is the wall of an ingest (everything else costs ~5% on top, BENCHMARKS.md).
ONNX Runtime with int8 weights embeds the same texts 2-3x as fast as PyTorch fp32 with
vectors that stay within a cosine of ~0.995 of the fp32 ones and the same retrieval quality
(measured on MiniLM: BENCHMARKS.md, "Ingestion speed").

How: the sentence-transformers model is loaded as usual (remote code never trusted), its
transformer is exported once with ``torch.onnx.export`` (the dynamo exporter, dynamic batch and
sequence axes, output ``last_hidden_state``), and for ``onnx-int8`` quantised with ONNX Runtime's
``quantize_dynamic`` (int8 weights per output channel, activations quantised on the fly; per-tensor
weights drift to a cosine of ~0.94 and are not used). The model's own fast tokenizer and its
pooling (mean or [CLS], read from its ``Pooling`` module) are applied around the ONNX graph, then
L2 normalisation, exactly as ``SentenceTransformer.encode(normalize_embeddings=True)`` does.
Models with other modules (Dense layers, other poolings) are refused rather than approximated.

Why not sentence-transformers' own ``backend="onnx"``/``"openvino"``: they go through Hugging
Face ``optimum`` (``optimum[onnxruntime]``, ``optimum-onnx``, ``optimum-intel``), whose releases
require ``transformers<4.58`` or a different torch than the versions this project pins
(``requirements.txt``), so they cannot be installed alongside it. ``onnxruntime``, ``onnx`` and
``onnxscript`` (needed by the exporter) have no such constraint.

Cache: the exported (and quantised) model, its tokenizer and ``encoder.json`` (pooling, limits)
live in ``~/.cache/pubmed-rag/onnx/<model>-<key>/`` (``$XDG_CACHE_HOME`` is honoured), where the key
hashes the model name and folder (with its files' sizes and times), the token limit, the pooling,
the backend and the onnxruntime and torch versions; a change to any of them exports again. Export happens once per
key (about 10-30 s for MiniLM, logged), into a temporary folder renamed into place, so an
interrupted or concurrent export never leaves a half-written model. Delete the folder to reclaim it.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import re
import shutil
import tempfile
import time
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

ONNX_BACKENDS = ("onnx", "onnx-int8")
FORMAT = 1  # bump when the cached files change meaning
MODEL_FILE = "model.onnx"
SETTINGS_FILE = "encoder.json"
INPUTS = ("input_ids", "attention_mask", "token_type_ids")
POOLINGS = ("mean", "cls")


class OnnxExportError(RuntimeError):
    """The model cannot be exported or run by ONNX Runtime (missing package, unsupported modules)."""


def default_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "pubmed-rag" / "onnx"


class OnnxEncoder:
    """A sentence-transformers model's vectors computed by ONNX Runtime from a cached export."""

    def __init__(self, folder: Path, *, name: str, backend: str, batch_size: int = 32, threads: int = 0) -> None:
        import onnxruntime
        from transformers import AutoTokenizer

        settings = json.loads((folder / SETTINGS_FILE).read_text(encoding="utf-8"))
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = max(threads, 0)  # 0: ONNX Runtime uses every physical core
        # Idle worker threads sleep instead of spinning: the ingest's reader thread (and anything else
        # on the machine) needs those cores between encoder calls (measured faster on 2 shared cores).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = onnxruntime.InferenceSession(
            str(folder / MODEL_FILE), options, providers=["CPUExecutionProvider"]
        )
        self.tokenizer = AutoTokenizer.from_pretrained(str(folder))
        self.max_seq_length = int(settings["max_seq_length"])
        self.name, self.backend, self.dim = name, backend, int(settings["dim"])
        self.batch_size = batch_size
        self._pooling, self._lower = settings["pooling"], bool(settings["do_lower_case"])
        self._inputs = [i.name for i in self.session.get_inputs()]

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        texts = [t.lower() for t in texts] if self._lower else list(texts)
        order = np.argsort([-len(t) for t in texts], kind="stable")  # similar lengths share a batch
        vectors = np.zeros((len(texts), self.dim), dtype=np.float32)
        for start in range(0, len(texts), self.batch_size):
            rows = order[start : start + self.batch_size]
            vectors[rows] = self._encode_batch([texts[r] for r in rows])
        return vectors

    def _encode_batch(self, texts: list[str]) -> np.ndarray:
        batch = self.tokenizer(
            texts, padding=True, truncation=True, max_length=self.max_seq_length, return_tensors="np"
        )
        hidden = self.session.run(None, {name: batch[name].astype(np.int64) for name in self._inputs})[0]
        if self._pooling == "cls":
            pooled = hidden[:, 0]
        else:
            mask = batch["attention_mask"][..., None].astype(np.float32)
            pooled = (hidden * mask).sum(axis=1) / np.maximum(mask.sum(axis=1), 1e-9)
        return pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)


def load_onnx_encoder(
    path: str,
    *,
    name: str,
    backend: str,
    max_seq_length: int = 256,
    batch_size: int = 32,
    cls_pooling: bool = False,
    threads: int = 0,
    cache_dir: Path | None = None,
) -> OnnxEncoder:
    """The ONNX encoder of the sentence-transformers model at ``path``, exported on first use."""
    if backend not in ONNX_BACKENDS:
        raise ValueError(f"unknown ONNX backend {backend!r}; expected one of {', '.join(ONNX_BACKENDS)}")
    try:
        import onnxruntime
    except ImportError as exc:
        raise OnnxExportError(f"encoder backend {backend} needs onnxruntime (pip install -r requirements.txt)") from exc
    key = cache_key(path, name, max_seq_length, backend, onnxruntime.__version__, cls_pooling=cls_pooling)
    folder = (cache_dir or default_cache_dir()) / key
    if not (folder / SETTINGS_FILE).exists():
        export(path, folder, name=name, backend=backend, max_seq_length=max_seq_length, cls_pooling=cls_pooling)
    return OnnxEncoder(folder, name=name, backend=backend, batch_size=batch_size, threads=threads)


def cache_key(
    path: str, name: str, max_seq_length: int, backend: str, ort_version: str, *, cls_pooling: bool = False
) -> str:
    """``<model>-<hash>``: everything the exported file depends on."""
    import torch

    files = sorted(Path(path).rglob("*")) if Path(path).is_dir() else []
    stamps = [(str(f.relative_to(path)), f.stat().st_size, f.stat().st_mtime_ns) for f in files if f.is_file()]
    parts = [FORMAT, name, str(Path(path).resolve()), stamps, max_seq_length, backend, cls_pooling]
    parts += [ort_version, torch.__version__]
    digest = hashlib.sha256(json.dumps(parts).encode("utf-8")).hexdigest()[:16]
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", name.rstrip("/").rsplit("/", 1)[-1])[:48]
    return f"{slug}-{backend}-{digest}"


def export(path: str, folder: Path, *, name: str, backend: str, max_seq_length: int, cls_pooling: bool) -> None:
    """Export (and for int8 quantise) the model into ``folder``, atomically."""
    from index.encoder import SentenceTransformerEncoder

    start = time.perf_counter()
    log.warning("Exporting encoder %s to ONNX (%s), once; cached in %s", name, backend, folder)
    encoder = SentenceTransformerEncoder(path, name=name, max_seq_length=max_seq_length, cls_pooling=cls_pooling)
    transformer, pooling = _check_modules(encoder.model)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    staging.chmod(0o755)  # mkdtemp's 0700 would hide a shared cache from other users
    try:
        tokenizer = transformer.tokenizer
        inputs = [n for n in INPUTS if n in tokenizer.model_input_names]
        fp32 = staging / ("fp32.onnx" if backend == "onnx-int8" else MODEL_FILE)
        _export_graph(transformer.auto_model, tokenizer, inputs, fp32)
        if backend == "onnx-int8":
            _quantize(fp32, staging / MODEL_FILE)
            fp32.unlink()
        tokenizer.save_pretrained(str(staging))
        settings = {
            "name": name,
            "backend": backend,
            "dim": encoder.dim,
            "pooling": pooling,
            "max_seq_length": int(encoder.model.max_seq_length),
            "do_lower_case": bool(getattr(transformer, "do_lower_case", False)),
            "inputs": inputs,
        }
        (staging / SETTINGS_FILE).write_text(json.dumps(settings, indent=2) + "\n", encoding="utf-8")
        try:
            staging.rename(folder)
        except OSError:  # another process exported the same key first: use theirs
            if not (folder / SETTINGS_FILE).exists():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.warning("Exported %s (%s) in %.1f s", name, backend, time.perf_counter() - start)


def _check_modules(model: object) -> tuple[object, str]:
    """The Transformer module and pooling mode of a Transformer + Pooling (+ Normalize) model."""
    modules = list(model)  # type: ignore[call-overload]
    kinds = [type(m).__name__ for m in modules]
    if kinds[:2] != ["Transformer", "Pooling"] or any(k != "Normalize" for k in kinds[2:]):
        raise OnnxExportError(f"ONNX export supports Transformer + Pooling (+ Normalize) models, not {kinds}")
    pooling = str(modules[1].get_config_dict().get("pooling_mode", ""))
    if pooling not in POOLINGS:
        raise OnnxExportError(f"ONNX export supports {' or '.join(POOLINGS)} pooling, not {pooling!r}")
    return modules[0], pooling


def _export_graph(model: object, tokenizer: object, inputs: list[str], out: Path) -> None:
    import torch

    class LastHiddenState(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(
            self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None = None
        ) -> torch.Tensor:
            extra = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
            return self.inner(input_ids=input_ids, attention_mask=attention_mask, **extra).last_hidden_state

    # Two texts of different lengths, so that neither axis is specialised to the example's size.
    example = tokenizer(["an example", "a slightly longer example text"], padding=True, return_tensors="pt")  # type: ignore[operator]
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("seq")
    try:
        # The exporter prints its progress and warns about its own internals: neither is actionable here.
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings(), _quiet("torch.onnx"):
            warnings.simplefilter("ignore")
            torch.onnx.export(
                LastHiddenState(model).eval(),  # type: ignore[arg-type]
                tuple(example[n] for n in inputs),
                str(out),
                input_names=inputs,
                output_names=["last_hidden_state"],
                dynamic_shapes={n: {0: batch, 1: seq} for n in inputs},
                dynamo=True,
                external_data=False,
                verbose=False,
            )
    except Exception as exc:  # the exporter raises many types; all mean the same thing here
        first_line = next((line for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        raise OnnxExportError(f"torch.onnx.export failed: {first_line}") from exc


def _quantize(fp32: Path, out: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with _quiet(""):  # quantize_dynamic logs a generic pre-processing hint on the root logger
        quantize_dynamic(str(fp32), str(out), per_channel=True, weight_type=QuantType.QInt8)


@contextlib.contextmanager
def _quiet(name: str) -> Iterator[None]:
    """Only errors from logger ``name`` ("" = root) while in the block."""
    logger = logging.getLogger(name or None)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)
