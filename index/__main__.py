"""python -m index {stats,search}: inspect and query an index built by ``python -m ingest``."""

from __future__ import annotations

import argparse
import json
import sys

from cli import run_cli, setup_logging
from config import MAX_TOP_K, Config, add_config_flags, check_question, top_k_value
from index.filters import add_filter_flags, filters_from_args


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m index", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    stats = commands.add_parser("stats", help="documents, encoder, dimension and sources of an index")
    search = commands.add_parser("search", help="the abstracts most similar to a query")
    search.add_argument("query")
    search.add_argument("-k", type=top_k_value, default=10, help=f"number of hits, 1 to {MAX_TOP_K} (default: 10)")
    add_config_flags(search, "retriever", "rerank", "rerank_depth", "max_question_chars")
    add_filter_flags(search)
    for sub in (stats, search):
        add_config_flags(sub, "index_dir")
        sub.add_argument("--json", action="store_true", help="machine-readable output")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(quiet=True)

    def work() -> int:
        from index.search import open_index

        config = Config.from_env().with_args(args)
        if args.command == "search":
            check_question(args.query.strip(), config)
        index = open_index(config)  # a damaged file is one error line, for stats too (index/checks.py)
        if args.command == "stats":
            stats = index.stats()
            print(json.dumps(stats) if args.json else "\n".join(f"{k}: {v}" for k, v in stats.items()))
            return 0
        hits = index.search(args.query, k=args.k, filters=filters_from_args(args))
        if args.json:
            print(json.dumps([h.as_dict() for h in hits]))
        for hit in [] if args.json else hits:
            print(f"{hit.rank:>3}. {hit.score:.3f}  PMID {hit.pmid} ({hit.article.year})  {hit.article.title}")
        return 0

    from index.encoder import EncoderUnavailable
    from index.storage import IndexNotFound

    return run_cli(work, (IndexNotFound, EncoderUnavailable, ValueError))


if __name__ == "__main__":
    sys.exit(main())
