"""GGUF models through llama.cpp (``llama-cpp-python``, an optional extra).

llama.cpp runs quantised GGUF weights without dequantising them, so on a CPU it is much faster
than transformers with the same file (figures in BENCHMARKS.md). The prompt is rendered here,
with the GGUF's own chat template (through llama-cpp-python's Jinja formatter) or the preset's
completion format, and tokenised once, so what is counted is exactly what the model reads.

Install: ``CMAKE_ARGS="-DGGML_NATIVE=OFF" pip install -r requirements-llamacpp.txt`` (the
default native build can crash at inference on some CPUs).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

from chatbot.context import DEFAULT_CONTEXT
from chatbot.formats import merge_system
from chatbot.generate import GeneratorUnavailable, completion_format
from chatbot.presets import GENERIC, ModelPreset

MAX_CONTEXT = 16384  # the KV cache is allocated up front: a 128k window would take tens of GB
INSTALL = 'CMAKE_ARGS="-DGGML_NATIVE=OFF" pip install -r requirements-llamacpp.txt'


class LlamaCppGenerator:
    def __init__(
        self, path: Path, *, preset: ModelPreset = GENERIC, context_window: int = 0, threads: int | None = None
    ) -> None:
        try:
            from llama_cpp import Llama
        except ImportError as exc:
            raise GeneratorUnavailable(f"the llama.cpp backend needs llama-cpp-python: {INSTALL}") from exc

        self.name = Path(path).stem
        self.preset = preset
        n_ctx = context_window or min(preset.context_window or DEFAULT_CONTEXT, MAX_CONTEXT)
        # Threads: llama-cpp-python's default (half the logical CPUs) unless given. Its workers spin while
        # they wait, so more threads than free cores makes decoding many times slower, not faster.
        self.llm = Llama(
            model_path=str(path), n_ctx=n_ctx, **({"n_threads": threads} if threads else {}), seed=0, verbose=False
        )
        metadata = self.llm.metadata
        trained = int(metadata.get(f"{metadata.get('general.architecture')}.context_length", self.llm.n_ctx()))
        self.context_window = min(self.llm.n_ctx(), trained)
        self.template = metadata.get("tokenizer.chat_template")
        self.format = completion_format(preset, has_template=bool(self.template))

    @property
    def stop_strings(self) -> tuple[str, ...]:
        return self.format.stop if self.format else ()

    def _special(self, token: int) -> str:
        return self.llm.detokenize([token], special=True).decode("utf-8", errors="replace") if token >= 0 else ""

    def render(self, messages: Sequence[dict[str, str]]) -> str:
        bos = self._special(self.llm.token_bos())
        if self.format is not None:
            return self.format.render(messages, bos=bos)
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        formatter = Jinja2ChatFormatter(self.template, eos_token=self._special(self.llm.token_eos()), bos_token=bos)
        turns = list(messages) if self.preset.system_role else merge_system(messages)
        return formatter(messages=turns).prompt

    def _tokens(self, text: str) -> list[int]:
        return self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)

    def count_tokens(self, text: str) -> int:
        return len(self._tokens(text))

    def stream(
        self,
        messages: Sequence[dict[str, str]],
        *,
        max_new_tokens: int = 320,
        temperature: float = 0.0,
        stop: threading.Event | None = None,
    ) -> Iterator[str]:
        chunks = self.llm.create_completion(
            self._tokens(self.render(messages)),  # the rendered prompt already holds any BOS token
            max_tokens=max_new_tokens,
            temperature=temperature,  # 0 = greedy
            top_p=self.preset.top_p,
            repeat_penalty=self.preset.repetition_penalty,
            stop=list(self.stop_strings),
            stream=True,
        )
        try:
            for chunk in chunks:
                if stop is not None and stop.is_set():
                    return
                text = chunk["choices"][0]["text"]
                if text:
                    yield text
        finally:
            chunks.close()  # ends llama.cpp's decoding loop
