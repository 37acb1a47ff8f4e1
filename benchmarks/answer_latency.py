"""Latency of the whole question-to-cited-answer path on this machine, today's code against the tree.

For each source tree — the baseline commit (checked out with ``git worktree`` into a temporary
folder) and the working tree — in the same run:

- ``cold``: first start of ``python app.py`` on an empty index folder with an empty model cache
  (builds the demo index, then serves; timed to the first HTTP answer), ``python -m index stats``
  (wall time and peak memory), and ``--help`` of each command line.
- ``stages``: one process per generator and load (``benchmarks/answer_stages.py``): process start
  to ready, then per question the time of each stage (query encoding, first-stage search,
  reranking, passage matching, prompt building, prompt evaluation = time to first token, decoding,
  support check), sources visible, first answer word and total. The first question is reported on
  its own (it pays for lazy loading); the others are averaged. ``busy`` runs the same with one
  CPU-bound process beside it.
- ``sharing``: the demo ingest's embedding rate alone and beside a CPU-bound process (against a fair
  half of the idle rate), and the first answer word while that ingest runs (against idle).

Generators: the packaged SmolLM2-135M-Instruct and the packaged Qwen2.5-Coder-0.5B-Instruct GGUF
(``benchmarks/_models.py``), a stand-in for the default Qwen2.5-1.5B-Instruct's speed. Nothing is
asserted: the figures are ratios against the baseline measured here, in this run.

    python -m benchmarks.answer_latency                       # everything, 3 questions
    python -m benchmarks.answer_latency --parts stages --models smollm2 --loads idle
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from benchmarks._common import REPO_ROOT, machine_info, machine_line, markdown_table, ratio, write_result
from benchmarks._models import qwen_coder_gguf

BASELINE_REF = "01f471e"  # main before issue #13 (the answer path as it was)
DEMO = "data/demo/pubmed_demo.xml.gz"
QUESTIONS = [
    "Does intravenous paracetamol reduce morphine consumption after surgery?",
    "What are the risk factors for severe COVID-19?",
    "Are geriatric syndromes common in older patients with atrial fibrillation?",
    "Does opioid-free anaesthesia reduce opioid use after cardiac surgery?",
    "What does the WHO recommend for drug-resistant tuberculosis?",
]
START_TIMEOUT_S = 3600
BUSY = [sys.executable, "-c", "while True: pass"]  # one CPU-bound job beside the measured one
APP_INGEST_NICE = {"baseline": 0, "tree": 10}  # the app's Add abstracts ingest: same priority before, nice 10 now


def checkout(ref: str, folder: Path) -> Path:
    subprocess.run(
        ["git", "worktree", "add", "--detach", str(folder), ref], cwd=REPO_ROOT, check=True, capture_output=True
    )
    return folder


def remove_checkout(folder: Path) -> None:
    subprocess.run(["git", "worktree", "remove", "--force", str(folder)], cwd=REPO_ROOT, capture_output=True)


def tree_env(tree: Path, work: Path, **settings: str) -> dict[str, str]:
    """The environment of a process of ``tree``: its own model cache, offline, rerank as the product's default."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PUBMED_RAG_")}
    env.update(
        PYTHONPATH=str(tree),
        XDG_CACHE_HOME=str(work / "cache"),
        HF_HUB_OFFLINE="1",
        GRADIO_ANALYTICS_ENABLED="False",
    )
    settings = {"index_dir": str(work / "index"), **settings}
    env.update({"PUBMED_RAG_" + k.upper(): v for k, v in settings.items()})
    return env


def run_timed(command: list[str], *, cwd: Path, env: dict[str, str]) -> dict[str, float]:
    """Wall seconds and peak RSS (MB, from GNU time) of one command."""
    start = time.perf_counter()
    done = subprocess.run(
        ["/usr/bin/time", "-f", "%M", *command], cwd=cwd, env=env, capture_output=True, text=True, check=False
    )
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}): {done.stderr[-2000:]}")
    return {"wall_s": wall, "peak_mb": int(done.stderr.strip().splitlines()[-1]) / 1024}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def first_start(tree: Path, work: Path) -> float:
    """Seconds from ``python app.py`` on an empty index and model cache to its first HTTP answer."""
    port = free_port()
    env = tree_env(tree, work)
    log = (work / "first_start.log").open("wb")
    start = time.perf_counter()
    app = subprocess.Popen(
        [sys.executable, "app.py", "--host", "127.0.0.1", "--port", str(port)],
        cwd=tree,
        env=env,
        stdout=log,
        stderr=log,
    )
    try:
        while time.perf_counter() - start < START_TIMEOUT_S:
            if app.poll() is not None:
                raise RuntimeError(f"app exited with {app.returncode}: see {work / 'first_start.log'}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5):
                    return time.perf_counter() - start
            except OSError:
                time.sleep(0.5)
        raise RuntimeError("app did not start in time")
    finally:
        app.terminate()
        app.wait(timeout=60)


def cold(tree: Path, work: Path) -> dict[str, object]:
    env = tree_env(tree, work)
    python = sys.executable
    return {
        "first_start_s": first_start(tree, work),
        "index_stats": run_timed([python, "-m", "index", "stats", "--json"], cwd=tree, env=env),
        "help_s": {
            name: run_timed([python, *command, "--help"], cwd=tree, env=env)["wall_s"]
            for name, command in {"app": ["app.py"], "ingest": ["-m", "ingest"], "chatbot": ["-m", "chatbot"]}.items()
        },
    }


def stages(tree: Path, work: Path, gguf: Path, questions: list[str], max_new_tokens: int, busy: bool) -> dict:
    # answer=generate: the tiny offline model would otherwise quote evidence instead of generating (issue #16);
    # a tree without that setting ignores the variable.
    settings = {"generator": str(gguf), "max_new_tokens": str(max_new_tokens), "rerank": "ql", "answer": "generate"}
    env = tree_env(tree, work, **settings)
    worker = [sys.executable, str(REPO_ROOT / "benchmarks" / "answer_stages.py"), *questions]
    beside = subprocess.Popen(BUSY) if busy else None
    try:
        done = subprocess.run(
            [*worker, "--spawned-at", repr(time.time())], cwd=tree, env=env, capture_output=True, text=True, check=False
        )
    finally:
        if beside is not None:
            beside.kill()
    if done.returncode != 0:
        raise RuntimeError(f"stage worker failed in {tree}: {done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def ingest_rate(tree: Path, work: Path, *, busy: bool) -> dict[str, float]:
    """Abstracts embedded per second by ``python -m ingest`` of the demo corpus into a new index."""
    target = work / ("share-busy" if busy else "share-idle")
    env = tree_env(tree, work, index_dir=str(target))
    beside = subprocess.Popen(BUSY) if busy else None
    try:
        timing = run_timed([sys.executable, "-m", "ingest", DEMO], cwd=tree, env=env)
    finally:
        if beside is not None:
            beside.kill()
    return {"wall_s": timing["wall_s"], "abstracts_per_s": 2000 / timing["wall_s"]}


def chat_beside_ingest(
    tree: Path, work: Path, gguf: Path, questions: list[str], max_new_tokens: int, nice: int
) -> dict:
    """A chat while ``python -m ingest`` embeds; ``nice`` as the app's Add abstracts tab runs its ingest."""
    target = work / "share-chat"
    ingest = subprocess.Popen(
        ["nice", "-n", str(nice), sys.executable, "-m", "ingest", DEMO],
        cwd=tree,
        env=tree_env(tree, work, index_dir=str(target)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(5)  # the ingest is embedding by now
        return stages(tree, work, gguf, questions, max_new_tokens, busy=False)
    finally:
        ingest.kill()
        ingest.wait()


def summarise(run: dict) -> dict[str, float]:
    """Question 1 (cold) and the mean of the rest (warm) for each figure."""
    questions = run["questions"]
    warm = questions[1:] or questions

    def mean(values):
        values = [v for v in values if v is not None]
        return statistics.fmean(values) if values else float("nan")

    out = {"ready_s": run["ready_s"], "first_q_first_word_s": questions[0]["first_word_s"] or float("nan")}
    out["first_q_total_s"] = questions[0]["total_s"]
    for key in ("sources_visible_s", "first_word_s", "total_s", "answer_tokens"):
        out[key] = mean(q[key] for q in warm)
    names = sorted({name for q in warm for name in q["stages_s"]})
    for name in names:
        out[name] = mean(q["stages_s"].get(name, 0.0) for q in warm)
    decode_tokens = mean(max(q["answer_tokens"] - 1, 1) for q in warm)
    out["s_per_token"] = out.get("decode", float("nan")) / decode_tokens
    out["answer_150_s"] = out.get("first_word_s", float("nan")) + 149 * out["s_per_token"]
    return out


STAGE_ROWS = [
    ("ready_s", "process start to ready"),
    ("first_q_first_word_s", "question 1: first answer word"),
    ("query_encoding", "query encoding"),
    ("first_stage_search", "first-stage search"),
    ("rerank", "reranking"),
    ("passage_matching", "passage matching (source cards)"),
    ("prompt_building", "prompt building"),
    ("prompt_eval", "prompt evaluation (time to first token)"),
    ("decode", "decoding"),
    ("support_check", "support check"),
    ("sources_visible_s", "sources visible"),
    ("first_word_s", "first answer word"),
    ("total_s", "total"),
    ("answer_tokens", "answer tokens"),
    ("answer_150_s", "a 150-token answer (first word + 149 tokens)"),
]


def stage_table(results: dict, model: str, load: str) -> str:
    base, new = results["baseline"]["stages"][model][load], results["tree"]["stages"][model][load]
    rows = [
        [label, f"{base.get(key, 0):.2f}", f"{new.get(key, 0):.2f}", ratio(new.get(key, 0), base.get(key, 0))]
        for key, label in STAGE_ROWS
    ]
    return markdown_table(["stage (s)", "baseline", "now", "now / baseline"], rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", default=BASELINE_REF, help="git ref of today's code (default: %(default)s)")
    parser.add_argument("--parts", default="cold,stages,sharing", help="comma-separated: cold, stages, sharing")
    parser.add_argument("--models", default="smollm2,qwen0.5b", help="comma-separated: smollm2, qwen0.5b")
    parser.add_argument("--loads", default="idle,busy", help="comma-separated: idle, busy")
    parser.add_argument("--questions", type=int, default=3, help="questions per process (the first is cold)")
    parser.add_argument("--max-new-tokens", type=int, default=150)
    parser.add_argument("--work-dir", type=Path, default=None, help="keep indexes and caches here (default: temp)")
    parser.add_argument("--trees", default="baseline,tree", help="comma-separated: baseline, tree")
    args = parser.parse_args(argv)

    from index.causal_lm import packaged_smollm2

    parts, loads = args.parts.split(","), args.loads.split(",")
    models = {"smollm2": packaged_smollm2(), "qwen0.5b": qwen_coder_gguf()}
    models = {name: path for name, path in models.items() if name in args.models.split(",")}
    missing = [name for name, path in models.items() if path is None]
    if missing:
        raise SystemExit(f"missing packaged models {missing}: pip install -r benchmarks/requirements.txt")
    questions = QUESTIONS[: args.questions]
    root = args.work_dir or Path(tempfile.mkdtemp(prefix="answer-latency-"))
    results: dict[str, object] = {"machine": machine_info(), "baseline_ref": args.baseline, "questions": questions}
    baseline = (
        checkout(args.baseline, root / "baseline-src")
        if not (root / "baseline-src").exists()
        else root / "baseline-src"
    )
    try:
        for label, tree in (("baseline", baseline), ("tree", REPO_ROOT)):
            if label not in args.trees.split(","):
                continue
            work = root / label
            work.mkdir(parents=True, exist_ok=True)
            entry: dict[str, object] = {}
            if "cold" in parts or not (work / "index").exists():
                entry["cold"] = cold(tree, work)
                print(label, "cold", json.dumps(entry["cold"]), flush=True)
            if "stages" in parts:
                entry["stages"] = {
                    name: {
                        load: summarise(stages(tree, work, gguf, questions, args.max_new_tokens, load == "busy"))
                        for load in loads
                    }
                    for name, gguf in models.items()
                }
                print(label, "stages", json.dumps(entry["stages"]), flush=True)
            if "sharing" in parts:
                gguf = next(iter(models.values()))
                entry["sharing"] = {
                    "ingest_idle": ingest_rate(tree, work, busy=False),
                    "ingest_busy": ingest_rate(tree, work, busy=True),
                    "chat_idle": summarise(stages(tree, work, gguf, questions, args.max_new_tokens, False)),
                    "chat_beside_ingest": summarise(
                        chat_beside_ingest(tree, work, gguf, questions, args.max_new_tokens, APP_INGEST_NICE[label])
                    ),
                }
                print(label, "sharing", json.dumps(entry["sharing"]), flush=True)
            results[label] = entry
    finally:
        if args.work_dir is None:
            remove_checkout(baseline)
    write_result(None, "answer_latency_" + "-".join(parts) + "_" + "-".join(loads), results)
    print(machine_line(results["machine"]))
    if "stages" in parts and {"baseline", "tree"} <= set(results):
        for name in models:
            for load in loads:
                print(f"\n### {name}, {load}\n")
                print(stage_table(results, name, load))
    return 0


if __name__ == "__main__":
    sys.exit(main())
