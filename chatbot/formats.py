"""Prompt formats: how a list of chat messages becomes the text a particular model was trained on.

Chat-tuned models ship a chat template with their tokenizer, and each backend renders it with
its own library (``CHAT_TEMPLATE``). Older instruction-tuned medical models (MedAlpaca,
PMC-LLaMA, ChatDoctor, Meditron) have no template: their authors published a plain-text prompt
layout, reproduced here as a ``CompletionFormat`` with the stop strings that end a turn.

``StopTrimmer`` cuts a stream of text at the first stop string without ever emitting a partial
one, whichever backend produced the text.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

Messages = Sequence[dict[str, str]]

CHAT_TEMPLATE = "chat_template"  # the tokenizer's own template (or the GGUF's), rendered by the backend


@dataclass(frozen=True)
class CompletionFormat:
    """A prompt layout for models without a chat template: ``system`` then user/assistant turns."""

    name: str
    system: str  # "{system}" is replaced by the system prompt
    user: str  # "{content}" is replaced by the user message
    assistant: str  # "{content}" is replaced by an assistant reply; the empty reply ends the prompt
    stop: tuple[str, ...]  # text that marks the start of the next turn
    source: str  # where the layout is documented
    end: str = "\n\n"  # closes an assistant reply before the next turn

    def render(self, messages: Messages, *, bos: str = "") -> str:
        """The prompt text, ending where the model should start its reply."""
        system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
        parts = [bos, self.system.format(system=system)]
        for message in messages:
            if message["role"] == "user":
                parts.append(self.user.format(content=message["content"]))
            elif message["role"] == "assistant":
                parts.append(self.assistant.format(content=message["content"]) + self.end)
        parts.append(self.assistant.format(content=""))
        return "".join(parts)


FORMATS: dict[str, CompletionFormat] = {
    f.name: f
    for f in (
        CompletionFormat(
            name="medalpaca",
            system="{system}\n\n",
            user="Context: {content}\n\n",
            assistant="Answer: {content}",
            stop=("\n\nContext:", "\n\nQuestion:"),
            source="medalpaca/medalpaca-7b model card: f'Context: {context}\\n\\nQuestion: {question}\\n\\nAnswer: '",
        ),
        CompletionFormat(
            name="alpaca",
            system=(
                "Below is an instruction that describes a task, paired with an input that provides further "
                "context. Write a response that appropriately completes the request.\n\n### Instruction:\n{system}\n\n"
            ),
            user="### Input:\n{content}\n\n",
            assistant="### Response:\n{content}",
            stop=("### Instruction:", "### Input:", "### Response:"),
            source="Stanford Alpaca prompt, used by PMC-LLaMA (axiong/PMC_LLaMA_13B model card)",
        ),
        CompletionFormat(
            name="chatdoctor",
            system="{system}\n\n",
            user="Patient: {content}\n\n",
            assistant="ChatDoctor: {content}",
            stop=("Patient:", "\nChatDoctor:"),
            source="Kent0n-Li/ChatDoctor chat.py ('Patient: ' / 'ChatDoctor: ' turns after an instruction)",
        ),
        CompletionFormat(
            name="meditron",
            system="<|im_start|> system\n{system}<|im_end|>\n",
            user="<|im_start|> user\n{content}<|im_end|>\n",
            assistant="<|im_start|> assistant\n{content}",
            stop=("<|im_end|>", "<|im_start|>", "###"),
            source="epfLLM/meditron deployment/README.md, conversation template 'meditron'",
            end="<|im_end|>\n",
        ),
        CompletionFormat(
            name="plain",
            system="{system}\n\n",
            user="User: {content}\n\n",
            assistant="Assistant: {content}",
            stop=("\nUser:", "\nSystem:"),
            source="fallback for a model with neither a chat template nor a known layout",
        ),
    )
}


def merge_system(messages: Messages) -> list[dict[str, str]]:
    """Fold the system prompt into the first user turn, for templates that reject a system role."""
    system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
    rest = [dict(m) for m in messages if m["role"] != "system"]
    if system and rest and rest[0]["role"] == "user":
        rest[0]["content"] = f"{system}\n\n{rest[0]['content']}"
    elif system:
        rest.insert(0, {"role": "user", "content": system})
    return rest


class StopTrimmer:
    """Pass text through until a stop string appears; hold back text that may begin one."""

    def __init__(self, stop: Iterable[str]) -> None:
        self.stop = tuple(s for s in stop if s)
        self.pending = ""
        self.stopped = False

    def feed(self, piece: str) -> str:
        """The part of ``piece`` (plus what was held back) that is safe to show now."""
        if self.stopped:
            return ""
        self.pending += piece
        cut = min((i for i in (self.pending.find(s) for s in self.stop) if i >= 0), default=-1)
        if cut >= 0:
            self.stopped = True
            out, self.pending = self.pending[:cut], ""
            return out
        hold = max((k for s in self.stop for k in range(1, len(s)) if self.pending.endswith(s[:k])), default=0)
        out = self.pending[: len(self.pending) - hold]
        self.pending = self.pending[len(out) :]
        return out

    def flush(self) -> str:
        out, self.pending = ("" if self.stopped else self.pending), ""
        return out


def trim_stream(pieces: Iterable[str], stop: Iterable[str]) -> Iterator[str]:
    """``pieces`` cut at the first stop string (the producer is closed when the consumer stops)."""
    trimmer = StopTrimmer(stop)
    for piece in pieces:
        out = trimmer.feed(piece)
        if out:
            yield out
        if trimmer.stopped:
            return
    tail = trimmer.flush()
    if tail:
        yield tail
