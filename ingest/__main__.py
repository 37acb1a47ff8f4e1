"""python -m ingest SOURCE... --index-dir DIR: add PubMed records to an index (all or nothing)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from cli import run_cli, setup_logging
from config import Config, add_config_flags

EPILOG = """\
sources, applied in the order given (folders and glob patterns are expanded; a path that exists is
taken literally, brackets and all):
  PubMed XML (.xml, .xml.gz: baseline/update files, efetch output), MEDLINE text (.nbib, .medline,
  or a .txt PubMed export), JSON Lines (.jsonl) and CSV/TSV (.csv, .tsv) with columns pmid, title,
  abstract [, year, journal, authors, mesh, publication_types, doi];
  pubmed:QUERY   search PubMed through NCBI E-utilities and ingest the results
  --pubmed-baseline / --pubmed-updates   download NCBI's files not yet in the index (MD5-checked)

Files already ingested (same checksum) are skipped. Update files apply in order: a later record
of a PMID replaces the earlier; DeleteCitation removes. If any source cannot be read, every
failure is reported, nothing is written and the index stays exactly as it was (exit status 2).
If the run is killed, the same command again resumes and embeds only what was not yet embedded.

examples:
  python -m ingest data/demo/pubmed_demo.xml.gz --index-dir data/index
  python -m ingest "pubmed:asthma budesonide formoterol" --index-dir data/index
  python -m ingest --pubmed-updates --index-dir data/index
  python -m ingest data/pubmed/ --index-dir data/index --engine ray    # embed on a Ray cluster (docs/CLUSTER.md)
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m ingest",
        description=__doc__,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("sources", nargs="*", metavar="SOURCE", help="file, folder, glob pattern or pubmed:QUERY")
    parser.add_argument("--pubmed-updates", action="store_true", help="fetch NCBI update files not yet ingested")
    parser.add_argument("--pubmed-baseline", action="store_true", help="fetch NCBI baseline files not yet ingested")
    parser.add_argument("--max-files", type=int, default=0, help="at most this many new NCBI files per run (0: all)")
    parser.add_argument(
        "--strict", action="store_true", help="a malformed record fails its source instead of a warning"
    )
    add_config_flags(
        parser, "index_dir", "encoder", "batch_size", "max_seq_length", "workers", "device", "download_dir"
    )
    add_config_flags(parser, "encoder_backend")  # what runs a new index's encoder (docs/INGEST.md#speed)
    add_config_flags(parser, "eutils_url", "pubmed_files_url", "ncbi_api_key", "ncbi_email")
    add_config_flags(parser, "query_encoder", "index_type")  # retrieval set-up of a new index (docs/RETRIEVAL.md)
    _add_engine_flags(parser)
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument("--quiet", action="store_true", help="no progress bars or info messages")
    args = parser.parse_args(argv)
    if not (args.sources or args.pubmed_updates or args.pubmed_baseline):
        parser.error("give at least one SOURCE (or --pubmed-updates / --pubmed-baseline)")
    ray_flags = [f"--{name.replace('_', '-')}" for name in _RAY_FLAGS if getattr(args, name) is not None]
    if args.engine != "ray" and ray_flags:
        parser.error(f"{', '.join(ray_flags)} only apply with --engine ray")
    return args


_RAY_FLAGS = ("ray_address", "shard_dir", "ray_workers", "ray_gpus_per_worker")


def _add_engine_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("distributed ingestion on Ray (docs/CLUSTER.md)")
    group.add_argument(
        "--engine",
        choices=("local", "ray"),
        default="local",
        help="local: this process embeds; ray: Ray Data reads and embeds in parallel, then this process "
        "merges (needs: pip install -r requirements-ray.txt; default: local)",
    )
    group.add_argument(
        "--ray-address",
        metavar="ADDR",
        help="Ray cluster to join (default: RAY_ADDRESS, else one on this machine, else a new one)",
    )
    group.add_argument(
        "--shard-dir",
        metavar="DIR|URI",
        help="where workers write vectors: a folder every node can write, or s3://BUCKET/PATH, gs://... "
        "(default: INDEX_DIR/.ray-shards, one machine only)",
    )
    group.add_argument(
        "--ray-workers", type=int, metavar="N", help="embedding actors (default: one per GPU, else CPUs - 1)"
    )
    group.add_argument(
        "--ray-gpus-per-worker",
        type=float,
        metavar="G",
        help="GPUs per embedding actor; 0 runs CPU actors (default: 1 if the cluster has GPUs, else 0)",
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(args.quiet)

    def work() -> int:
        from tqdm.contrib.logging import logging_redirect_tqdm

        from ingest.records import IngestFailed
        from ingest.sources import read_source

        config = _with_ncbi_key(Config.from_env().with_args(args))
        ingest = _engine(args)  # a missing Ray fails before any download
        try:
            paths = resolve_sources(args, config)
            with logging_redirect_tqdm():
                summary = ingest(paths, config, read=read_source, progress=not args.quiet, strict=args.strict)
        except IngestFailed as failed:
            _print_summary(failed.summary, args.json, f"Nothing written ({failed.summary.failed} failed)", config)
            raise
        _print_summary(summary, args.json, "Done", config)
        return 0

    from index.distributed import RayUnavailable
    from index.encoder import EncoderUnavailable
    from index.storage import IndexBusy, IndexNotFound
    from ingest.records import SourceError

    return run_cli(work, (SourceError, EncoderUnavailable, IndexBusy, IndexNotFound, RayUnavailable, ValueError))


def _engine(args: argparse.Namespace):
    """``ingest_files`` itself, or its Ray counterpart with the ``--ray-*`` options bound."""
    from functools import partial

    from index.writer import ingest_files

    if args.engine == "local":
        return ingest_files
    from index.distributed import RayOptions, ingest_on_ray, require_ray

    require_ray()
    options = RayOptions(
        address=args.ray_address or "",
        shard_dir=args.shard_dir or "",
        workers=args.ray_workers or 0,
        gpus_per_worker=args.ray_gpus_per_worker,
    )
    return partial(ingest_on_ray, options=options)


def resolve_sources(args: argparse.Namespace, config: Config) -> list[Path]:
    """Local sources are checked first (a typo fails before any download), then fetched ones.

    When a local source is missing or unsupported, the others are still read (nothing is written)
    so that every failure is listed at once."""
    from index.checks import check_for_ingest
    from ingest.eutils import PREFIX, download_query
    from ingest.ncbi_files import ingested_names, new_files
    from ingest.sources import expand_each, read_source

    specs = [spec for spec in args.sources if not spec.startswith(PREFIX)]
    local = dict(zip(specs, expand_each(specs, read=read_source, strict=args.strict), strict=True))
    if len(specs) < len(args.sources) or args.pubmed_updates or args.pubmed_baseline:
        check_for_ingest(config.index_dir)  # a damaged index fails before any download
    paths: list[Path] = []
    for spec in args.sources:
        paths += local[spec] if spec in local else download_query(spec[len(PREFIX) :], config)
    for kind in ("baseline", "updates"):
        if getattr(args, f"pubmed_{kind}"):
            paths += new_files(kind, config, ingested_names(config.index_dir), limit=args.max_files)
    return paths


def _with_ncbi_key(config: Config) -> Config:
    """NCBI's own ``NCBI_API_KEY`` variable works too (``PUBMED_RAG_NCBI_API_KEY`` or the flag win)."""
    import os
    from dataclasses import replace

    return config if config.ncbi_api_key else replace(config, ncbi_api_key=os.environ.get("NCBI_API_KEY", ""))


def _print_summary(summary, as_json: bool, verdict: str, config: Config) -> None:
    if as_json:
        print(json.dumps(summary.as_dict()))
        return
    counts = ", ".join(f"{k} {v}" for k, v in summary.as_dict().items() if k != "sources")
    print(f"{verdict}: {counts}. Index: {config.index_dir}")


if __name__ == "__main__":
    sys.exit(main())
