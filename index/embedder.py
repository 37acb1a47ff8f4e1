"""Embed while reading: a background thread encodes the texts the reader hands it.

Parsing XML is pure Python work and encoding is numeric library work that releases the GIL, so
the two overlap on separate cores: by the time the last record is read most abstracts are
already embedded. Texts are grouped into windows of a fixed number of texts in submission order;
each window is one ``encode`` call (sentence-transformers sorts a call's texts by length, so its
batches are length-bucketed) and one transaction in the ``VectorCache``.

Windows depend only on the sequence of submitted texts, never on timing, so a re-run of the
same ingest after ``kill -9`` forms exactly the same windows: a window already in the cache is
skipped, the others are encoded with the same batch composition as an uninterrupted run, and
the vectors come out identical.

The encoder is loaded lazily, on the first window, so a run with nothing to embed never loads a
model, and a model that fails to load stops the reading at the next submitted text.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable

from index.encoder import Encoder
from index.vector_cache import VectorCache

_QUEUED_WINDOWS = 4  # read at most this far ahead of the encoder (bounds memory)
_Window = list[tuple[str, str]]  # (text_hash, text)


class BackgroundEmbedder:
    def __init__(self, load: Callable[[], Encoder], cache: VectorCache, *, window: int, progress: bool = False) -> None:
        from tqdm import tqdm

        self.cache = cache
        self.window = max(1, window)
        self.encoded = 0  # texts encoded by this run
        self.resumed = 0  # texts whose window was already in the cache (from an interrupted run)
        self._load = load
        self._encoder: Encoder | None = None
        self._pending: _Window = []
        self._seen: set[str] = set()
        self._queue: queue.Queue[_Window | None] = queue.Queue(maxsize=_QUEUED_WINDOWS)
        self._error: BaseException | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # The rate counts windows (a long abstract is several encoder inputs), so it compares across corpora.
        self._bar = tqdm(desc="Embedding", unit=" windows", disable=not progress, mininterval=0.5)

    def submit(self, text_hash: str, text: str) -> None:
        """Queue ``text`` for embedding (once per distinct text)."""
        self._raise_if_failed()
        if text_hash in self._seen:
            return
        self._seen.add(text_hash)
        self._pending.append((text_hash, text))
        if len(self._pending) >= self.window:
            self._flush()

    def submitted(self, text_hash: str) -> bool:
        return text_hash in self._seen

    def finish(self) -> None:
        """Encode what is left and wait for the thread; re-raises its error, if any."""
        self._flush()
        if self._thread is not None:
            self._put(None)
            self._thread.join()
        self._bar.close()
        self._raise_if_failed()

    def abort(self) -> None:
        """Stop after the current window (its transaction completes or rolls back), without waiting for the rest."""
        self._stop.set()
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        if self._thread is not None and self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
        self._bar.close()

    def encoder(self) -> Encoder:
        """The encoder, loaded on first use."""
        if self._encoder is None:
            self._encoder = self._load()
        return self._encoder

    def _flush(self) -> None:
        if not self._pending:
            return
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="embedder", daemon=True)
            self._thread.start()
        self._put(self._pending)
        self._pending = []

    def _put(self, item: _Window | None) -> None:
        while True:  # never block forever on a full queue whose consumer has died
            self._raise_if_failed()
            try:
                self._queue.put(item, timeout=0.2)
                return
            except queue.Full:
                continue

    def _run(self) -> None:
        try:
            while (window := self._queue.get()) is not None and not self._stop.is_set():
                self._encode(window)
        except BaseException as exc:  # handed to the reading thread, which re-raises it
            self._error = exc

    def _encode(self, window: _Window) -> None:
        hashes = [h for h, _ in window]
        if self.cache.has_all(hashes):
            self.resumed += len(window)
            self._bar.update(len(window))
        else:
            encoder = self.encoder()
            before = getattr(encoder, "windows_encoded", None)
            self.cache.put(hashes, encoder.encode([text for _, text in window]))
            self.encoded += len(window)
            after = getattr(encoder, "windows_encoded", None)
            self._bar.update(after - before if before is not None and after is not None else len(window))
        self._bar.set_postfix(abstracts=self.encoded + self.resumed, refresh=False)

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error
