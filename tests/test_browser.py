"""The real app in a real browser: `python app.py` on 127.0.0.1, driven by Playwright on Debian's chromium.

The index is built first by `python -m ingest` (packaged MiniLM: HF_HUB_OFFLINE=1 makes the
default encoder fall back) from a slice of the demo corpus plus one JSON Lines record whose title
and journal hold markup, so the app starts in seconds. The generator is the offline SmolLM2
fallback: its answers are weak, so the test checks what the pipeline guarantees (a streamed
answer, PubMed links in the sources, escaped markup), not the answer's wording.

Without chromium or Playwright the test is skipped on a developer machine and fails under CI.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.conftest import DEMO_CORPUS, REPO

pytestmark = pytest.mark.slow

CHROMIUM = os.environ.get("CHROMIUM", shutil.which("chromium") or "/usr/bin/chromium")
SLICE = 60  # demo records in the test index: enough topics for retrieval, quick to embed
EVIL = {
    "pmid": "990001",
    "title": "<script>window.__pwned=1</script> Aspirin after stroke <img src=x onerror=window.__pwned=2>",
    "abstract": "Daily aspirin reduced recurrent stroke by a fifth in adults who had a first ischaemic stroke. "
    "CONCLUSION: Aspirin prevents recurrent stroke.",
    "journal": "Journal of <b>Tests</b>",
    "authors": ["Evil A"],
    "year": 2020,
}
START_TIMEOUT_S = 600


def _require_browser() -> None:
    """Skip without a browser on a developer machine; under CI (CI=true) a missing browser fails."""
    missing = ""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing = "the playwright package is not installed (pip install -r requirements-dev.txt)"
    if not missing and not Path(CHROMIUM).is_file():
        missing = f"no chromium at {CHROMIUM} (Debian: apt-get install chromium)"
    if missing:
        if os.environ.get("CI", "").lower() not in ("", "0", "false"):
            pytest.fail(f"browser test cannot run under CI: {missing}")
        pytest.skip(missing)


def _slice(target: Path, count: int) -> Path:
    from lxml import etree

    records = []
    with gzip.open(DEMO_CORPUS) as corpus:
        for _, element in etree.iterparse(corpus, tag="PubmedArticle"):
            records.append(etree.tostring(element))
            if len(records) == count:
                break
    with gzip.open(target, "wb") as out:
        out.write(b"<PubmedArticleSet>\n" + b"\n".join(records) + b"\n</PubmedArticleSet>\n")
    return target


def _environment(**extra: str) -> dict[str, str]:
    """This machine's environment without PUBMED_RAG_* settings (they would change what is tested)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PUBMED_RAG_", "GRADIO_"))}
    return {**env, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False", **extra}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_ready(url: str, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the app exited ({process.returncode}):\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5):
                return
        except OSError:
            time.sleep(1)
    pytest.fail(f"the app did not serve {url} within {START_TIMEOUT_S} s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    _require_browser()
    folder = tmp_path_factory.mktemp("browser")
    evil = folder / "evil.jsonl"
    evil.write_text(json.dumps(EVIL) + "\n", encoding="utf-8")
    index_dir = folder / "index"
    sources = [str(_slice(folder / "slice.xml.gz", SLICE)), str(evil)]
    built = subprocess.run(
        [sys.executable, "-m", "ingest", *sources, "--index-dir", str(index_dir), "--quiet"],
        cwd=REPO,
        env=_environment(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert built.returncode == 0, built.stderr
    return index_dir


@contextmanager
def _app(index_dir: Path, *flags: str) -> Iterator[str]:
    """``python app.py`` on a free port of 127.0.0.1, serving ``index_dir``; its URL while it runs."""
    port = _free_port()
    log = index_dir.parent / f"app-{port}.log"
    # Gradio's own variables choose host and port here: the app must honour them.
    # A generated (streamed) answer: with the tiny offline model the default would be quoted evidence.
    env = _environment(
        GRADIO_SERVER_NAME="127.0.0.1",
        GRADIO_SERVER_PORT=str(port),
        PUBMED_RAG_MAX_NEW_TOKENS="64",
        PUBMED_RAG_ANSWER="generate",
    )
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "app.py", "--index-dir", str(index_dir), *flags],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=out,
        )
    try:
        url = f"http://127.0.0.1:{port}/"
        _wait_ready(url, process, log)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.fixture(scope="module")
def app_url(index_dir: Path) -> Iterator[str]:
    with _app(index_dir) as url:
        yield url


@pytest.fixture(scope="module")
def browser(app_url: str):
    from playwright.sync_api import sync_playwright

    from scripts.screenshot import CHROMIUM_FLAGS

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        yield browser
        browser.close()


def _open(browser, url: str, **context: object):
    page = browser.new_context(**context).new_page()
    page.goto(url, wait_until="load")
    page.get_by_role("textbox").first.wait_for(timeout=60_000)
    return page


def test_question_streams_an_answer_with_pubmed_sources(browser, app_url: str, tmp_path: Path) -> None:
    from scripts.screenshot import PUBMED_LINK, ask, wait_for_answer

    page = _open(browser, app_url, viewport={"width": 1280, "height": 900})
    assert "Not medical advice" in page.locator("body").inner_text()
    assert "61 abstracts" in page.locator("#index-status").inner_text()  # the status shows the live index
    answer = ask(page, "What are the risk factors for severe COVID-19?")
    assert answer.strip() and "Searching the abstracts" not in answer
    links = page.locator(PUBMED_LINK)
    assert links.count() >= 2 and links.first.get_attribute("href").startswith("https://pubmed.ncbi.nlm.nih.gov/")
    page.screenshot(path=tmp_path / "desktop.png", full_page=True)
    assert (tmp_path / "desktop.png").stat().st_size > 20_000

    page.get_by_label("Retry").last.click()  # the same question again: still one answer, sources back
    assert wait_for_answer(page).strip()
    assert page.locator("[data-testid='bot']").count() == 1
    page.get_by_label("Clear").first.click()
    page.wait_for_function("() => !document.querySelector(\"#sources a[href*='pubmed']\")", timeout=30_000)
    assert page.locator("[data-testid='user']").count() == 0


def test_markup_in_a_record_is_shown_as_text_never_run(browser, app_url: str) -> None:
    from scripts.screenshot import ask

    page = _open(browser, app_url, viewport={"width": 1280, "height": 900})
    ask(page, "Does aspirin prevent recurrent stroke?")
    card = page.locator("#sources .source-card", has=page.locator("a[href$='/990001/']"))
    card.first.wait_for(timeout=30_000)
    assert "<script>window.__pwned=1</script> Aspirin after stroke" in card.first.inner_text()
    assert "Journal of <b>Tests</b>" in card.first.inner_text()
    assert page.locator("script", has_text="__pwned").count() == 0
    assert page.locator("img[src='x']").count() == 0 and page.locator("#sources b", has_text="Tests").count() == 0
    assert page.evaluate("window.__pwned") is None


# --- a model's answer may not add a link or load anything (issue #14) -------------------------------


def _hostile_answer(beacon: str, kind: str) -> str:
    """Every Markdown and TeX (``kind="markdown"``) or HTML (``"html"``) way to make a link or load a
    resource, all aimed at ``beacon``."""
    b, host = beacon, beacon.split("//", 1)[1].rstrip("/")
    markdown = [
        f"Inline [a link]({b}inline), an image ![pixel]({b}inline.png), ![angle](<{b}angle.png>).",
        "Reference style [here][x], [collapsed][], [shortcut] and images ![t][im] and ![shortcut-image].",
        "",
        f"[x]: {b}reference",
        f"[im]: {b}reference.png",
        f'[collapsed]: {b}collapsed "title"',
        f"[shortcut]: <{b}shortcut>",
        f"[shortcut-image]: {b}shortcut.png",
        "",
        f"Autolinks <{b}autolink> <mailto:someone@{host}> <someone@evil.example>.",
        f"Bare {b}bare and www.evil.example/bare and someone@evil.example and //{host}/relative.",
        f"A footnote[^note].\n\n[^note]: {b}footnote",
        f"TeX $$\\href{{{b}tex}}{{x}}$$ and $\\url{{{b}tex-url}}$",
        f"and $$\\includegraphics{{{b}tex.png}}$$.",
        f"Escaped already &lt;img src={b}entity.png&gt; and &#91;x&#93;({b}entity).",
    ]
    html = [
        f'HTML <a href="{b}anchor">anchor</a> <img src="{b}tag.png"> <iframe src="{b}frame"></iframe>',
        f'<video src="{b}video.mp4"></video> <audio src="{b}audio.mp3"></audio>',
        f'<link rel="stylesheet" href="{b}style.css"> <style>@import url({b}import.css);</style>',
        f'<svg><image href="{b}svg.png"/></svg> <object data="{b}object"></object> <embed src="{b}embed">',
        f'<div style="background:url({b}background.png)">styled</div>',
        f'<form action="{b}form"><button>go</button></form>',
    ]
    lines = ["Aspirin reduced recurrent stroke in adults [1].", *(markdown if kind == "markdown" else html)]
    return "\n".join([*lines, "It was well tolerated [1]."])


class _Recorder(BaseHTTPRequestHandler):
    """The beacon: counts every request a browser makes to it; answers a 1-pixel GIF."""

    hits: list[str]

    def do_GET(self) -> None:
        self.hits.append(self.path)
        self.send_response(200)
        self.send_header("Content-Type", "image/gif")
        self.end_headers()
        self.wfile.write(b"GIF89a\x01\x00\x01\x00\x00\x00\x00;")

    do_POST = do_GET

    def log_message(self, *args) -> None:
        pass


class _ScriptedEndpoint(BaseHTTPRequestHandler):
    """An OpenAI-compatible server whose model streams ``reply`` in small chunks, whatever it is asked."""

    reply = ""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        for start in range(0, len(self.reply), 40):
            chunk = {"choices": [{"delta": {"content": self.reply[start : start + 40]}}]}
            self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
        self.wfile.write(b"data: [DONE]\n\n")

    def log_message(self, *args) -> None:
        pass


@contextmanager
def _serve(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.mark.parametrize("kind", ["markdown", "html"])
def test_an_answer_cannot_add_a_link_or_load_anything(browser, index_dir: Path, kind: str) -> None:
    """A model behind --endpoint writes every link, image, autolink and TeX form, or every HTML one,
    aimed at a beacon on another port: the answer shows no link but PubMed's, no remote image, and
    the browser sends nothing to any other host (the beacon counts zero requests), while the answer
    streams and after. Markdown and TeX are shown as text; a reply with HTML tags has them stripped
    while it streams and is then replaced by the quoted evidence (chatbot/clean.py)."""
    from scripts.screenshot import ask

    hits: list[str] = []
    beacon_handler = type("Beacon", (_Recorder,), {"hits": hits})
    with _serve(beacon_handler) as beacon:
        model = type("Model", (_ScriptedEndpoint,), {"reply": _hostile_answer(beacon, kind)})
        with (
            _serve(model) as endpoint,
            _app(index_dir, "--endpoint", endpoint, "--rerank", "off", "--min-score", "0") as url,
        ):
            page = _open(browser, url, viewport={"width": 1280, "height": 900})
            elsewhere: list[str] = []
            app_origin = url.rstrip("/")
            page.on(
                "request",
                lambda r: None if r.url.startswith((app_origin, "data:", "blob:")) else elsewhere.append(r.url),
            )
            ask(page, "Does aspirin prevent recurrent stroke?")
            page.wait_for_timeout(2_000)  # time for any late image or frame to load
            answer = page.locator("[data-testid='bot']").last
            text = answer.inner_text()
            hrefs = answer.locator("a[href]").evaluate_all("links => links.map(a => a.href)")
            loaders = answer.locator("img, iframe, video, audio, object, embed, image, form, link, style")
            loading = loaders.evaluate_all("nodes => nodes.map(n => n.outerHTML)")
            aimed = page.locator(f"[src^='{beacon}'], [href^='{beacon}'], [data^='{beacon}']").count()
    assert hits == [], f"the browser fetched from the beacon: {hits}"
    assert elsewhere == [], f"requests left for another host: {elsewhere}"
    assert hrefs and all(h.startswith("https://pubmed.ncbi.nlm.nih.gov/") for h in hrefs), hrefs
    assert loading == [] and aimed == 0, loading
    if kind == "markdown":
        assert "Aspirin reduced recurrent stroke" in text and "It was well tolerated" in text
        assert "[here][x]" in text and "![t][im]" in text and "$$\\href" in text  # all of it shown as text
    else:
        assert text.startswith("Quoted evidence") and "anchor" not in text, text


def test_mobile_layout_answers_too(browser, app_url: str, tmp_path: Path) -> None:
    from scripts.screenshot import ask

    page = _open(browser, app_url, viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    ask(page, "Does intravenous paracetamol reduce morphine consumption after surgery?")
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390 + 2, f"the page scrolls sideways on a phone ({width} px wide)"
    page.screenshot(path=tmp_path / "mobile.png", full_page=True)
    assert (tmp_path / "mobile.png").stat().st_size > 20_000


def test_added_abstracts_are_searched_by_the_next_question(browser, app_url: str, tmp_path: Path) -> None:
    """Last in this module: it grows the shared index (the other tests count on the original)."""
    from scripts.screenshot import ask

    records = [
        {
            "pmid": str(980000 + i),
            "title": f"Vitamin D and falls in older adults living at home, cohort {i}",
            "abstract": f"In cohort {i}, vitamin D supplementation reduced falls in older adults living at home.",
            "year": 2022,
        }
        for i in range(3)
    ]
    upload = tmp_path / "vitamin-d.jsonl"
    upload.write_text("\n".join(json.dumps(r) for r in records) + "\n", encoding="utf-8")
    page = _open(browser, app_url, viewport={"width": 1280, "height": 900})
    page.get_by_role("tab", name="Add abstracts").click()
    page.locator("input[type=file]").set_input_files(str(upload))
    page.get_by_text("vitamin-d.jsonl").first.wait_for(timeout=120_000)  # uploaded (slow on busy cores)
    page.get_by_role("button", name="Add to the index").click()
    page.get_by_text("Chats now search").wait_for(timeout=180_000)
    assert "added 3" in page.locator("body").inner_text()
    assert "64 abstracts" in page.locator("#index-status").inner_text()
    page.get_by_role("tab", name="Ask").click()
    ask(page, "Does vitamin D supplementation reduce falls in older adults living at home?")
    assert page.locator("#sources a[href*='/98000']").count() >= 1  # the new records, in the same session
