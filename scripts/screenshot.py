"""Screenshots of the Segment page with the shipped weights, for the README (docs/).

    python scripts/screenshot.py [IMAGE MASK]

Starts the app on a loopback port with weights/ and, in headless Chromium:
1. clicks "Example" on a fresh page (twice: cold, then a new session with the
   models cached) and times it until every model's overlay is shown
   (test-output/example.png);
2. uploads a slice and its mask and saves the page (docs/segment.jpg), printing
   the Dice column of the metrics table (compare with ``python -m smallcovid evaluate``).
Needs Debian's chromium-headless-shell.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

import test_browser as tb  # noqa: E402  (reuses the browser test's app runner and page helpers)

CAPTIONS = '[data-testid="stImageCaption"]'


def save(page, out: Path) -> Path:
    """The main column (no sidebar), 1100x1880 px; JPEG for docs/ (CT noise makes PNGs large)."""
    out.parent.mkdir(exist_ok=True)
    tb.wait_idle(page)
    page.mouse.move(0, 0)
    page.set_viewport_size({"width": 1400, "height": 2000})
    time.sleep(1.5)
    clip = {"x": 300, "y": 0, "width": 1100, "height": 1880}
    if out.suffix == ".jpg":
        page.screenshot(path=str(out), clip=clip, type="jpeg", quality=85)
    else:
        page.screenshot(path=str(out), clip=clip)
    page.set_viewport_size({"width": 1400, "height": 1000})
    return out


def main() -> int:
    from playwright.sync_api import sync_playwright

    image = Path(sys.argv[1]) if len(sys.argv) > 2 else tb.SHARED / "images" / "medseg_003.jpg"
    mask = Path(sys.argv[2]) if len(sys.argv) > 2 else tb.SHARED / "masks" / "medseg_003.png"
    n_models = len(list((REPO / "weights").glob("*.safetensors")))
    with tempfile.TemporaryDirectory() as tmp, tb.running_app(Path(tmp), REPO / "weights") as url:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=tb.browser_executable(), args=tb.LAUNCH_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(120_000)
            for visit in ("first visit (models load)", "new session (models cached)"):
                page.goto(url)
                page.get_by_text("Upload a CT slice").wait_for()
                tb.wait_idle(page)
                t0 = time.monotonic()
                page.get_by_role("button", name="Example").click()
                while page.locator(CAPTIONS).count() < n_models + 2:  # scan + overlays + disagreement
                    time.sleep(0.05)
                print(f"example, {visit}: {n_models} overlays after {time.monotonic() - t0:.2f} s")
            print(save(page, REPO / "test-output" / "example.png"))

            page.goto(url)
            page.get_by_text("Upload a CT slice").wait_for()
            files = page.locator('input[type="file"]')
            files.nth(0).set_input_files(str(image))
            files.nth(1).set_input_files(str(mask))
            page.get_by_text("Agreement with the ground truth").wait_for()
            print("Dice at the default threshold:", tb.wait_for_table(page, n_models))
            print(save(page, REPO / "docs" / "segment.jpg"))
            browser.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
