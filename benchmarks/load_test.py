"""Load test: N simultaneous chats against the app on 127.0.0.1, time to first token and errors.

Starts ``python app.py`` on a free loopback port (or uses ``--url`` of an app already running
on 127.0.0.1), opens one Gradio client session per simulated user, and measures for every chat
the time from submitting the question to the first streamed output that holds answer text (time
to first token, TTFT), the time to the final answer, and errors. The baseline is the same
questions asked by one user at a time, in the same run against the same server; the figures that
matter are the ratios of TTFT with N users at once to that single-user TTFT. Nothing is asserted
on timings: they depend on the machine.

    python -m benchmarks.load_test                       # 4 users, demo index, default settings
    python -m benchmarks.load_test --users 8 --max-chats 2
    python -m benchmarks.load_test --url http://127.0.0.1:7860 --users 4
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import urlsplit

from benchmarks._common import REPO_ROOT, machine_info, machine_line, markdown_table, percentile, ratio, write_result

QUESTIONS = [
    "What are the risk factors for severe COVID-19?",
    "Does opioid-free anaesthesia reduce opioid use after cardiac surgery?",
    "Does intravenous paracetamol reduce morphine consumption after surgery?",
    "Are geriatric syndromes common in older patients with atrial fibrillation?",
    "What does the WHO recommend for drug-resistant tuberculosis?",
]
WAITING = ("_Searching", "_Loading")  # placeholders the app shows before the answer's first words
START_TIMEOUT_S = 900  # the app loads its models (and builds the demo index on a first run)
CHAT_TIMEOUT_S = 600  # one answer, queueing included; a chat that takes longer counts as an error
POLL_S = 0.005  # how often a chat looks for new outputs: the resolution of the timings


@dataclass
class Chat:
    question: str
    ttft_s: float | None = None  # submit -> first output with answer text
    total_s: float | None = None  # submit -> final answer
    chars: int = 0  # length of the final answer
    error: str = ""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def check_loopback(url: str) -> None:
    """This load test only ever targets the local machine."""
    if urlsplit(url).hostname not in ("127.0.0.1", "localhost"):
        raise SystemExit(f"refusing to load-test {url}: only 127.0.0.1 is allowed")


def start_app(port: int, args: Sequence[str], log_path: Path) -> subprocess.Popen:
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"}
    command = [sys.executable, "app.py", "--host", "127.0.0.1", "--port", str(port), *args]
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "wb") as log:
        return subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


def wait_ready(url: str, process: subprocess.Popen | None = None, timeout_s: float = START_TIMEOUT_S) -> None:
    """Poll ``url`` until it answers (bounded); fail early if the app process died."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the app exited with status {process.returncode} before serving")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(1)
    raise TimeoutError(f"{url} did not answer within {timeout_s:.0f} s")


def connect(url: str):
    from gradio_client import Client

    return Client(url, verbose=False, analytics_enabled=False, download_files=False)


def chat_once(client, question: str, timeout_s: float = CHAT_TIMEOUT_S) -> Chat:
    """Submit one question through the app's ``/chat`` endpoint and time its streamed outputs.

    The job's outputs are polled every few milliseconds (bounded by ``timeout_s``) rather than
    iterated, so a server that stops answering ends the chat with an error instead of a hang.
    """
    chat = Chat(question)
    start = time.perf_counter()
    try:
        job = client.submit(question, api_name="/chat")
        seen, answer = 0, ""
        while True:
            done = job.done()  # read before the outputs, so none arriving in between is missed
            outputs = job.outputs()
            for output in outputs[seen:]:
                answer = str(output[0] if isinstance(output, list | tuple) else output)
                if chat.ttft_s is None and answer and not answer.startswith(WAITING):
                    chat.ttft_s = time.perf_counter() - start
            seen = len(outputs)
            if done:
                break
            if time.perf_counter() - start > timeout_s:
                job.cancel()
                raise TimeoutError(f"no final answer after {timeout_s:.0f} s")
            time.sleep(POLL_S)
        job.result(timeout=10)  # raises what the server raised
        chat.total_s, chat.chars = time.perf_counter() - start, len(answer)
        if chat.ttft_s is None:
            chat.error = "no answer text"
    except Exception as exc:  # every failure is a result to report, not a crash of the benchmark
        chat.error = f"{type(exc).__name__}: {exc}"
    return chat


def run_concurrent(url: str, questions: Sequence[str], users: int) -> list[Chat]:
    """``users`` sessions, connected first, then all submitting at the same moment."""
    clients = [connect(url) for _ in range(users)]
    start = threading.Barrier(users)

    def user(n: int) -> Chat:
        start.wait()
        return chat_once(clients[n], questions[n % len(questions)])

    with ThreadPoolExecutor(max_workers=users) as pool:
        return list(pool.map(user, range(users)))


def run_single(url: str, questions: Sequence[str]) -> list[Chat]:
    """The baseline: each question asked by one user with nobody else on the server."""
    client = connect(url)
    return [chat_once(client, q) for q in questions]


def summarize(chats: Sequence[Chat]) -> dict[str, object]:
    ttft = [c.ttft_s for c in chats if c.ttft_s is not None and not c.error]
    total = [c.total_s for c in chats if c.total_s is not None and not c.error]
    return {
        "chats": len(chats),
        "errors": sum(1 for c in chats if c.error),
        "ttft_p50_s": _pct(ttft, 50),
        "ttft_p95_s": _pct(ttft, 95),
        "total_p50_s": _pct(total, 50),
        "total_p95_s": _pct(total, 95),
    }


def _pct(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    return values[0] if len(values) == 1 else percentile(values, q)


def measure(url: str, users: int, rounds: int, questions: Sequence[str] = QUESTIONS) -> dict[str, object]:
    """Warm-up, single-user baseline, then ``rounds`` rounds of ``users`` simultaneous chats."""
    chat_once(connect(url), questions[0])  # warm-up: first-call costs are not what is measured
    single = run_single(url, questions)
    concurrent = [chat for _ in range(rounds) for chat in run_concurrent(url, questions, users)]
    one, many = summarize(single), summarize(concurrent)
    return {
        "users": users,
        "rounds": rounds,
        "single": one,
        "concurrent": many,
        "ttft_p50_ratio": ratio(many["ttft_p50_s"] or 0.0, one["ttft_p50_s"] or 0.0),
        "ttft_p95_ratio": ratio(many["ttft_p95_s"] or 0.0, one["ttft_p50_s"] or 0.0),
        "chats": [asdict(c) for c in single + concurrent],
    }


def report(result: dict[str, object]) -> str:
    single, many = result["single"], result["concurrent"]
    rows = [
        [
            "1 user at a time",
            single["chats"],
            single["errors"],
            single["ttft_p50_s"],
            single["ttft_p95_s"],
            single["total_p50_s"],
        ],
        [
            f"{result['users']} users at once",
            many["chats"],
            many["errors"],
            many["ttft_p50_s"],
            many["ttft_p95_s"],
            many["total_p50_s"],
        ],
    ]
    table = markdown_table(["load", "chats", "errors", "TTFT p50 (s)", "TTFT p95 (s)", "answer p50 (s)"], rows)
    ratios = (
        f"TTFT with {result['users']} users at once / single-user TTFT p50: "
        f"p50 x{_x(result['ttft_p50_ratio'])}, p95 x{_x(result['ttft_p95_ratio'])}"
    )
    return f"{table}\n\n{ratios}"


def _x(value: object) -> str:
    return f"{value:.2f}" if isinstance(value, float) else "–"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=4, help="simultaneous chats (default 4)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of simultaneous chats (default 2)")
    parser.add_argument("--url", help="an app already running on 127.0.0.1 (default: start one)")
    parser.add_argument("--index-dir", default=str(REPO_ROOT / "data" / "index"), help="index for the started app")
    parser.add_argument("--max-chats", type=int, help="the started app's --max-chats (default: its own)")
    parser.add_argument("--app-arg", action="append", default=[], help="more flags for the started app")
    parser.add_argument("--out", type=Path, help="result JSON (default benchmarks/results/load_test.json)")
    args = parser.parse_args(argv)

    process = None
    url = args.url
    if url is None:
        port = free_port()
        url = f"http://127.0.0.1:{port}/"
        app_args = ["--index-dir", args.index_dir, *args.app_arg]
        app_args += ["--max-chats", str(args.max_chats)] if args.max_chats else []
        process = start_app(port, app_args, REPO_ROOT / "benchmarks" / "results" / "load_test_app.log")
    check_loopback(url)
    try:
        wait_ready(url, process)
        load_before = os.getloadavg()  # other work on the machine skews every timing: record it
        result = measure(url, args.users, args.rounds)
        result["load_average"] = {"before": load_before, "after": os.getloadavg()}
    finally:
        if process is not None:
            process.terminate()
            process.wait(timeout=60)
    info = machine_info()
    result.update(machine=info, app_args=args.app_arg, max_chats=args.max_chats)
    path = write_result(args.out, "load_test", result)
    load = result["load_average"]
    print(f"{machine_line(info)}; 1-min load average {load['before'][0]:.1f} before, {load['after'][0]:.1f} after")
    print(f"\n{report(result)}\n\nResult: {path}")
    return 1 if result["single"]["errors"] or result["concurrent"]["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
