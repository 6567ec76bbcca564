"""The Segment page with volumes: DICOM series uploads, display-only windows, whole-volume results.

Series are built in memory from pydicom's ``CT_small.dcm`` (128x128 CT, HU) like
``tests/test_series.py``; the app runs on the tiny weights of ``apphelpers``. The
numbers shown are checked against :mod:`smallcovid.inference` run directly.
"""

from __future__ import annotations

import gzip
import io
import json
import random
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from streamlit.testing.v1 import AppTest

from smallcovid.inference.predictor import load_predictor
from dicomhelpers import UID_A, UID_B, series_slice
from smallcovid.inference.quantify import volume_dice
from smallcovid.inference.volume import segment_volume
from smallcovid.io.series import read_series
from smallcovid.io.seriesnames import series_stem
from smallcovid.models import list_models

torch.set_num_threads(1)  # a long training may share these cores
APP = str(Path(__file__).resolve().parent.parent / "app.py")
MODELS = list_models()
def dicom_bytes(k: int, uid: str = UID_A, z0: float = -75.7) -> bytes:
    """Slice k of a series: z = z0 + k * STEP, pixels = fixture + 40 * k."""
    buf = io.BytesIO()
    series_slice(k, uid, z0, offset=40).save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def series_files(n: int, uid: str = UID_A, prefix: str = "img", z0: float = -75.7) -> list[tuple]:
    """(name, bytes, mime) upload triples, written in a shuffled order."""
    order = random.Random(3).sample(range(n), n)  # file names do not follow slice order
    return [(f"{prefix}{i:02d}.dcm", dicom_bytes(k, uid, z0), "application/dicom") for i, k in enumerate(order)]


def upload(at: AppTest, files: list[tuple]) -> AppTest:
    at.file_uploader(key="scan_files").set_value(files)
    return at.run()


def segment_app(models: list[str] | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=180).run()
    assert not at.exception, [e.value for e in at.exception]
    if models is not None:
        at.multiselect(key="models").set_value(models).run()
    return at


def slice_slider(at: AppTest):
    return [s for s in at.slider if s.label.startswith("Slice")][0]


@pytest.fixture
def deferred(monkeypatch) -> dict:
    """File name -> the callable of every deferred download button drawn (called to get the file)."""
    from streamlit.runtime.media_file_manager import MediaFileManager

    out: dict[str, object] = {}
    real_add = MediaFileManager.add_deferred

    def record(self, data_callable, mimetype, coordinates, file_name=None, **kw):
        out[file_name] = data_callable
        return real_add(self, data_callable, mimetype, coordinates, file_name=file_name, **kw)

    monkeypatch.setattr(MediaFileManager, "add_deferred", record)
    return out


def download(deferred: dict, suffix: str) -> bytes:
    data = deferred[[n for n in deferred if n and n.endswith(suffix)][-1]]()
    return data.encode() if isinstance(data, str) else data


def csv_table(deferred: dict):
    import pandas as pd

    return pd.read_csv(io.BytesIO(download(deferred, "_metrics.csv")), index_col=0)


def ok(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


# ------------------------------------------------------------------ DICOM series

def test_one_series_of_several_files_is_one_volume(app_env):
    at = segment_app(["smallcovid-net"])
    upload(at, series_files(5))
    ok(at)
    slider = slice_slider(at)
    assert slider.max == 4 and slider.value == 2
    assert not [s for s in at.selectbox if s.label == "Scan"]  # one series: nothing to pick
    (scan_key,) = {k for k in at.session_state["scan_cache"]}
    vol = at.session_state["volume_results"].held(at.session_state["scan_cache"][scan_key])
    assert vol.voxels.shape == (5, 128, 128) and vol.units == "hu"
    expected = read_series([(n, d) for n, d, _ in series_files(5)])
    np.testing.assert_array_equal(vol.voxels, expected.voxels)  # sorted by position, not by file name
    assert [c.value for c in at.caption if c.value.startswith("Series '")] == [
        f"Series '{series_stem(UID_A)}' from 5 files, ordered by ImagePositionPatient along the slice normal "
        "(z from -75.7 to -65.7 mm, 2.50 mm apart)"]
    # "next ▶" / "◀ previous" move the slider by one slice.
    digest = at.session_state["scan_cache"][scan_key]
    at.button(key=f"slice-{digest}-next").click().run()
    assert slice_slider(at).value == 3
    at.button(key=f"slice-{digest}-prev").click().run()
    at.button(key=f"slice-{digest}-prev").click().run()
    assert slice_slider(at).value == 1
    ok(at)


def test_two_series_give_a_series_picker_never_mixed(app_env):
    at = segment_app(["smallcovid-net"])
    files = series_files(4, UID_A, "a") + series_files(3, UID_B, "b", z0=100.0)
    upload(at, files)
    ok(at)
    picker = at.selectbox(key="scan_pick")
    assert len(picker.options) == 2
    assert all("DICOM series" in o for o in picker.options)
    assert "4 files" in picker.options[0] and "3 files" in picker.options[1]
    assert slice_slider(at).max == 3
    picker.set_value(picker.options[1]).run()
    ok(at)
    assert slice_slider(at).max == 2


def test_single_files_keep_working_next_to_a_series(app_env, deferred):
    from apphelpers import blob_slice, png_bytes

    img, _ = blob_slice(64, seed=1)
    at = segment_app(["smallcovid-net"])
    upload(at, series_files(3) + [("one.png", png_bytes(img), "image/png")])
    ok(at)
    options = at.selectbox(key="scan_pick").options
    assert len(options) == 2 and options[1].endswith("one.png")
    at.selectbox(key="scan_pick").set_value(options[1]).run()
    ok(at)
    assert not [s for s in at.slider if s.label.startswith("Slice")]
    stats = csv_table(deferred)
    assert "lesion area (px)" in stats.columns and "% of lung" in stats.columns  # a PNG has no pixel spacing


# ------------------------------------------------------------------ display window

def test_display_window_leaves_probability_maps_identical(app_env):
    at = segment_app(MODELS[:2])
    upload(at, series_files(3))
    ok(at)
    cache = at.session_state["prob_cache"]
    before = {k: v.lesion.copy() for k, v in cache.items()}
    assert len(before) == 2
    at.radio(key="window").set_value("mediastinum").run()
    ok(at)
    after = at.session_state["prob_cache"]
    assert set(after) == set(before)  # no new model run for another window
    for k in before:
        np.testing.assert_array_equal(after[k].lesion, before[k])
    at.radio(key="window").set_value("custom").run()
    at.number_input(key="win_w").set_value(400.0).run()
    ok(at)
    assert set(at.session_state["prob_cache"]) == set(before)


# ------------------------------------------------------------------ whole volume

def _labels(vol) -> tuple[bytes, np.ndarray]:
    """A NIfTI label volume in the series' geometry with a ground-glass block and a consolidation block."""
    lab = np.zeros(vol.voxels.shape, np.uint8)
    lab[1:3, 40:70, 30:60] = 1
    lab[2, 80:100, 70:90] = 2
    img = nib.Nifti1Image(np.ascontiguousarray(lab.transpose(1, 2, 0)), vol.affine)
    return img.to_bytes(), lab


def test_segment_all_slices_volumes_chart_and_html_report(app_env, deferred):
    files = series_files(4)
    vol = read_series([(n, d) for n, d, _ in files])
    label_bytes, lab = _labels(vol)
    at = segment_app(["smallcovid-net", "segnet"])
    name = f"{series_stem(UID_A)}_labels.nii"  # labels are named like the scan (here the series' stem)
    at.file_uploader(key="mask_files").set_value((name, label_bytes, "application/octet-stream"))
    upload(at, files)
    ok(at)
    assert not at.get("plotly_chart")
    at.button(key="volume_run").click().run()
    ok(at)
    assert not [b for b in at.button if b.key == "volume_run"]  # every selected model is done

    report = json.loads(download(deferred, "smallcovid-net_report.json"))
    thr = report["threshold"]
    table = [t.value for t in at.table if "lesion (mL)" in t.value.columns][0]
    for name in ("smallcovid-net", "segnet"):
        res = segment_volume(load_predictor(name, device="cpu"), vol)
        rep = res.report(thr, name)
        if name == "smallcovid-net":
            assert report["lesion_ml"] == rep["lesion_ml"] and report["slices"] == rep["slices"]
            assert report["volume_dice"] == pytest.approx(volume_dice(res.classes(thr) > 0, lab > 0))
            assert report["weights_sha256"] == load_predictor(name, device="cpu").card["sha256"]
        row = table.loc[name]
        for col, key in (("lesion (mL)", "lesion_ml"), ("ground-glass (mL)", "ggo_ml"),
                         ("consolidation (mL)", "consolidation_ml"), ("lung (mL)", "lung_ml")):
            assert row[col] == pytest.approx(rep[key]), (name, col)
        for col, value in (("% of lung", rep["involvement_pct"]),
                           ("% of right lung", rep["per_lung"]["right"]["involvement_pct"]),
                           ("% of left lung", rep["per_lung"]["left"]["involvement_pct"])):
            assert (pd_isna(row[col]) and value is None) or row[col] == pytest.approx(value), (name, col)
        assert row["volume Dice"] == pytest.approx(volume_dice(res.classes(thr) > 0, lab > 0))
    assert table.loc["ground truth", "ground-glass (mL)"] == pytest.approx(
        np.count_nonzero(lab == 1) * np.prod(vol.spacing) / 1000, abs=0.01)

    assert len(at.get("plotly_chart")) == 1  # lesion area per slice
    labels = {d.label for d in at.get("download_button")}
    assert {"Lesion types NIfTI", "Mask NIfTI", "Lung mask NIfTI", "Report JSON", "Report HTML"} <= labels

    html = download(deferred, "_report.html").decode()
    card = load_predictor("smallcovid-net", device="cpu").card
    assert "Research use only — not a medical device." in html
    assert "smallcovid-net" in html and card["sha256"] in html and f"{thr:g}" in html
    assert html.count("data:image/jpeg;base64,") == 3

    out = nib.Nifti1Image.from_bytes(gzip.decompress(download(deferred, "_types.nii.gz")))
    np.testing.assert_allclose(out.affine, vol.affine, atol=1e-4)
    res = segment_volume(load_predictor("smallcovid-net", device="cpu"), vol)
    np.testing.assert_array_equal(np.asarray(out.dataobj).transpose(2, 0, 1), res.classes(thr))


def pd_isna(v) -> bool:
    import pandas as pd

    return bool(pd.isna(v))


def test_two_dimensional_quantities_use_mm2_and_percent_of_lung(app_env, deferred):
    at = segment_app(["smallcovid-net"])
    at.button(key="example").click().run()
    ok(at)
    stats = csv_table(deferred)
    assert "lesion area (mm²)" in stats.columns and "lesion area (px)" not in stats.columns
    assert "% of image" not in stats.columns
    assert stats.loc["ground truth", "% of lung"] > 0


def test_chart_click_and_buttons_move_the_slice(monkeypatch):
    """The chart's on_select callback and the ◀ / ▶ callbacks set the slider's session value (clamped)."""
    from types import SimpleNamespace

    import pages._scan_parts as vp

    state = {"chart": SimpleNamespace(selection={"points": [{"x": 7, "curve_number": 0}]}), "slice-x": 2}
    monkeypatch.setattr(vp.st, "session_state", state)
    vp.jump_to_selected("chart", "slice-x", 10)
    assert state["slice-x"] == 7
    state["chart"] = SimpleNamespace(selection={"points": [{"x": 42}]})
    vp.jump_to_selected("chart", "slice-x", 10)
    assert state["slice-x"] == 9
    state["chart"] = SimpleNamespace(selection={"points": []})  # a click that deselects: stay
    vp.jump_to_selected("chart", "slice-x", 10)
    assert state["slice-x"] == 9
    vp._step("slice-x", 1, 10)
    assert state["slice-x"] == 9
    vp._step("slice-x", -1, 10)
    assert state["slice-x"] == 8
