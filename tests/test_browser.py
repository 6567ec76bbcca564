"""End to end in a real browser: ``streamlit run app.py`` driven by Debian's Chromium via Playwright.

Segment: upload a slice and its mask, wait for the overlays and the metrics table,
move the threshold slider with the keyboard and see Dice change. Train: start a
tiny job (2 folds, 1 epoch, 32 px, 6 generated images) and see it finish.
Public mode: a second app started with ``SMALLCOVID_PUBLIC=1`` shows a visitor no
training form and no server folders. Screenshots go to ``test-output/``. Run with
``pytest -m browser``.
"""

from __future__ import annotations

import os
import signal
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

from apphelpers import blob_slice, make_labeled_folder, png_bytes
from smallcovid.app import server as appserver

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "test-output"
SHARED = REPO.parent / "shared" / "data" / "covid-semiseg" / "train"
BROWSERS = ("/usr/lib/chromium/chromium-headless-shell", "/usr/bin/chromium")
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--no-first-run"]


def browser_executable() -> str | None:
    return next((b for b in BROWSERS if os.access(b, os.X_OK)), None)


def require_browser() -> None:
    """Skip unless a Chromium and playwright are installed (and SMALLCOVID_SKIP_BROWSER is not 1)."""
    # Runs in the default test run whenever a browser is installed (.ci/run installs one);
    # SMALLCOVID_SKIP_BROWSER=1 skips it for quick local runs.
    if os.environ.get("SMALLCOVID_SKIP_BROWSER") == "1":
        pytest.skip("real-browser test skipped: SMALLCOVID_SKIP_BROWSER=1")
    if browser_executable() is None:
        pytest.skip(f"no Chromium found at {' or '.join(BROWSERS)} (apt install chromium-headless-shell)")
    pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")


@contextmanager
def running_app(tmp: Path, weights: Path, **env_extra: str) -> Iterator[str]:
    """The app on a free loopback port with ``weights`` and a jobs folder in ``tmp``."""
    env = dict(SMALLCOVID_WEIGHTS_DIR=str(weights), SMALLCOVID_JOBS_DIR=str(tmp / "jobs"), OMP_NUM_THREADS="1",
               **env_extra)
    stop_jobs = lambda pid: _stop_jobs(tmp / "jobs" / "jobs.db")  # noqa: E731  (workers outlive the server)
    with appserver.running_app(tmp / "streamlit.log", env, on_stop=stop_jobs) as url:
        yield url


@pytest.fixture(scope="module")
def app_url(tmp_path_factory, tiny_weights):
    """Start the app on a free port with tiny weights and a fresh jobs folder; yields (URL, its temp folder)."""
    require_browser()
    tmp = tmp_path_factory.mktemp("browser")
    with running_app(tmp, tiny_weights) as url:
        yield url, tmp


@pytest.fixture(scope="module")
def public_url(tmp_path_factory, tiny_weights):
    """The app in public mode (SMALLCOVID_PUBLIC=1, no admin password); yields its URL."""
    require_browser()
    tmp = tmp_path_factory.mktemp("browser-public")
    with running_app(tmp, tiny_weights, SMALLCOVID_PUBLIC="1", SMALLCOVID_ADMIN_PASSWORD="") as url:
        yield url


def _stop_jobs(db: Path) -> None:
    """Kill training processes this test's app started that are still running."""
    if not db.is_file():
        return
    from smallcovid.training.jobs import JobStore, _alive

    for job in JobStore(db).list():
        if _alive(job.pid, job.id):
            os.killpg(job.pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def browser():
    """One headless Chromium for the module's tests (each test opens its own pages)."""
    require_browser()
    from playwright.sync_api import sync_playwright

    OUT.mkdir(exist_ok=True)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=browser_executable(), args=LAUNCH_ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def page(app_url, browser):
    pg = browser.new_page(viewport={"width": 1400, "height": 1000})
    pg.set_default_timeout(60_000)
    yield pg
    pg.close()


def wait_idle(page, timeout: float = 60) -> None:
    """Wait until the app is not running a script (the "Running…/Stop" status widget is gone)."""
    time.sleep(0.5)
    page.locator('[data-testid="stStatusWidget"]').wait_for(state="hidden", timeout=timeout * 1000)


def shot(page, name: str, height: int = 2600) -> None:
    """Screenshot with a tall viewport: Streamlit scrolls inside its own container, not the page."""
    wait_idle(page)
    page.mouse.move(0, 0)  # no tooltip over the content
    size = page.viewport_size
    page.set_viewport_size({"width": size["width"], "height": height})
    time.sleep(1.0)
    page.screenshot(path=str(OUT / name))
    page.set_viewport_size(size)


def slice_and_mask(tmp: Path) -> tuple[Path, Path]:
    """medseg_003 from the shared data when present, else a generated slice with its mask."""
    if (SHARED / "images" / "medseg_003.jpg").is_file():
        return SHARED / "images" / "medseg_003.jpg", SHARED / "masks" / "medseg_003.png"
    img, mask = blob_slice(128, seed=3)
    (tmp / "masks").mkdir(exist_ok=True)
    (tmp / "case_3.png").write_bytes(png_bytes(img))
    (tmp / "masks" / "case_3.png").write_bytes(png_bytes(mask))
    return tmp / "case_3.png", tmp / "masks" / "case_3.png"


def dice_column(page) -> dict[str, str]:
    """Model -> Dice text from the metrics table (the first dataframe; its accessible grid cells)."""
    grid = page.locator('[data-testid="stDataFrame"]').first
    cells = grid.locator('td[role="gridcell"]').all_inner_texts()
    ncols = int(grid.locator('table[role="grid"]').get_attribute("aria-colcount"))
    rows = [cells[i:i + ncols] for i in range(0, len(cells), ncols)]
    return {r[0]: r[1] for r in rows}


def wait_for_table(page, n_rows: int, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            table = dice_column(page)
        except Exception:  # the table is being rendered
            table = {}
        if len(table) == n_rows:
            return table
        time.sleep(0.5)
    raise AssertionError("the metrics table did not appear")


def wait_for_change(page, before: dict, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(0.5)
        try:
            now = dice_column(page)
        except Exception:  # the table is being re-rendered
            continue
        if now and now.keys() == before.keys() and now != before:
            return now
    raise AssertionError(f"Dice did not change: {before}")


def install_weights(page, tries: int = 5) -> None:
    """Click "Use these weights"; the job list re-renders every 2 s, so a click can land on a
    button that is being replaced: click again until the page says it is installed."""
    for _ in range(tries):
        button = page.get_by_role("button", name="Use these weights")
        if button.count():
            button.click()
        try:
            page.get_by_text("Installed as browser-tiny-job1").wait_for(timeout=10_000)
            return
        except Exception:  # playwright's TimeoutError: try once more
            continue
    raise AssertionError("the job's weights were not installed")


def test_segment_upload_slider_then_train_a_tiny_job(app_url, page):
    url, tmp = app_url
    t0 = time.monotonic()

    def step(what: str) -> None:  # timings, shown with pytest -s
        print(f"{time.monotonic() - t0:6.1f} s  {what}", flush=True)

    page.goto(url)
    page.get_by_text("Upload a CT slice").wait_for()
    image, mask = slice_and_mask(tmp)
    files = page.locator('input[type="file"]')
    files.nth(0).set_input_files(str(image))
    files.nth(1).set_input_files(str(mask))
    page.get_by_text("Agreement with the ground truth").wait_for(timeout=90_000)
    captions = page.locator('[data-testid="stImageCaption"]')
    captions.nth(5).wait_for()
    texts = captions.all_inner_texts()
    assert texts[:5] == ["scan", "smallcovid-net", "unet", "segnet", "mask-rcnn"], texts
    assert texts[5].startswith("disagreement")
    step("overlays shown")
    before = wait_for_table(page, 4)
    assert set(before) == {"smallcovid-net", "unet", "segnet", "mask-rcnn"}
    shot(page, "segment-upload.png")

    step("metrics table read, screenshot taken")
    slider = page.locator('input[type="range"][aria-label="Threshold"]')
    slider.focus()
    for _ in range(40):  # 0.80 -> 0.40 in steps of 0.01
        page.keyboard.press("ArrowLeft")
    after = wait_for_change(page, before)
    assert slider.get_attribute("aria-valuetext") == "0.40"
    assert any(after[m] != before[m] for m in before)
    shot(page, "segment-threshold-0.40.png")

    step("Dice changed with the threshold")
    page.get_by_role("button", name="Example").click()
    page.get_by_text("drawn procedurally").wait_for()
    captions.nth(5).wait_for()
    shot(page, "segment-example.png")

    step("example shown")
    data = make_labeled_folder(tmp / "tiny-set", n=6, size=32)
    page.locator('[data-testid="stSidebarNav"] a[href$="/train"]').click()
    page.get_by_text("No training jobs yet.").wait_for()
    page.get_by_label("Data folder on the server", exact=True).fill(str(data))
    page.get_by_label("Folds", exact=True).fill("2")
    page.get_by_label("Epochs", exact=True).fill("1")
    page.get_by_label("Job name", exact=True).fill("browser-tiny")
    page.locator('[data-testid="stSelectbox"]').filter(has_text="Image size").click()
    page.get_by_role("option", name="32", exact=True).click()
    page.get_by_role("button", name="Start training").click()
    page.get_by_text("Submitted job(s) #1.").wait_for()
    step("job submitted")
    page.get_by_text("#1 browser-tiny · smallcovid-net · done").wait_for(timeout=180_000)
    page.get_by_text("Cross-validation results").wait_for()
    shot(page, "train-done.png")
    step("job done")
    install_weights(page)

    page.goto(url)  # a fresh session: the installed model is in the Segment picker
    page.get_by_text("Upload a CT slice").wait_for()
    page.locator('[data-testid="stMultiSelect"]').get_by_text("browser-tiny-job1 (trained here)").wait_for()
    step("installed model listed on Segment")


def test_public_mode_blocks_training_and_server_folders(public_url, browser):
    """A visitor of the public demo: the Train page has no form and Compare has no server folders."""
    pg = browser.new_page(viewport={"width": 1400, "height": 1000})
    pg.set_default_timeout(60_000)
    try:
        pg.goto(f"{public_url}/train")
        pg.get_by_text("Training is turned off in this public demo.").wait_for()
        wait_idle(pg)
        assert pg.get_by_role("button", name="Start training").count() == 0
        assert pg.get_by_label("Data folder on the server", exact=True).count() == 0
        assert pg.locator('input[type="password"]').count() == 0  # no password configured: nothing to unlock
        shot(pg, "public-train.png", height=1000)

        pg.goto(f"{public_url}/compare")
        pg.get_by_text("Zip of images/").wait_for()  # the zip upload is the default here
        pg.get_by_text("Folder on the server").click()
        pg.get_by_text("Folders on the server are not available in this public demo").wait_for()
        wait_idle(pg)
        assert pg.get_by_label("Folder (images/", exact=False).count() == 0
        assert pg.get_by_role("button", name="Run comparison").is_disabled()
    finally:
        pg.close()
