"""Answer hygiene: what a model wrote, without markup, and whether it is an answer at all.

Small models leak their prompt format into the answer (``</script>``, ``<source n="1">``,
``<|im_end|>``, ``[INST]``, ``### Response:``), fall into repetition loops, or stop after one
word ("The"). ``clean`` removes markup and cuts a loop after its first occurrence;
``problems`` names what was wrong, and ``degenerate`` says whether the generation must be
replaced (by the extractive answer, ``chatbot/extractive.py``) rather than shown.

Deliberately strict: a generation that needed any markup removed is replaced, not patched,
because a model that echoes its prompt format has usually lost the thread of the answer too.
Citation markers ``[n]`` and plain Markdown emphasis are kept; the app escapes what remains.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MIN_WORDS = 3  # fewer words (citation markers not counted) is a fragment, not an answer ("The", "Yes [1].")
LOOP_REPEATS = 3  # a phrase said this many times in a row is a loop
MAX_LOOP_PHRASE = 25  # words; longer repeated passages are caught as repeated sentences

# Prompt sentinels, role tokens and HTML/XML tags (closing ones too): none belongs in an answer.
_MARKUP = re.compile(
    r"<\|[^|>]*\|>"  # <|im_end|>, <|assistant|>, <|endoftext|>
    r"|</?\s*[A-Za-z][\w:-]*(\s[^<>]*)?/?>"  # <source n="1">, </script>, <br/>, <s>, </s>
    r"|<!--.*?-->"  # HTML comments
    r"|\[/?INST\]|<</?SYS>>"  # Llama-2 chat format
    r"|^\s*#{2,}\s*(Instruction|Input|Response|System|User|Assistant|Question|Answer)\b:?"  # Alpaca headings
    r"|^\s*(System|User|Assistant|Human)\s*:"  # role prefixes at a line start
    r"|`{3}\w*",  # code fences
    re.IGNORECASE | re.MULTILINE | re.DOTALL,
)
_OPEN_TAIL = re.compile(r"<[/!|A-Za-z][^<>]*$")  # a tag still being streamed ("<sour")
_CITATION = re.compile(r"\[\d+(?:\s*[,;–-]\s*\d+)*\]")
_WORD = re.compile(r"\w[\w'-]*")
_SENTENCE = re.compile(r"(?<=[.!?])\s+")


@dataclass(frozen=True)
class Cleaned:
    text: str  # the answer without markup, a loop cut after its first occurrence
    problems: tuple[str, ...]  # "markup", "loop", "repeated sentence", "empty", "fragment"

    @property
    def degenerate(self) -> bool:
        """Not to be shown as an answer: replace it with the extractive one."""
        return bool(self.problems)


def strip_markup(text: str) -> str:
    """``text`` without tags, sentinels and role tokens, nor the start of one at its end (streaming)."""
    return _tidy(_OPEN_TAIL.sub("", _MARKUP.sub(" ", text)))


def clean(text: str) -> Cleaned:
    """The shown form of a generation and what was wrong with it."""
    problems: list[str] = []
    stripped = strip_markup(text)
    if stripped != _tidy(text):
        problems.append("markup")
    unlooped = _cut_loops(stripped)
    if unlooped != stripped:
        problems.append("loop")
    deduplicated = _drop_repeated_sentences(unlooped)
    if deduplicated != unlooped:
        problems.append("repeated sentence")
    words = len(_WORD.findall(_CITATION.sub(" ", deduplicated)))
    if words == 0:
        problems.append("empty")
    elif words < MIN_WORDS:
        problems.append("fragment")
    return Cleaned(deduplicated, tuple(problems))


def _tidy(text: str) -> str:
    """Spaces a removal left behind: no runs of spaces, no blank-line runs, no space before punctuation."""
    text = re.sub(r"[ \t]+", " ", text)
    text = re.sub(r" +([.,;:!?])", r"\1", text)
    text = re.sub(r"\s*\n\s*\n\s*", "\n\n", text)
    return "\n".join(line.strip() for line in text.strip().split("\n"))


def _cut_loops(text: str) -> str:
    """Keep one occurrence of any phrase (1 to ``MAX_LOOP_PHRASE`` words) repeated ``LOOP_REPEATS``
    times in a row, and drop everything after the loop: a looping model says nothing new after it."""
    spans = [m.span() for m in re.finditer(r"\S+", text)]
    words = [text[a:b].lower().strip(".,;:!?") for a, b in spans]
    for start in range(len(words)):
        for size in range(1, min(MAX_LOOP_PHRASE, (len(words) - start) // LOOP_REPEATS) + 1):
            phrase = words[start : start + size]
            if all(words[start + r * size : start + (r + 1) * size] == phrase for r in range(1, LOOP_REPEATS)):
                return text[: spans[start + size - 1][1]].rstrip(",;: ")
    return text


def _drop_repeated_sentences(text: str) -> str:
    """Each sentence once: a model that repeats a whole sentence is looping at sentence scale."""
    seen: set[str] = set()
    kept = []
    for sentence in _SENTENCE.split(text):
        key = " ".join(_WORD.findall(_CITATION.sub(" ", sentence.lower())))
        if key and key in seen:
            continue
        seen.add(key)
        kept.append(sentence)
    return " ".join(kept) if len(kept) < len(_SENTENCE.split(text)) else text
