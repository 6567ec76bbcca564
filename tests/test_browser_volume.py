"""A segmented volume in a real browser: slices and windows switch in the browser, work survives a change of page.

After "Segment all slices" the viewer holds the slices' images and every model's maps: a J key
press shows the previous slice without a message to the server before the new frame is painted,
with that slice's metrics (checked against the volume rule in Python); a ground truth without
consolidation shows "—" as consolidation Dice (defect 4). Segment -> Compare -> Models -> Segment
keeps the scan, the slice and the whole-volume results with their downloads. Run with
``pytest -m browser``.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from test_browser import MASK_INPUT, SCAN_INPUT, VIEWER, app_url, browser, page, viewer_table, wait_idle, wait_or_explain  # noqa: F401

pytestmark = pytest.mark.browser

DEPTH, SIZE = 6, 128
AFFINE = np.diag([0.7, 0.7, 2.5, 1.0])


def volume_files(tmp: Path) -> tuple[Path, Path]:
    """A small synthetic CT volume (NIfTI, HU) and its labels (ground-glass only, no consolidation)."""
    import nibabel as nib

    from smallcovid.cli.benchvolume import synthetic_ct

    hu = synthetic_ct(DEPTH, SIZE, seed=4)  # (D, H, W)
    lab = np.zeros(hu.shape, np.uint8)
    lab[:, 44:70, 30:50] = 1
    scan, labels = tmp / "chest.nii.gz", tmp / "chest_labels.nii.gz"
    nib.save(nib.Nifti1Image(np.ascontiguousarray(hu.transpose(1, 2, 0)), AFFINE), scan)
    nib.save(nib.Nifti1Image(np.ascontiguousarray(lab.transpose(1, 2, 0)), AFFINE), labels)
    return scan, labels


def segment_volume_in_app(pg, url: str, tmp: Path) -> tuple[Path, Path]:
    scan, labels = volume_files(tmp)
    pg.goto(url)
    pg.get_by_text("Upload a CT slice").wait_for()
    wait_idle(pg)  # the first run finishes first: an upload made during it was once not picked up
    pg.locator(SCAN_INPUT).set_input_files(str(scan))
    wait_or_explain(pg.locator(f"{VIEWER}[data-painted]"), pg, tmp / "streamlit.log")
    wait_idle(pg)
    pg.locator(MASK_INPUT).set_input_files(str(labels))
    pg.get_by_text("Agreement with the ground truth").wait_for()
    wait_idle(pg)
    pg.get_by_role("button", name=f"Segment all {DEPTH} slices").click()
    wait_or_explain(pg.locator(f"{VIEWER}[data-n][data-painted]"), pg, tmp / "streamlit.log")
    wait_idle(pg)
    return scan, labels


def expected_dice(scan: Path, labels: Path, weights: Path, k: int, t: float) -> dict[str, str]:
    """Each model's Dice on slice k at threshold t by the whole-volume rule, as the viewer must show it."""
    from smallcovid.inference.metrics import dice
    from smallcovid.inference.predictor import load_predictor
    from smallcovid.inference.volume import segment_volume
    from smallcovid.io import read_label_volume, read_scan
    from smallcovid.models import list_models

    vol = read_scan(scan.read_bytes(), scan.name)
    truth = read_label_volume(labels.read_bytes(), labels.name)[k] > 0
    out = {}
    for n in list_models():
        res = segment_volume(load_predictor(n, weights=weights / f"{n}.safetensors", device="cpu"), vol)
        out[n] = f"{dice(res.mask(t)[k] > 0, truth):.3f}"
    return out


def test_volume_slice_step_is_in_the_browser_with_that_slices_metrics(app_url, page, tiny_weights):  # noqa: F811
    url, tmp = app_url
    sent: list[float] = []
    page.on("websocket", lambda ws: ws.on("framesent", lambda _: sent.append(time.monotonic())))
    scan, labels = segment_volume_in_app(page, url, tmp)
    viewer = page.locator(VIEWER)
    k = int(viewer.get_attribute("data-slice"))
    assert k == DEPTH // 2 and viewer.get_attribute("data-n") == str(DEPTH)
    assert page.get_by_role("button", name=f"Segment all {DEPTH} slices").count() == 0
    page.locator("h1").first.click()  # focus on the page
    time.sleep(1.0)
    before, n_sent = int(viewer.get_attribute("data-seq")), len(sent)
    t0 = time.monotonic()
    page.keyboard.press("j")
    page.wait_for_function("(s) => (window.__scvPaints || []).some((p) => p.seq > s)", arg=before, timeout=10_000)
    painted = time.monotonic()
    assert viewer.get_attribute("data-slice") == str(k - 1)
    assert not [t for t in sent[n_sent:] if t0 <= t <= painted], "a message went to the server before the repaint"
    wait_idle(page)
    shown = {m: cells[0] for m, cells in viewer_table(page).items()}
    assert shown == expected_dice(scan, labels, tiny_weights, k - 1, 0.5)
    # Defect 4: the truth holds no consolidation on this slice: its Dice is "—" for every model, not 0.000.
    table = viewer_table(page)
    head = page.locator(f"{VIEWER} .tables table").first.locator("thead th").all_inner_texts()
    col = head.index("consolidation Dice") - 1
    assert {m: cells[col] for m, cells in table.items()} == {m: "—" for m in table}
    assert all(cells[col - 1] != "—" for cells in table.values())  # ground-glass Dice is shown
    # The window presets switch in the browser too.
    before = int(viewer.get_attribute("data-seq"))
    page.locator(f"{VIEWER} label.win", has_text="mediastinum").click()
    page.wait_for_function("(s) => (window.__scvPaints || []).some((p) => p.seq > s)", arg=before, timeout=10_000)
    assert viewer.get_attribute("data-window") == "mediastinum"


def test_volume_results_survive_a_change_of_page(app_url, browser):  # noqa: F811
    url, tmp = app_url
    pg = browser.new_page(viewport={"width": 1400, "height": 1000})
    pg.set_default_timeout(90_000)
    try:
        segment_volume_in_app(pg, url, tmp)
        viewer = pg.locator(VIEWER)
        pg.locator("h1").first.click()
        pg.keyboard.press("k")
        time.sleep(1.5)  # the viewer settles its slice with the server
        wait_idle(pg)
        k = viewer.get_attribute("data-slice")
        assert k == str(DEPTH // 2 + 1)
        for name, text in (("Compare", "Run comparison"), ("Models", "Research use only")):
            pg.get_by_role("link", name=name).click()
            pg.get_by_text(text).first.wait_for()
            wait_idle(pg)
        pg.get_by_role("link", name="Segment").click()
        wait_or_explain(pg.locator(f"{VIEWER}[data-n][data-painted]"), pg, tmp / "streamlit.log")
        wait_idle(pg)
        assert viewer.get_attribute("data-slice") == k
        assert pg.get_by_text("chest.nii.gz", exact=False).count() >= 1  # the scan is still the upload
        assert pg.get_by_role("button", name=f"Segment all {DEPTH} slices").count() == 0
        assert pg.get_by_role("button", name="Lesion types NIfTI").count() == 1
        assert pg.get_by_text("Agreement with the ground truth").count() == 1  # the labels are kept too
    finally:
        pg.close()
