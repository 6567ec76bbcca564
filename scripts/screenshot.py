"""Screenshot of the Segment page with the shipped weights, for the README (docs/segment.png).

    python scripts/screenshot.py [IMAGE MASK]

Starts the app on a loopback port with weights/, uploads a slice and its mask in
headless Chromium and saves the page. Needs Debian's chromium-headless-shell.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

import test_browser as tb  # noqa: E402  (reuses the browser test's app runner)


def main() -> int:
    from playwright.sync_api import sync_playwright

    image = Path(sys.argv[1]) if len(sys.argv) > 2 else tb.SHARED / "images" / "medseg_003.jpg"
    mask = Path(sys.argv[2]) if len(sys.argv) > 2 else tb.SHARED / "masks" / "medseg_003.png"
    with tempfile.TemporaryDirectory() as tmp, tb.running_app(Path(tmp), REPO / "weights") as url:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=tb.browser_executable(), args=tb.LAUNCH_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(120_000)
            page.goto(url)
            page.get_by_text("Upload a CT slice").wait_for()
            files = page.locator('input[type="file"]')
            files.nth(0).set_input_files(str(image))
            files.nth(1).set_input_files(str(mask))
            page.get_by_text("Agreement with the ground truth").wait_for()
            time.sleep(2)
            tb.wait_idle(page)
            page.set_viewport_size({"width": 1400, "height": 2000})
            time.sleep(1.5)
            out = REPO / "docs" / "segment.png"
            out.parent.mkdir(exist_ok=True)
            page.screenshot(path=str(out))
            browser.close()
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
