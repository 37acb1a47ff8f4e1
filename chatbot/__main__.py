"""python -m chatbot ask "question": a cited answer from the PubMed abstracts in an index."""

from __future__ import annotations

import argparse
import json
import sys

from cli import run_cli, setup_logging
from config import Config, add_config_flags


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m chatbot", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    ask = commands.add_parser("ask", help="answer one question, citing PMIDs")
    ask.add_argument("question")
    add_config_flags(ask, "index_dir", "generator", "model", "backend", "endpoint", "context_window")
    add_config_flags(ask, "top_k", "min_score", "max_new_tokens", "temperature")
    ask.add_argument("--json", action="store_true", help="print {answer, citations, sources} as JSON")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(quiet=args.json)
    config = Config.from_env().with_args(args)

    def work() -> int:
        from chatbot.chat import open_chatbot

        bot = open_chatbot(config)
        if args.json:
            print(json.dumps(bot.ask(args.question).as_dict(), ensure_ascii=False))
            return 0
        shown = ""
        for answer in bot.stream(args.question):
            if not answer.done and answer.text.startswith(shown):
                print(answer.text[len(shown) :], end="", flush=True)
                shown = answer.text
        print(answer.text[len(shown) :] if answer.text.startswith(shown) else "\n" + answer.text)
        print("\nSources:")
        for n, hit in enumerate(answer.sources, start=1):
            print(f"[{n}] {hit.article.title} ({hit.article.year}) {hit.url}  score {hit.score:.2f}")
        return 0

    from chatbot.generate import GeneratorUnavailable
    from index.encoder import EncoderUnavailable
    from index.storage import IndexNotFound

    return run_cli(work, (IndexNotFound, EncoderUnavailable, GeneratorUnavailable, ValueError))


if __name__ == "__main__":
    sys.exit(main())
