"""GGUF models through llama.cpp (``llama-cpp-python``): the CPU backend.

llama.cpp runs quantised GGUF weights without dequantising them, so on a CPU it loads in a second
and decodes several times faster than transformers with the same file (BENCHMARKS.md). The prompt
is rendered here, with the GGUF's own chat template (through llama-cpp-python's Jinja formatter)
or the preset's completion format, and tokenised once, so what is counted is exactly what the
model reads.

Three things make it fast on two shared cores (measured in BENCHMARKS.md, "Answer latency"):

- The fixed start of every prompt (system prompt and worked example, ``prompts.prefix_messages``)
  is evaluated once (``warm``) and its KV cache restored before each answer, so a question only
  pays for its own sources and words.
- Prompt evaluation uses every core; decoding, which synchronises the threads after every small
  matrix product, uses half of them: on 2 cores one decoding thread is nearly as fast as two when
  idle and 2-3x faster when another job holds a core.
- OpenMP worker threads sleep instead of spinning while they wait (``OMP_WAIT_POLICY=PASSIVE``,
  set before llama.cpp loads unless the user set it): spinning threads steal the cores another
  job (an ingest, another chat) is using, and a spinning barrier waits for a thread that is not
  running.

One ``Llama`` holds one context, so answers run one at a time (``exclusive``); the app queues
the others. ``pip install -r requirements.txt`` builds it from source (``requirements-llamacpp.txt``,
portable ``GGML_NATIVE=OFF``: the native build can crash at inference on some CPUs).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

from chatbot.context import DEFAULT_CONTEXT
from chatbot.formats import merge_system
from chatbot.generate import GeneratorUnavailable, completion_format
from chatbot.presets import GENERIC, ModelPreset

MAX_CONTEXT = 16384  # the KV cache is allocated up front: a 128k window would take tens of GB
INSTALL = "pip install -r requirements-llamacpp.txt (compiles llama.cpp portably, GGML_NATIVE=OFF: ~5 min on 2 cores)"
PROBES = ("What is A?", "Why is B so?")  # two user turns whose common rendered start is the fixed prefix


def usable_cores() -> int:
    """Cores this process may run on (a container or ``taskset`` may allow fewer than the machine has)."""
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except AttributeError:  # not Linux
        return max(os.cpu_count() or 1, 1)


def thread_counts(cores: int) -> tuple[int, int]:
    """(decoding threads, prompt threads): prompt evaluation is one large batch and scales with cores."""
    return max(cores // 2, 1), cores


def import_llama_cpp():
    """llama_cpp, with OpenMP told to sleep rather than spin (read once, when the library loads)."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    try:
        import llama_cpp
    except ImportError as exc:
        raise GeneratorUnavailable(f"the llama.cpp backend needs llama-cpp-python: {INSTALL}") from exc
    return llama_cpp


class LlamaCppGenerator:
    exclusive = True  # one context: concurrent chats wait for each other (webui.models.OneAtATime)

    def __init__(
        self, path: Path, *, preset: ModelPreset = GENERIC, context_window: int = 0, threads: int | None = None
    ) -> None:
        llama_cpp = import_llama_cpp()
        self.name = Path(path).stem
        self.preset = preset
        n_ctx = context_window or min(preset.context_window or DEFAULT_CONTEXT, MAX_CONTEXT)
        decode, prompt = thread_counts(threads or usable_cores())
        self.llm = llama_cpp.Llama(
            model_path=str(path), n_ctx=n_ctx, n_threads=decode, n_threads_batch=prompt, seed=0, verbose=False
        )
        metadata = self.llm.metadata
        trained = int(metadata.get(f"{metadata.get('general.architecture')}.context_length", self.llm.n_ctx()))
        self.context_window = min(self.llm.n_ctx(), trained)
        self.template = metadata.get("tokenizer.chat_template")
        self.format = completion_format(preset, has_template=bool(self.template))
        self._prefix: list[int] = []  # tokens of the fixed prompt start whose KV state is kept
        self._prefix_state = None
        self._lock = threading.Lock()

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

    def warm(self, prefix: Sequence[dict[str, str]]) -> int:
        """Evaluate the prompt start every answer shares (``prefix`` messages) now, and keep its state.

        Returns the number of prefix tokens kept. The prefix is what two renders with different
        user turns after ``prefix`` have in common, so it ends exactly where the question's part begins.
        """
        first, second = (self._tokens(self.render([*prefix, {"role": "user", "content": p}])) for p in PROBES)
        common = self.llm.longest_token_prefix(first, second)
        if first[:common] == self._prefix:
            return common  # already kept
        with self._lock:
            self.llm.reset()
            self.llm.eval(first[:common])
            self._prefix, self._prefix_state = first[:common], self.llm.save_state()
        return common

    def _restore_prefix(self, tokens: list[int]) -> None:
        """Put the kept prefix state back when another prompt has overwritten it since."""
        n = len(self._prefix)
        if not n or tokens[:n] != self._prefix:
            return
        if self.llm.longest_token_prefix(self.llm._input_ids.tolist(), tokens) < n:
            self.llm.load_state(self._prefix_state)

    def stream(
        self,
        messages: Sequence[dict[str, str]],
        *,
        max_new_tokens: int = 320,
        temperature: float = 0.0,
        stop: threading.Event | None = None,
    ) -> Iterator[str]:
        tokens = self._tokens(self.render(messages))  # the rendered prompt already holds any BOS token
        with self._lock:  # released when the stream ends or is closed (Stop)
            self._restore_prefix(tokens)
            chunks = self.llm.create_completion(
                tokens,
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
