"""Screenshots of every page with the shipped weights, for the README (docs/*.jpg, each < 300 KB).

    python scripts/screenshot.py [IMAGE MASK]

Starts the app on a loopback port with weights/ and, in headless Chromium (1400 px wide):
1. clicks "Example" on a fresh page (twice: cold, then a new session with the models
   cached), times it until every model's overlay is painted, prints the viewer's Dice
   per model and saves docs/example.jpg;
2. uploads a slice and its mask (default ``medseg_003`` of ``$SMALLCOVID_DATA_DIR``), prints the
   Dice column (compare with ``python -m smallcovid evaluate --threshold <the default>``)
   and saves docs/segment.jpg;
3. Compare on 10 training slices (docs/compare.jpg), Train (docs/train.jpg) and Models
   (docs/models.jpg).
Needs Debian's chromium-headless-shell.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

import test_browser as tb  # noqa: E402  (reuses the browser test's app runner and page helpers)

MAX_BYTES = 300_000


def save(page, out: Path, height: int = 1880) -> Path:
    """The main column (no sidebar), 1100 px wide; JPEG, quality lowered until it is under 300 KB."""
    out.parent.mkdir(exist_ok=True)
    tb.wait_idle(page)
    page.mouse.move(0, 0)
    page.set_viewport_size({"width": 1400, "height": max(height + 120, 1000)})
    time.sleep(1.5)
    page.evaluate("() => { document.activeElement && document.activeElement.blur(); window.scrollTo(0, 0);"
                  " const sel = '[data-testid=\"stMain\"], [data-testid=\"stAppViewContainer\"]';"
                  " for (const e of document.querySelectorAll(sel)) e.scrollTo(0, 0); }")
    time.sleep(0.5)
    clip = {"x": 300, "y": 0, "width": 1100, "height": height}
    for quality in (85, 78, 70, 62, 55):
        page.screenshot(path=str(out), clip=clip, type="jpeg", quality=quality)
        if out.stat().st_size < MAX_BYTES:
            break
    page.set_viewport_size({"width": 1400, "height": 1000})
    print(f"{out} ({out.stat().st_size / 1000:.0f} KB)")
    return out


def example(page, url: str) -> None:
    for visit in ("first visit (models load)", "new session (models cached)"):
        page.goto(url)
        page.get_by_text("Upload a CT slice").wait_for()
        tb.wait_idle(page)
        t0 = time.monotonic()
        page.get_by_role("button", name="Example").click()
        page.locator(f"{tb.VIEWER}[data-painted]").wait_for()
        print(f"example, {visit}: every overlay painted after {time.monotonic() - t0:.2f} s")
    print("Example, Dice at the default threshold:", tb.wait_for_table(page, 4),
          "threshold", page.locator(tb.VIEWER).get_attribute("data-threshold"))
    page.locator(f"{tb.VIEWER} details.inspect summary").click()  # the before / after swipe, open
    page.locator(f'{tb.VIEWER} input[type="range"][aria-label="Swipe position"]').fill("55")
    save(page, REPO / "docs" / "example.jpg", height=2200)


def segment(page, url: str, tmp: Path, image: Path, mask: Path) -> None:
    page.goto(url)
    page.get_by_text("Upload a CT slice").wait_for()
    tb.upload_scan_then_mask(page, tmp, image, mask)
    page.get_by_text("Agreement with the ground truth").wait_for()
    tb.wait_idle(page)
    page.locator(f"{tb.VIEWER}[data-painted]").wait_for()
    print(f"{image.name}, Dice at the default threshold:", tb.wait_for_table(page, 4),
          "threshold", page.locator(tb.VIEWER).get_attribute("data-threshold"))
    save(page, REPO / "docs" / "segment.jpg", height=1900)


def compare(page, url: str, tmp: Path) -> None:
    data = tmp / "ten"
    for sub in ("images", "masks", "classes"):
        (data / sub).mkdir(parents=True)
    stems = sorted(p.stem for p in (tb.SHARED / "images").glob("*.jpg"))[:10]
    for s in stems:
        shutil.copy(tb.SHARED / "images" / f"{s}.jpg", data / "images")
        for sub in ("masks", "classes"):
            if (tb.SHARED / sub / f"{s}.png").is_file():
                shutil.copy(tb.SHARED / sub / f"{s}.png", data / sub)
    page.goto(f"{url}/compare")
    box = page.get_by_label("Folder (images/", exact=False)
    box.fill(str(data))
    box.press("Enter")
    tb.wait_idle(page)
    page.get_by_role("button", name="Run comparison").click()
    page.get_by_text("Table 1 —").wait_for(timeout=600_000)
    save(page, REPO / "docs" / "compare.jpg", height=1700)


def main() -> int:
    from playwright.sync_api import sync_playwright

    image = Path(sys.argv[1]) if len(sys.argv) > 2 else tb.SHARED / "images" / "medseg_003.jpg"
    mask = Path(sys.argv[2]) if len(sys.argv) > 2 else tb.SHARED / "masks" / "medseg_003.png"
    with tempfile.TemporaryDirectory() as tmp, tb.running_app(Path(tmp), REPO / "weights") as url:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=tb.browser_executable(), args=tb.LAUNCH_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(180_000)
            example(page, url)
            segment(page, url, Path(tmp), image, mask)
            if (tb.SHARED / "images").is_dir():
                compare(page, url, Path(tmp))
            page.goto(f"{url}/train")
            page.get_by_text("Start training").wait_for()
            save(page, REPO / "docs" / "train.jpg", height=1100)
            page.goto(f"{url}/models")
            page.get_by_text("References").wait_for()
            save(page, REPO / "docs" / "models.jpg", height=2200)
            browser.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
