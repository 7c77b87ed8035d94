"""Screenshots of the built report (`variantbench report` first), as a newcomer opens it, for the
README and closing notes: python tools/screenshot_report.py [OUT_DIR]  (default reports/screenshots).
Needs playwright and Debian's chromium (`make browser`)."""

import sys
from pathlib import Path

from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parent.parent
HTML = ROOT / "reports" / "html"
PAGES = {
    "summary.png": (HTML / "variantbench" / "index.html").as_uri(),
    "summary-moe.png": (HTML / "variantbench" / "index.html").as_uri() + "#moe",
    "asv-gqa8-triton.png": (HTML / "index.html").as_uri()
    + "#bench_attention.AttentionForward.time_forward?p-variant='gqa_8'&p-implementation='triton'",
}


def main(out):
    out.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path="/usr/bin/chromium", args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"])
        page = browser.new_page(viewport={"width": 1300, "height": 1000})
        for name, url in PAGES.items():
            page.goto(url)
            page.wait_for_load_state("networkidle")
            if url.endswith("#moe"):
                page.locator("h3", has_text="moe").first.scroll_into_view_if_needed()
            page.screenshot(path=str(out / name))
            print(out / name)
        browser.close()


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "reports" / "screenshots")
