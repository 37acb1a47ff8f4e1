"""What the Ray engine adds to an ingest, measured against the local engine in the same run.

Both engines ingest the same real PubMed files into fresh indexes, taking turns for ``--rounds``
rounds (each keeps its fastest). The encoder is the test suite's deterministic hashing encoder
(``tests/conftest.py``), which costs next to nothing: what is left is exactly what the Ray engine
adds or saves besides embedding (starting Ray Data, reading files in parallel tasks, writing and
reading Parquet shards, the merge's second read). With a real encoder, embedding dominates both
engines (BENCHMARKS.md, "Ingestion speed") and is what Ray spreads over GPUs and machines.

    python -m benchmarks.ray_engine            # both files of ../shared/data/pubmed, Ray with 2 CPUs
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from benchmarks._common import REPO_ROOT, SHARED, machine_info, machine_line, markdown_table, ratio, write_result
from config import Config
from index.distributed import ingest_on_ray
from index.writer import ingest_files
from ingest.sources import read_source
from tests.conftest import HashingEncoder

FILES = ("pubmed21n1298.xml.gz", "pubmed20n0014.xml.gz")


def ingest_once(engine: str, files: list[Path], root: Path) -> tuple[float, dict[str, object]]:
    index_dir = root / engine
    shutil.rmtree(index_dir, ignore_errors=True)
    config = Config(index_dir=index_dir)
    start = time.perf_counter()
    if engine == "local":
        summary = ingest_files(files, config, read=read_source, encoder=HashingEncoder(), progress=False)
    else:
        summary = ingest_on_ray(files, config, read=read_source, encoder_factory=HashingEncoder, progress=False)
    return time.perf_counter() - start, summary.as_dict()


def run(args: argparse.Namespace) -> dict[str, object]:
    import ray

    ray.init(
        num_cpus=args.cpus,
        include_dashboard=False,
        logging_level=logging.WARNING,
        runtime_env={"env_vars": {"PYTHONPATH": str(REPO_ROOT)}},  # workers import tests.conftest
    )
    ray.data.DataContext.get_current().enable_progress_bars = False
    files = [SHARED / "data" / "pubmed" / name for name in args.files]
    load_before = os.getloadavg()[0]
    times: dict[str, list[float]] = {"local": [], "ray": []}
    summaries = {}
    with tempfile.TemporaryDirectory(prefix="bench-ray-") as tmp:
        for _ in range(args.rounds):
            for engine in ("local", "ray"):
                seconds, summaries[engine] = ingest_once(engine, files, Path(tmp))
                times[engine].append(seconds)
    ray.shutdown()
    if summaries["local"] != summaries["ray"]:
        raise RuntimeError(f"the engines disagree: {summaries}")
    return {
        "benchmark": "ray_engine",
        "files": list(args.files),
        "ray_cpus": args.cpus,
        "seconds": times,
        "best": {engine: min(values) for engine, values in times.items()},
        "summary": summaries["local"],
        "load_average": [load_before, os.getloadavg()[0]],
        "machine": machine_info(),
    }


def table(result: dict[str, object]) -> str:
    best = result["best"]
    rows = [["ingest wall time (s)", best["ray"], best["local"], ratio(best["ray"], best["local"])]]
    return markdown_table(["measure", "--engine ray", "--engine local (baseline)", "ray / local"], rows)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", nargs="+", default=list(FILES), help="files of ../shared/data/pubmed to ingest")
    parser.add_argument("--cpus", type=int, default=2, help="CPUs given to the local Ray instance (default 2)")
    parser.add_argument("--rounds", type=int, default=2, help="turns per engine; the fastest counts (default 2)")
    parser.add_argument("--out", type=Path, help="result JSON (default benchmarks/results/ray_engine.json)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    result = run(args)
    print(table(result))
    print(f"{result['summary']}; load average {result['load_average']}")
    print(machine_line(result["machine"]))
    print("wrote", write_result(args.out, "ray_engine", result))


if __name__ == "__main__":
    main()
