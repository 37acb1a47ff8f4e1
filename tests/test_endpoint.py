"""The OpenAI-compatible HTTP backend against a local server that replays fixture SSE streams.

The server runs on 127.0.0.1 in a thread started by the test; nothing leaves the machine. It
records every request (path, headers, JSON body) so the tests can check what a real server
(vLLM, TGI, Ollama, llama.cpp server) would receive.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from chatbot.chat import Chatbot
from chatbot.endpoint import EndpointGenerator
from chatbot.formats import FORMATS, merge_system
from chatbot.generate import GeneratorUnavailable, open_generator
from chatbot.presets import PRESETS
from config import Config
from index.search import PubMedIndex
from tests.conftest import DATA, HashingEncoder

CHAT_SSE = (DATA / "openai_chat_stream.sse").read_bytes()
COMPLETION_SSE = (DATA / "openai_completion_stream.sse").read_bytes()
MESSAGES = [
    {"role": "system", "content": "Answer from the sources."},
    {"role": "user", "content": "Does aspirin prevent recurrent stroke?"},
]


@dataclass
class Server:
    url: str
    requests: list[dict] = field(default_factory=list)
    status: int = 200  # what the next response answers
    slow_chunks: int = 0  # when > 0: stream this many chunks, 20 ms apart, instead of the fixture
    chunks_sent: int = 0
    client_closed: threading.Event = field(default_factory=threading.Event)


@pytest.fixture
def server() -> Iterator[Server]:
    state = Server(url="")

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:  # keep pytest output clean
            pass

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            state.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
            if state.status != 200:
                self.send_response(state.status)
                self.end_headers()
                self.wfile.write(b'{"error": {"message": "model not found"}}')
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            if state.slow_chunks:
                self._slow(state.slow_chunks)
            else:
                self.wfile.write(
                    COMPLETION_SSE if self.path.endswith("/completions") and "prompt" in body else CHAT_SSE
                )

        def _slow(self, count: int) -> None:
            try:
                for i in range(count):
                    chunk = {"choices": [{"delta": {"content": f" word{i}"}}]}
                    self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                    self.wfile.flush()
                    state.chunks_sent += 1
                    time.sleep(0.02)
            except (BrokenPipeError, ConnectionResetError):
                state.client_closed.set()

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield state
    httpd.shutdown()
    httpd.server_close()


def test_chat_model_streams_the_delta_contents(server: Server) -> None:
    generator = EndpointGenerator(server.url, "served-model", api_key="secret-token")
    pieces = list(generator.stream(MESSAGES, max_new_tokens=50, temperature=0.0))
    assert pieces == ["Yes: daily", " aspirin reduced", " recurrent stroke [1]."]
    [request] = server.requests
    assert request["path"] == "/v1/chat/completions"
    assert request["headers"]["Authorization"] == "Bearer secret-token"
    assert request["body"] == {
        "model": "served-model",
        "max_tokens": 50,
        "temperature": 0.0,
        "stream": True,
        "messages": MESSAGES,
    }


def test_sampling_sends_the_presets_top_p_and_no_key_sends_no_header(server: Server) -> None:
    generator = EndpointGenerator(server.url.removesuffix("/v1"), "m", preset=PRESETS["qwen2.5-7b"])
    list(generator.stream(MESSAGES, max_new_tokens=5, temperature=0.7))
    [request] = server.requests
    assert request["path"] == "/v1/chat/completions"  # "/v1" is added to a bare server URL
    assert request["body"]["top_p"] == PRESETS["qwen2.5-7b"].top_p and request["body"]["temperature"] == 0.7
    assert "Authorization" not in request["headers"]


def test_template_without_system_role_gets_the_system_prompt_merged(server: Server) -> None:
    list(EndpointGenerator(server.url, "m", preset=PRESETS["biomistral-7b"]).stream(MESSAGES, max_new_tokens=5))
    assert server.requests[0]["body"]["messages"] == merge_system(MESSAGES)
    assert server.requests[0]["body"]["messages"][0]["role"] == "user"


def test_completion_format_model_gets_the_rendered_prompt_and_stop_strings(server: Server) -> None:
    generator = EndpointGenerator(server.url, "medalpaca", preset=PRESETS["medalpaca-7b"])
    pieces = list(generator.stream(MESSAGES, max_new_tokens=20))
    assert "".join(pieces) == "Statins did not change muscle pain [2]."
    [request] = server.requests
    assert request["path"] == "/v1/completions"
    assert request["body"]["prompt"] == FORMATS["medalpaca"].render(MESSAGES)
    assert request["body"]["stop"] == list(FORMATS["medalpaca"].stop)
    assert "messages" not in request["body"]


def test_stop_closes_the_connection_early(server: Server) -> None:
    server.slow_chunks = 200  # four seconds of streaming if nobody stops it
    stop = threading.Event()
    received = []
    for piece in EndpointGenerator(server.url, "m").stream(MESSAGES, max_new_tokens=500, stop=stop):
        received.append(piece)
        if len(received) == 3:
            stop.set()
    assert len(received) == 3
    assert server.client_closed.wait(timeout=10)  # the server saw the client go away
    assert server.chunks_sent < 100


@pytest.mark.parametrize("status", [404, 500])
def test_http_error_is_a_clear_generator_error(server: Server, status: int) -> None:
    server.status = status
    with pytest.raises(GeneratorUnavailable, match=rf"HTTP {status}.*model not found"):
        list(EndpointGenerator(server.url, "m").stream(MESSAGES, max_new_tokens=5))


def test_unreachable_endpoint_is_a_clear_generator_error() -> None:
    import socket

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(GeneratorUnavailable, match="cannot reach the endpoint"):
        list(EndpointGenerator(f"http://127.0.0.1:{port}", "m", timeout=5).stream(MESSAGES, max_new_tokens=5))


def test_error_event_in_the_stream_is_raised(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(f"{__name__}.CHAT_SSE", b'data: {"error": {"message": "out of memory"}}\n\n')
    with pytest.raises(GeneratorUnavailable, match="out of memory"):
        list(EndpointGenerator(server.url, "m").stream(MESSAGES, max_new_tokens=5))


def test_open_generator_with_an_endpoint_and_a_preset(server: Server) -> None:
    generator = open_generator(Config(endpoint=server.url, model="biomistral-7b"))
    assert isinstance(generator, EndpointGenerator)
    assert generator.name == "BioMistral/BioMistral-7B"
    assert generator.context_window == 2048
    served = open_generator(Config(endpoint=server.url, model="biomistral-7b", generator="biomistral:7b"))
    assert served.name == "biomistral:7b"  # --generator names the model the server serves
    wide = open_generator(Config(endpoint=server.url, context_window=8000))
    assert wide.context_window == 8000 and wide.name == Config().generator


def test_chatbot_answers_through_the_endpoint(server: Server, demo_index: Path) -> None:
    index = PubMedIndex(demo_index, encoder=HashingEncoder())
    question = next(index.store.iter_articles()).title
    bot = Chatbot(index, EndpointGenerator(server.url, "m"), Config(top_k=3, min_score=0.05))
    answers = list(bot.stream(question))
    final = answers[-1]
    assert final.done and not final.abstained
    assert final.text.startswith("Yes: daily aspirin reduced recurrent stroke [1].")
    assert [c.pmid for c in final.citations] == [final.sources[0].pmid]
    assert final.verdict == "yes"
    sent = server.requests[0]["body"]["messages"]
    assert sent[-1]["content"].count("<source ") == len(final.sources)
