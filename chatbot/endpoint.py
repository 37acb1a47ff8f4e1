"""A model behind an OpenAI-compatible HTTP server: vLLM, TGI, Ollama, llama.cpp's server.

This is how the app answers with a model too big for the machine it runs on. Chat-template
models go to ``/v1/chat/completions`` (the server applies the template); models with a
completion format (MedAlpaca, PMC-LLaMA, ChatDoctor, Meditron) get the prompt rendered here
and go to ``/v1/completions`` with the format's stop strings. Responses are streamed as
server-sent events; setting ``stop`` closes the connection, which ends generation server-side.

Only standard request fields are sent (strict servers reject unknown ones), so a preset's
repetition penalty is left to the server. The server's tokenizer is not visible from here:
token counts are a conservative estimate from the text length.
"""

from __future__ import annotations

import json
import math
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence

from chatbot.context import CHARS_PER_TOKEN, DEFAULT_CONTEXT
from chatbot.formats import CHAT_TEMPLATE, FORMATS, merge_system, trim_stream
from chatbot.generate import GeneratorUnavailable
from chatbot.presets import GENERIC, ModelPreset

TIMEOUT_S = 120.0  # per socket read: a big model's first token can take a while


class EndpointGenerator:
    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        preset: ModelPreset = GENERIC,
        api_key: str = "",
        context_window: int = 0,
        timeout: float = TIMEOUT_S,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        if not self.base_url.endswith("/v1"):
            self.base_url += "/v1"
        self.name = model
        self.preset = preset
        self.api_key = api_key
        self.timeout = timeout
        self.context_window = context_window or preset.context_window or DEFAULT_CONTEXT
        self.format = FORMATS[preset.prompt_format] if preset.prompt_format != CHAT_TEMPLATE else None

    def count_tokens(self, text: str) -> int:
        return math.ceil(len(text) / CHARS_PER_TOKEN)

    def request_body(
        self, messages: Sequence[dict[str, str]], *, max_new_tokens: int, temperature: float
    ) -> tuple[str, dict[str, object]]:
        """The path and JSON body of the streaming request for ``messages``."""
        body: dict[str, object] = {"model": self.name, "max_tokens": max_new_tokens, "temperature": temperature}
        if temperature > 0:
            body["top_p"] = self.preset.top_p
        body["stream"] = True
        if self.format is not None:
            return "/completions", {**body, "prompt": self.format.render(messages), "stop": list(self.format.stop)}
        turns = list(messages) if self.preset.system_role else merge_system(messages)
        return "/chat/completions", {**body, "messages": turns}

    def stream(
        self,
        messages: Sequence[dict[str, str]],
        *,
        max_new_tokens: int = 320,
        temperature: float = 0.0,
        stop: threading.Event | None = None,
    ) -> Iterator[str]:
        path, body = self.request_body(messages, max_new_tokens=max_new_tokens, temperature=temperature)
        pieces = self._events(self.base_url + path, body, stop)
        yield from trim_stream(pieces, self.format.stop if self.format else ())

    def _events(self, url: str, body: dict[str, object], stop: threading.Event | None) -> Iterator[str]:
        headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers, method="POST")
        try:
            response = urllib.request.urlopen(request, timeout=self.timeout)
        except urllib.error.HTTPError as exc:
            detail = exc.read(500).decode("utf-8", errors="replace")
            raise GeneratorUnavailable(f"{url} answered HTTP {exc.code}: {detail}") from exc
        except (urllib.error.URLError, TimeoutError) as exc:
            raise GeneratorUnavailable(f"cannot reach the endpoint {url}: {exc}") from exc
        with response:  # closing the connection is how a client cancels a streamed completion
            for line in response:
                if stop is not None and stop.is_set():
                    return
                text = self._piece(line.strip())
                if text is None:
                    return
                if text:
                    yield text

    def _piece(self, line: bytes) -> str | None:
        """The text in one SSE line; '' for other lines, None at ``[DONE]``."""
        if not line.startswith(b"data:"):
            return ""
        data = line[len(b"data:") :].strip()
        if data == b"[DONE]":
            return None
        event = json.loads(data)
        if event.get("error"):
            raise GeneratorUnavailable(f"the endpoint reported an error: {event['error']}")
        choice = (event.get("choices") or [{}])[0]
        if self.format is not None:
            return choice.get("text") or ""
        return (choice.get("delta") or {}).get("content") or ""
