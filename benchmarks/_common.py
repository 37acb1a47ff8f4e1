"""Helpers shared by the benchmark scripts: machine description, result files, Markdown tables.

Every benchmark records the machine it ran on next to its figures, because timings only mean
something relative to a baseline measured on the same machine in the same run.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import TypeVar

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED = REPO_ROOT.parent / "shared"
RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"

T = TypeVar("T")


def machine_info() -> dict[str, object]:
    """Cores, CPU model and the versions of the libraries that decide the timings."""
    import torch

    return {
        "cpu_model": _cpu_model(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": {
            name: _version(name) for name in ("torch", "faiss-cpu", "sentence-transformers", "numpy", "bm25s")
        },
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def machine_line(info: dict[str, object]) -> str:
    packages = info["packages"]
    assert isinstance(packages, dict)
    versions = ", ".join(f"{k} {v}" for k, v in packages.items() if v != "not installed")
    cpu = f"{info['cpu_model']}, {info['cores']} cores ({info['torch_threads']} torch threads)"
    return f"{cpu}; Python {info['python']}, {versions}"


def timed(func: Callable[[], T]) -> tuple[T, float]:
    """``func()`` and its wall-clock duration in seconds."""
    start = time.perf_counter()
    value = func()
    return value, time.perf_counter() - start


def timed_cpu(func: Callable[[], T]) -> tuple[T, float, float]:
    """``func()``, its wall-clock seconds and the CPU seconds this process spent (all threads).

    CPU time is much less sensitive than wall time to other processes competing for the cores.
    """
    start, cpu = time.perf_counter(), time.process_time()
    value = func()
    return value, time.perf_counter() - start, time.process_time() - cpu


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100), inclusive method, of at least two values."""
    return statistics.quantiles(values, n=100, method="inclusive")[round(q) - 1]


def ratio(ours: float, baseline: float) -> float | None:
    return ours / baseline if baseline else None


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _cell(value: object) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def write_result(out: Path | None, name: str, result: dict[str, object]) -> Path:
    """Write ``result`` as JSON to ``out`` (default ``benchmarks/results/<name>.json``)."""
    path = out or RESULTS_DIR / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return path
