"""Real-browser checks of app behaviours otherwise covered only by AppTest (tests/test_app*.py):
a cancelled job is neutral news, an empty data folder asks for one, a mask of another name is not
used, a rebuilt viewer replaces the old one, a tall image keeps panels of sensible height, the
Metrics CSV names its threshold, the Models page shows the disclaimer once and the CV table of a
model trained here. Run with ``pytest -m browser``.
"""

from __future__ import annotations

import csv
import io
import re
import time
from pathlib import Path

import numpy as np
import pytest

from apphelpers import blob_slice, finished_job, make_labeled_folder, png_bytes
from test_browser import (SCAN_INPUT, VIEWER, app_url, browser, page, shot, upload_scan_then_mask,  # noqa: F401
                          viewer_captions, wait_for_table, wait_idle, wait_or_explain)

pytestmark = pytest.mark.browser

INFO = '[data-testid="stAlertContentInfo"]'
WARNING = '[data-testid="stAlertContentWarning"]'
ERROR = '[data-testid="stAlertContentError"]'
MAIN = '[data-testid="stMain"]'


def main_text(pg) -> str:
    return pg.locator(MAIN).inner_text()


def test_browser_empty_data_folder_asks_for_one(app_url, page):  # noqa: F811
    """Train: an empty folder field says "Enter a data folder", not "does not exist"; Compare keeps
    its button disabled and says nothing about a folder that does not exist."""
    url, _ = app_url
    page.goto(f"{url}/train")
    page.get_by_role("button", name="Start training").wait_for()
    wait_idle(page)
    field = page.get_by_label("Data folder on the server", exact=True)
    field.fill("")
    page.get_by_role("button", name="Start training").click()
    page.locator(ERROR).filter(has_text="Enter a data folder").wait_for(timeout=30_000)
    wait_idle(page)
    assert "does not exist" not in main_text(page)

    page.goto(f"{url}/compare")
    folder = page.get_by_label("Folder (images/", exact=False)
    folder.wait_for()
    folder.fill("   ")
    folder.press("Enter")
    wait_idle(page)
    assert page.get_by_role("button", name="Run comparison").is_disabled()
    assert "does not exist" not in main_text(page)
    assert page.locator(ERROR).count() == 0


def test_browser_mask_of_another_name_is_not_used(app_url, page):  # noqa: F811
    """Scan a.png + mask b.png of the same size: a warning, and no agreement metrics."""
    url, tmp = app_url
    img, mask = blob_slice(64, seed=2)
    d = tmp / "names"
    d.mkdir(exist_ok=True)
    (d / "a.png").write_bytes(png_bytes(img))
    (d / "b.png").write_bytes(png_bytes(mask))
    page.goto(url)
    page.get_by_text("Upload a CT slice").wait_for()
    wait_idle(page)  # the first run finishes first: an upload made during it was once not picked up
    upload_scan_then_mask(page, tmp, d / "a.png", d / "b.png")
    wait_or_explain(page.locator(WARNING).filter(has_text="b.png is not named like the scan a.png"), page,
                    tmp / "streamlit.log")
    page.locator(f"{VIEWER}[data-painted]").wait_for(timeout=90_000)
    assert page.locator(VIEWER).count() == 1
    wait_idle(page)
    assert page.get_by_text("Agreement with the ground truth").count() == 0


def test_browser_viewer_is_replaced_not_stacked(app_url, page):  # noqa: F811
    """Removing a model from the picker rebuilds the viewer for three models in place of the old one."""
    url, tmp = app_url
    img, _ = blob_slice(96, seed=5)
    scan = tmp / "stack.png"
    scan.write_bytes(png_bytes(img))
    page.goto(url)
    page.get_by_text("Upload a CT slice").wait_for()
    wait_idle(page)  # the first run finishes first: an upload made during it was once not picked up
    page.locator(SCAN_INPUT).set_input_files(str(scan))
    wait_or_explain(page.locator(f"{VIEWER}[data-painted]"), page, tmp / "streamlit.log")
    wait_idle(page)
    assert viewer_captions(page)[:5] == ["scan", "smallcovid-net", "unet", "segnet", "mask-rcnn"]
    picker = page.locator('[data-testid="stMultiSelect"]').filter(has_text="smallcovid-net")
    picker.locator("input").click()
    picker.locator("input").press("Backspace")  # drops the last tag: mask-rcnn
    page.keyboard.press("Escape")
    for _ in range(60):
        caps = viewer_captions(page)
        if "mask-rcnn" not in caps and caps[:4] == ["scan", "smallcovid-net", "unet", "segnet"]:
            break
        time.sleep(0.5)
    wait_idle(page)
    assert page.locator(VIEWER).count() == 1
    assert viewer_captions(page)[:4] == ["scan", "smallcovid-net", "unet", "segnet"]
    assert "mask-rcnn" not in viewer_captions(page)


def test_browser_tall_narrow_image_keeps_panels_of_sensible_height(app_url, page):  # noqa: F811
    """A 30x400 image: each panel at most 1.25x as high as it is wide, not 13x."""
    from PIL import Image

    url, tmp = app_url
    path = tmp / "tall.png"
    Image.fromarray((np.random.default_rng(0).random((400, 30)) * 255).astype(np.uint8)).save(path)
    page.goto(url)
    page.get_by_text("Upload a CT slice").wait_for()
    wait_idle(page)  # the first run finishes first: an upload made during it was once not picked up
    page.locator(SCAN_INPUT).set_input_files(str(path))
    wait_or_explain(page.locator(f"{VIEWER}[data-painted]"), page, tmp / "streamlit.log")
    boxes = page.locator(f"{VIEWER} figure").evaluate_all(
        "(els) => els.map((f) => [f.getBoundingClientRect().width, f.querySelector('canvas').getBoundingClientRect().height])")
    assert boxes and all(h <= 1.25 * w + 2 for w, h in boxes), boxes


def test_browser_volume_slices_and_windows_keep_one_viewer(app_url, page):  # noqa: F811
    """A 3-slice NIfTI: "next ▶" and the mediastinum window each rebuild the viewer; one stays."""
    import nibabel as nib

    from smallcovid.data.phantom import make_phantom

    url, tmp = app_url
    ph = make_phantom(64, seed=4)
    vol = np.stack([ph.scan.pixels + 20 * k for k in range(3)], axis=-1).astype(np.int16)
    path = tmp / "three.nii.gz"
    nib.save(nib.Nifti1Image(vol, np.diag([0.7, 0.7, 2.5, 1.0])), path)
    page.goto(url)
    page.get_by_text("Upload a CT slice").wait_for()
    wait_idle(page)  # the first run finishes first: an upload made during it was once not picked up
    page.locator(SCAN_INPUT).set_input_files(str(path))
    wait_or_explain(page.locator(f"{VIEWER}[data-painted]"), page, tmp / "streamlit.log")
    wait_idle(page)
    first = page.locator(VIEWER).get_attribute("data-key")
    page.get_by_role("button", name="next ▶").click()
    wait_idle(page)
    page.locator('[data-testid="stRadio"]').get_by_text("mediastinum", exact=False).click()
    wait_idle(page)
    page.locator(f"{VIEWER}[data-painted]").wait_for()
    assert page.locator(VIEWER).count() == 1
    assert page.locator(VIEWER).get_attribute("data-key") != first


def test_browser_metrics_csv_has_a_threshold_column(app_url, page):  # noqa: F811
    url, _ = app_url
    page.goto(url)
    page.get_by_text("Upload a CT slice").wait_for()
    page.get_by_role("button", name="Example").click()
    page.get_by_text("drawn procedurally").wait_for(timeout=90_000)
    wait_for_table(page, 4)
    wait_idle(page)
    with page.expect_download() as dl:
        page.get_by_role("button", name="Metrics CSV").click()
    text = Path(dl.value.path()).read_text(encoding="utf-8")
    header = next(csv.reader(io.StringIO(text)))
    assert "threshold" in header, header
    assert header[:2] == ["model", "threshold"], header


def _submit_tiny_job(page, url: str, data: Path, name: str, epochs: int) -> int:
    page.goto(f"{url}/train")
    page.get_by_role("button", name="Start training").wait_for()
    page.get_by_label("Data folder on the server", exact=True).fill(str(data))
    page.get_by_label("Folds", exact=True).fill("2")
    page.get_by_label("Epochs", exact=True).fill(str(epochs))
    page.get_by_label("Job name", exact=True).fill(name)
    page.locator('[data-testid="stSelectbox"]').filter(has_text="Image size").click()
    page.get_by_role("option", name="32", exact=True).click()
    page.get_by_role("button", name="Start training").click()
    msg = page.get_by_text(re.compile(r"Submitted job\(s\) #\d+\."))
    msg.wait_for()
    return int(re.search(r"#(\d+)", msg.inner_text()).group(1))


def test_browser_cancel_is_neutral_info_not_an_error(app_url, page):  # noqa: F811
    url, tmp = app_url
    data = make_labeled_folder(tmp / "cancel-set", n=6, size=32)
    # The most epochs the page allows: under load a slow click must not find the job already done.
    job_id = _submit_tiny_job(page, url, data, "browser-cancel", epochs=1000)
    info = page.locator(INFO).filter(has_text="Resume")
    for _ in range(6):  # the job list re-renders every 2 s: a click can land on a replaced button
        button = page.get_by_role("button", name="Cancel", exact=True)
        try:
            button.first.wait_for(timeout=15_000)
            button.first.click()
        except Exception:
            pass
        try:
            info.first.wait_for(timeout=10_000)
            break
        except Exception:
            continue
    else:
        raise AssertionError(f"job #{job_id} was not shown as cancelled in an info box; the page shows: "
                             + " | ".join(page.locator('[data-testid="stMain"]').all_inner_texts())[:600])
    time.sleep(2.5)  # one more re-render of the job list
    wait_idle(page)
    assert info.count() >= 1
    assert page.locator(ERROR).count() == 0, page.locator(ERROR).all_inner_texts()
    shot(page, "train-cancelled.png", height=1400)


def test_browser_models_page_disclaimer_once_and_installed_cv_table(app_url, page, tiny_weights):  # noqa: F811
    url, tmp = app_url
    job_id = finished_job(tmp / "jobs", tmp, tiny_weights, "browser-done")
    label = f"done-job-job{job_id}"
    page.goto(f"{url}/train")
    page.get_by_text(f"#{job_id} done-job", exact=False).first.wait_for()
    for _ in range(5):
        exp = page.locator('[data-testid="stExpander"]').filter(has_text=f"#{job_id} done-job")
        button = exp.get_by_role("button", name="Use these weights")
        try:
            if not button.is_visible():
                exp.locator("summary").first.click()
            button.click(timeout=10_000)
        except Exception:
            pass
        try:
            page.get_by_text(f"Installed as {label}").wait_for(timeout=10_000)
            break
        except Exception:
            continue
    else:
        raise AssertionError("the job's weights were not installed")

    page.goto(f"{url}/models")
    page.get_by_text("Trained here").first.wait_for()
    wait_idle(page)
    body = page.locator("body").inner_text()
    assert body.count("Research use only") == 1, body.count("Research use only")
    installed = page.locator('[data-testid="stExpander"]').filter(has_text=label)
    installed.wait_for()
    if not installed.locator('[data-testid="stTable"]').first.is_visible():
        installed.locator("summary").first.click()
    table = installed.locator('[data-testid="stTable"]').first
    table.wait_for()
    text = table.inner_text()
    assert "mean" in text and "std" in text and "Dice" in text, text
    shot(page, "models-installed.png", height=1600)
