"""python -m chatbot ask "question": a cited answer from the PubMed abstracts in an index;
python -m chatbot eval FILE.jsonl: retrieval and answer metrics on PubMedQA / BioASQ style questions."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from cli import run_cli, setup_logging
from config import MAX_TOP_K, Config, add_config_flags, check_question, top_k_value
from index.filters import add_filter_flags, filters_from_args


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m chatbot", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    ask = commands.add_parser("ask", help="answer one question, citing PMIDs")
    ask.add_argument("question")
    add_config_flags(ask, "index_dir", "generator", "model", "backend", "endpoint", "context_window")
    add_config_flags(ask, "top_k", "min_score", "max_new_tokens", "temperature", "max_question_chars")
    add_config_flags(ask, "retriever", "rerank", "rerank_depth", "answer", "gate")
    add_filter_flags(ask)
    ask.add_argument("--json", action="store_true", help="print {answer, citations, sources} as JSON")
    add_eval_parser(commands)
    return parser.parse_args(argv)


def add_eval_parser(commands: argparse._SubParsersAction) -> None:
    evaluate = commands.add_parser("eval", help="recall@k, MRR (and answer accuracy) on a question file")
    evaluate.add_argument("file", help="JSON Lines: question, pmid or gold_pmids, final_decision")
    evaluate.add_argument(
        "-k", type=top_k_value, default=10, help=f"hits retrieved per question, 1 to {MAX_TOP_K} (default: 10)"
    )
    evaluate.add_argument("--limit", type=int, default=None, help="only the first N questions")
    evaluate.add_argument("--retrieval-only", action="store_true", help="skip answering: no generator is loaded")
    evaluate.add_argument("--json", action="store_true", help="print one JSON object")
    evaluate.add_argument(
        "--abstention",
        action="store_true",
        help="also measure the evidence gate: each question searched with its gold abstracts and with them "
        "filtered out; reports answer_on_answerable and abstain_on_unanswerable (target: both >= 0.9)",
    )
    add_config_flags(evaluate, "index_dir", "retriever", "rerank", "rerank_depth", "answer", "gate")
    add_config_flags(evaluate, "generator", "model", "backend", "endpoint")
    add_config_flags(evaluate, "context_window", "top_k", "min_score", "max_new_tokens")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(quiet=args.json)

    def work() -> int:
        from chatbot.chat import open_chatbot

        config = Config.from_env().with_args(args)
        if args.command == "ask":
            check_question(args.question.strip(), config)  # before minutes of loading models

        if args.command == "eval":
            return run_eval(args, config)
        bot = open_chatbot(config)
        filters = filters_from_args(args)
        if args.json:
            print(json.dumps(bot.ask(args.question, filters=filters).as_dict(), ensure_ascii=False))
            return 0
        shown = ""
        for answer in bot.stream(args.question, filters=filters):
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


def run_eval(args: argparse.Namespace, config: Config) -> int:
    from chatbot.eval import evaluate, read_questions

    questions = read_questions(Path(args.file), limit=args.limit)
    if args.retrieval_only:
        from index.search import open_index

        index, bot = open_index(config), None
    else:
        from chatbot.chat import open_chatbot

        bot = open_chatbot(config)
        index = bot.retriever
    result = {"file": args.file, "retriever": index.retriever, **evaluate(questions, index, k=args.k, chatbot=bot)}
    if args.abstention:
        from chatbot.eval import abstention_metrics, gate_pairs

        pairs = gate_pairs(questions, index, k=config.top_k, progress=not args.json)
        result["abstention"] = abstention_metrics(pairs)
    print(json.dumps(result) if args.json else "\n".join(f"{k}: {_fmt(v)}" for k, v in result.items()))
    return 0


def _fmt(value: object) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)


if __name__ == "__main__":
    sys.exit(main())
