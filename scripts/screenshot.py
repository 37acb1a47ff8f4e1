"""Screenshot of the running app answering a question (for the README).

Needs Playwright (pip) and a Chromium binary (Debian: apt-get install chromium):

    python app.py &   # wait until it serves
    python scripts/screenshot.py --url http://127.0.0.1:7860 --out docs/screenshot.png
"""

from __future__ import annotations

import argparse

from playwright.sync_api import sync_playwright

CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def main() -> None:
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
        box = page.get_by_role("textbox").first
        box.fill(args.question)
        box.press("Enter")
        page.locator("a[href*='pubmed.ncbi.nlm.nih.gov']").first.wait_for(timeout=180_000)
        page.wait_for_function(  # the stop button disappears when streaming ends
            "() => !document.querySelector('button.stop-button, button[aria-label=\"Stop\"]')", timeout=180_000
        )
        page.screenshot(path=args.out, full_page=True)
        browser.close()


if __name__ == "__main__":
    main()
