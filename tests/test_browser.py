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
import time
import urllib.request
from collections.abc import Iterator
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
def app_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
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
    port = _free_port()
    log = folder / "app.log"
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
            [sys.executable, "app.py", "--index-dir", str(index_dir)], cwd=REPO, env=env, stdout=out, stderr=out
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
