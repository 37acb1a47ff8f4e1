"""Baselines for ``benchmarks/ingest_speed.py``: the llama-index ingestion pipeline, and peak memory.

The llama-index baseline is the pipeline a llama-index user would write for the same job:
``IngestionPipeline([SentenceSplitter, HuggingFaceEmbedding])`` over one ``Document`` per
abstract (title + abstract, the text our index embeds), with the same model (the packaged
all-MiniLM-L6-v2, loaded from the same local folder), the same token limit, the same batch size,
and chunks of the same size and overlap counted with the model's own tokenizer. It keeps every
chunk vector in memory and writes nothing to disk, so it does strictly less work than our
ingest (no metadata store, no FAISS, no commit). Needs ``llama-index-embeddings-huggingface``
(``benchmarks/requirements.txt``).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence

from config import Config
from index.encoder import Encoder


def llama_index_pipeline(
    texts: Sequence[str], model_path: str, *, max_seq_length: int, batch_size: int, overlap: int
) -> tuple[Callable[[], int], float]:
    """A function that runs the pipeline on ``texts`` (returns the number of chunk vectors), and
    the seconds spent building it (model load; not part of the timed run)."""
    from llama_index.core import Document
    from llama_index.core.ingestion import IngestionPipeline
    from llama_index.core.node_parser import SentenceSplitter
    from llama_index.embeddings.huggingface import HuggingFaceEmbedding
    from transformers import AutoTokenizer

    start = time.perf_counter()
    embed = HuggingFaceEmbedding(
        model_name=model_path, max_length=max_seq_length, embed_batch_size=batch_size, device="cpu"
    )
    tokenizer = AutoTokenizer.from_pretrained(model_path)  # the model's own, to count chunk tokens
    splitter = SentenceSplitter(
        chunk_size=max_seq_length - tokenizer.num_special_tokens_to_add(),
        chunk_overlap=overlap,
        tokenizer=lambda text: tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"],
    )
    load_s = time.perf_counter() - start

    def run() -> int:
        pipeline = IngestionPipeline(transformations=[splitter, embed])
        nodes = pipeline.run(documents=[Document(text=t) for t in texts], show_progress=False)
        if any(node.embedding is None for node in nodes):
            raise RuntimeError("llama-index left a node without an embedding")
        return len(nodes)

    return run, load_s


class PeakRss:
    """Samples this process's resident memory every 50 ms while in the ``with`` block."""

    def __enter__(self) -> PeakRss:
        import psutil

        self._process = psutil.Process(os.getpid())
        self.peak_mb = self.start_mb = self._process.memory_info().rss / 2**20
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        while not self._stop.wait(0.05):
            self.peak_mb = max(self.peak_mb, self._process.memory_info().rss / 2**20)


def measure_llama(texts: Sequence[str], config: Config, model_path: str, overlap: int) -> dict[str, float]:
    """Chunks made and seconds taken by the llama-index pipeline on ``texts`` (model load excluded)."""
    pipeline, _ = llama_index_pipeline(
        texts, model_path, max_seq_length=config.max_seq_length, batch_size=config.batch_size, overlap=overlap
    )
    start = time.perf_counter()
    chunks = pipeline()
    return {"chunks": chunks, "seconds": time.perf_counter() - start}


def encoder_windows(encoder: Encoder, texts: Sequence[str]) -> Iterator[str]:
    """The pieces the encoder actually embeds (several per abstract over the token limit)."""
    from index.chunking import LongTextEncoder, split_text

    if not isinstance(encoder, LongTextEncoder):
        yield from texts
        return
    for text, offsets in zip(texts, encoder._offsets(list(texts)), strict=True):
        yield from split_text(text, offsets, encoder.max_tokens, encoder.overlap)
