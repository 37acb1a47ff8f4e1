"""Screenshot of the running app answering a question (for the README).

Needs Playwright (pip) and a Chromium binary (Debian: apt-get install chromium):

    python app.py &   # wait until it serves
    python scripts/screenshot.py --url http://127.0.0.1:7860 --out docs/screenshot.png
    python scripts/screenshot.py --width 390 --height 844 --out docs/screenshot-mobile.png

``ask`` and ``wait_for_answer`` are shared with tests/test_browser.py: they wait until the answer
has finished streaming and the sources panel holds PubMed links.
"""

from __future__ import annotations

import argparse

CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
PUBMED_LINK = "#sources a[href*='pubmed.ncbi.nlm.nih.gov']"


CHAT_PLACEHOLDER = "Type a message..."  # Gradio ChatInterface's input


def ask(page, question: str, *, timeout_ms: int = 180_000) -> str:
    """Send ``question`` in the chat and wait for the finished answer and its sources; the answer's text."""
    box = page.get_by_placeholder(CHAT_PLACEHOLDER)  # the chat's own box (the sidebar has a text field too)
    box.fill(question)
    box.press("Enter")
    return wait_for_answer(page, timeout_ms=timeout_ms)


def wait_for_answer(page, *, timeout_ms: int = 180_000) -> str:
    """After a question is sent (or Retry pressed): the stop button comes and goes, then sources show."""
    stop = page.locator("button.stop-button").first
    stop.wait_for(state="visible", timeout=30_000)  # the app took the question
    stop.wait_for(state="hidden", timeout=timeout_ms)  # the answer has finished streaming
    page.locator(PUBMED_LINK).first.wait_for(timeout=30_000)
    return page.locator("[data-testid='bot']").last.inner_text()


def main() -> None:
    from playwright.sync_api import sync_playwright

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:7860")
    parser.add_argument("--out", default="docs/screenshot.png")
    parser.add_argument("--question", default="Does intravenous paracetamol reduce morphine consumption after surgery?")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--width", type=int, default=1400)
    parser.add_argument("--height", type=int, default=1000)
    args = parser.parse_args()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=args.chromium, args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": args.width, "height": args.height})
        page.goto(args.url, wait_until="load")
        ask(page, args.question)
        page.screenshot(path=args.out, full_page=True)
        browser.close()


if __name__ == "__main__":
    main()
