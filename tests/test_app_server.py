"""The app served by Gradio in this process (fake models, real queue, real HTTP on 127.0.0.1).

What only a running server shows: sessions do not see each other's history, Stop reaches the
model, a login keeps anonymous clients out, and the load test runs with no errors.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx
import pytest

import app
from benchmarks import load_test
from config import Config
from index.search import PubMedIndex
from tests.conftest import HashingEncoder, ScriptedGenerator
from webui.models import Models
from webui.service import ChatService

pytestmark = pytest.mark.slow  # starts servers


class EchoGenerator:
    """Replies with the earlier user turns it was shown, word by word, so a leak would be visible."""

    name = "test/echo"

    def __init__(self, delay_s: float = 0.0, words: int = 0) -> None:
        self.delay_s, self.words = delay_s, words
        self.stops: list[threading.Event] = []
        self.yielded = 0

    def stream(self, messages: Sequence[dict[str, str]], *, stop: threading.Event | None = None, **_) -> Iterator[str]:
        stop = stop or threading.Event()
        self.stops.append(stop)
        earlier = [m["content"] for m in messages[3:-1] if m["role"] == "user"]  # after the worked example
        reply = f"Seen: {' | '.join(earlier) or 'nothing'}. " + "more " * self.words + "Done [1]."
        for word in re.findall(r"\S+\s*", reply):
            if stop.is_set():
                return
            time.sleep(self.delay_s)  # paces the stream so that chats overlap; nothing is timed
            self.yielded += 1
            yield word


def _serve(service: ChatService, **options: object):
    ui = app.build_ui(service, examples=["What is known about aspirin?"])
    launch = {**app.launch_options(Config(port=load_test.free_port())), **options}
    ui.queue(max_size=app.QUEUE_SIZE, default_concurrency_limit=1).launch(
        prevent_thread_lock=True, quiet=True, **launch
    )
    return ui, f"http://127.0.0.1:{launch['server_port']}/"


@pytest.fixture(scope="module")
def server(demo_index: Path) -> Iterator[tuple[str, ChatService]]:
    config = Config(top_k=3, min_score=0.0, max_chats=2, models="slow", gate="off")  # hashing scores
    slow = EchoGenerator(delay_s=0.05, words=400)
    models = Models(EchoGenerator(delay_s=0.002), config, opener=lambda _config: slow)
    service = ChatService(PubMedIndex(demo_index, encoder=HashingEncoder()), models, config)
    ui, url = _serve(service)
    yield url, service
    ui.close()


def _ask(client, question: str, **settings: object) -> str:
    return client.predict(question, **settings, api_name="/chat")[0]


def test_sessions_keep_their_own_history(server: tuple[str, ChatService]) -> None:
    url, _ = server
    alice, bob = load_test.connect(url), load_test.connect(url)
    _ask(alice, "aspirin alpha question")
    _ask(bob, "statin gamma question")
    results: dict[str, str] = {}
    threads = [
        threading.Thread(target=lambda: results.__setitem__("alice", _ask(alice, "And in beta?"))),
        threading.Thread(target=lambda: results.__setitem__("bob", _ask(bob, "And in delta?"))),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert "alpha" in results["alice"] and "gamma" not in results["alice"]
    assert "gamma" in results["bob"] and "alpha" not in results["bob"]
    fresh = _ask(load_test.connect(url), "A first question")
    assert fresh.startswith("Seen: nothing.")  # a new session starts empty


def test_stop_cancels_the_chat_and_stops_the_model(server: tuple[str, ChatService]) -> None:
    url, service = server
    client = load_test.connect(url)
    job = client.submit("aspirin stroke", model="slow", api_name="/chat")
    deadline = time.monotonic() + 60
    while not any(str(o[0]).startswith("Seen") for o in job.outputs()) and time.monotonic() < deadline:
        time.sleep(0.05)
    slow = service.models.get("slow")
    assert slow.stops and not slow.stops[-1].is_set()  # precondition: the model is writing
    job.cancel()  # what the Stop button sends
    deadline = time.monotonic() + 30
    while not slow.stops[-1].is_set() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert slow.stops[-1].is_set()
    assert slow.yielded < 400  # it did not write the whole answer for nobody


def test_load_test_runs_simultaneous_chats_without_errors(server: tuple[str, ChatService]) -> None:
    url, _ = server
    questions = ["aspirin and stroke", "statins and muscle pain", "sleep and diet", "asthma inhalers"]
    chats = load_test.run_concurrent(url, questions, users=4)
    assert [c.error for c in chats] == [""] * 4
    assert all(c.ttft_s is not None and c.total_s >= c.ttft_s and c.chars > 0 for c in chats)
    summary = load_test.summarize(chats)
    assert summary["chats"] == 4 and summary["errors"] == 0 and summary["ttft_p95_s"] >= summary["ttft_p50_s"]


def test_a_login_keeps_anonymous_clients_out(demo_index: Path) -> None:
    config = Config(top_k=3, min_score=0.0, gate="off")  # the gate is calibrated for MiniLM, not hashing
    service = ChatService(
        PubMedIndex(demo_index, encoder=HashingEncoder()),
        Models(ScriptedGenerator("Hi from the model [1]."), config),
        config,
    )
    ui, url = _serve(service, auth=[("alice", "s3cret")])
    try:
        assert httpx.get(url + "config", timeout=30).status_code == 401
        with pytest.raises(Exception):  # noqa: B017 - gradio_client raises a plain ValueError or httpx error
            load_test.connect(url)
        from gradio_client import Client

        client = Client(url, auth=("alice", "s3cret"), verbose=False, analytics_enabled=False, download_files=False)
        assert "Hi" in _ask(client, "aspirin")
    finally:
        ui.close()
