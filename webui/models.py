"""The generators the app offers in its model menu: the one loaded at start plus ``config.models``.

Which models a deployment offers is the deployer's choice (``PUBMED_RAG_MODELS``), not the
visitor's: every model listed can end up in memory at once, because a model is loaded on its
first use and then kept (switching back and forth must not reload weights each time). Loading
happens under a lock, so two sessions asking for a new model at once load it once.

Gradio answers several chats at once, each in its own thread. A transformers model can generate
for several threads at the same time; a llama.cpp ``Llama`` object cannot (it holds one context),
so a generator that says it is ``exclusive`` (llama.cpp) is wrapped in ``OneAtATime``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace

from chatbot.generate import Generator, open_generator
from chatbot.presets import PRESETS
from config import DEFAULT_GENERATOR, Config

Opener = Callable[[Config], Generator]


def model_options(config: Config) -> list[str]:
    """The extra entries of ``config.models``: preset names or model ids, comma-separated."""
    return [m.strip() for m in config.models.split(",") if m.strip()]


def config_for(option: str, config: Config) -> Config:
    """The configuration that opens ``option``: a preset by name, anything else as ``--generator``."""
    if option in PRESETS:
        return replace(config, model=option, generator=DEFAULT_GENERATOR)  # the preset's own weights
    return replace(config, model="", generator=option)


class OneAtATime:
    """A generator whose streams run one after another (the others wait), for backends that cannot share."""

    def __init__(self, inner: Generator) -> None:
        self.inner = inner
        self.name = inner.name
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> object:  # context_window, count_tokens, ...: the inner generator's
        return getattr(self.inner, name)

    def stream(self, messages: Sequence[dict[str, str]], **options: object) -> Iterator[str]:
        with self._lock:  # released when the stream ends or is closed (Stop)
            yield from self.inner.stream(messages, **options)


class Models:
    def __init__(self, default: Generator, config: Config, *, opener: Opener = open_generator) -> None:
        self.default = default.name
        self.config = config
        self._opener = opener
        self._loaded: dict[str, Generator] = {default.name: self._shareable(default)}
        self._names = list(dict.fromkeys([default.name, *model_options(config)]))
        self._lock = threading.Lock()

    @property
    def names(self) -> list[str]:
        return list(self._names)

    def is_loaded(self, name: str) -> bool:
        return (name or self.default) in self._loaded

    def get(self, name: str = "") -> Generator:
        """The generator called ``name`` ("" = the default), loading it on first use."""
        name = name or self.default
        if name in self._loaded:
            return self._loaded[name]
        if name not in self._names:
            raise ValueError(f"model {name!r} is not offered here; choose one of: {', '.join(self._names)}")
        with self._lock:
            if name not in self._loaded:  # another session may have loaded it while this one waited
                self._loaded[name] = self._shareable(self._opener(config_for(name, self.config)))
        return self._loaded[name]

    def _shareable(self, generator: Generator) -> Generator:
        exclusive = getattr(generator, "exclusive", False) or self.config.backend == "llama.cpp"
        return OneAtATime(generator) if exclusive else generator

    def preload(self) -> None:
        """Load every offered model now (ZeroGPU: weights must be placed before any GPU call)."""
        for name in self._names:
            self.get(name)
