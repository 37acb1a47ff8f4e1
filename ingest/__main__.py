"""python -m ingest SOURCE... --index-dir DIR: add PubMed records to an index (all or nothing)."""

from __future__ import annotations

import argparse
import json
import sys

from cli import run_cli, setup_logging
from config import Config, add_config_flags

EPILOG = """\
sources: PubMed XML as NCBI publishes it (baseline/update files, efetch output; .xml or .xml.gz)
and JSON Lines (.jsonl) with pmid, title, abstract [, year, journal, mesh, publication_types].
Folders and glob patterns are expanded. Files already ingested (same checksum) are skipped.
Update files apply in order: a later record of a PMID replaces the earlier; DeleteCitation removes.
If any source cannot be read, nothing is written and the index stays as it was.

example:  python -m ingest data/demo/pubmed_demo.xml.gz --index-dir data/index
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m ingest",
        description=__doc__,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("sources", nargs="+", metavar="SOURCE", help="file, folder or glob pattern")
    add_config_flags(parser, "index_dir", "encoder", "batch_size", "max_seq_length")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument("--quiet", action="store_true", help="no progress bars or info messages")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(args.quiet)
    config = Config.from_env().with_args(args)

    def work() -> int:
        from tqdm.contrib.logging import logging_redirect_tqdm

        from index.writer import ingest_files
        from ingest.sources import expand_sources, read_source

        paths = expand_sources(args.sources)
        with logging_redirect_tqdm():
            summary = ingest_files(paths, config, read=read_source, progress=not args.quiet)
        if args.json:
            print(json.dumps(summary.as_dict()))
        else:
            counts = ", ".join(f"{k} {v}" for k, v in summary.as_dict().items() if k != "sources")
            print(f"Done: {counts}. Index: {config.index_dir}")
        return 0

    from index.encoder import EncoderUnavailable
    from index.storage import IndexBusy
    from ingest.records import SourceError

    return run_cli(work, (SourceError, EncoderUnavailable, IndexBusy, ValueError))


if __name__ == "__main__":
    sys.exit(main())
