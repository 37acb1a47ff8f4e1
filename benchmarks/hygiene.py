"""Answer hygiene on real generations: how often the offline model's answer is degenerate, and what is shown.

The first ``--limit`` PubMedQA dev questions are answered by the whole chatbot with the offline
generator (``open_generator(Config())``: the packaged SmolLM2-135M when the Hub is unreachable)
in ``--answer generate`` mode, on ``benchmarks/retrieval.py``'s PubMedQA corpus (first stage
only; the evidence gate on, as shipped). For each answered question: what ``chatbot/clean.py``
found in the raw generation (markup, loop, repeated sentence, empty, fragment), whether it was
replaced by quoted evidence, whether the yes/no opening was softened, and two checks on the
text that would be shown: no markup left, and at least three words.

    python -m benchmarks.hygiene --embedding-cache emb.sqlite --work DIR --limit 30
"""

from __future__ import annotations

import argparse
import logging
import re
import tempfile
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from benchmarks._cached_encoder import minilm
from benchmarks._common import machine_info, machine_line, write_result
from benchmarks.abstention import dev_index, dev_set_parser
from chatbot.chat import Chatbot
from chatbot.prompts import REFERENCES_HEADING
from config import Config

MARKUP = re.compile(r"<[/!|A-Za-z][^>]*>|\[/?INST\]|<<SYS>>|^#{2,}", re.MULTILINE)


class Recording:
    """The generator, keeping each raw reply so its problems can be counted."""

    def __init__(self, inner) -> None:
        self.inner, self.name, self.replies = inner, inner.name, []

    def stream(self, messages, **kwargs):
        pieces = []
        for piece in self.inner.stream(messages, **kwargs):
            pieces.append(piece)
            yield piece
        self.replies.append("".join(pieces))

    def __getattr__(self, name: str):
        return getattr(self.inner, name)


def run(args: argparse.Namespace) -> dict[str, object]:
    from chatbot.clean import clean
    from chatbot.generate import open_generator

    encoder = minilm(Config(), args.embedding_cache)
    config = Config(answer="generate", rerank="off")
    generator = Recording(open_generator(config))
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-hygiene-") as tmp:
        work = args.work or Path(tmp)
        questions, index = dev_index("pubmedqa", args.distractors, encoder, work)
        bot = Chatbot(index, generator, config, encoder=encoder)
        for question in questions[: args.limit]:
            before = len(generator.replies)
            answer = bot.ask(question.question)
            raw = generator.replies[-1] if len(generator.replies) > before else None
            shown = answer.text.split(REFERENCES_HEADING)[0]
            rows.append(
                {
                    "question": question.question,
                    "raw": raw,
                    "problems": list(clean(raw).problems) if raw is not None else [],
                    "mode": answer.mode,
                    "abstained": answer.abstained,
                    "tempered": answer.tempered,
                    "shown_has_markup": bool(MARKUP.search(shown)),
                    "shown_words": len(re.findall(r"\w+", re.sub(r"\[\d+(, \d+)*\]", " ", shown))),
                }
            )
    generated = [r for r in rows if r["raw"] is not None]
    problems = Counter(p for r in generated for p in r["problems"])
    return {
        "benchmark": "hygiene",
        "generator": generator.name,
        "questions": len(rows),
        "generated": len(generated),
        "abstained": sum(r["abstained"] for r in rows),
        "degenerate": sum(bool(r["problems"]) for r in generated),
        "problems": dict(problems),
        "replaced_by_quoted_evidence": sum(r["mode"] == "extractive" for r in rows),
        "verdict_softened": sum(r["tempered"] for r in rows),
        "shown_with_markup": sum(r["shown_has_markup"] for r in rows),
        "shown_under_three_words": sum(r["shown_words"] < 3 for r in rows if not r["abstained"]),
        "rows": rows,
        "machine": machine_info(),
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = dev_set_parser(__doc__.split("\n\n")[0], work="the indexes of benchmarks/abstention.py (reused)")
    parser.add_argument("--limit", type=int, default=30, help="questions answered (default: 30)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    result = run(args)
    path = write_result(args.out, "hygiene", result)
    for key in ("generator", "questions", "generated", "abstained", "degenerate", "problems"):
        print(f"{key}: {result[key]}")
    for key in ("replaced_by_quoted_evidence", "verdict_softened", "shown_with_markup", "shown_under_three_words"):
        print(f"{key}: {result[key]}")
    print(f"Machine: {machine_line(result['machine'])}\nResult: {path}")


if __name__ == "__main__":
    main()
