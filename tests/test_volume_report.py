"""smallcovid.app.volume_report: quantities rows, key slices, chart selection, the HTML report."""

from __future__ import annotations

import base64
from datetime import datetime, timezone
from io import BytesIO

import numpy as np
import pytest
from PIL import Image

from smallcovid.app import html_report as hr
from smallcovid.app import volume_report as vr
from smallcovid.inference.quantify import slice_report, volume_report


def _volume(d=12, h=20, w=20):
    classes = np.zeros((d, h, w), np.uint8)
    lungs = np.zeros((d, h, w), np.uint8)
    lungs[:, 2:18, 1:9] = 1
    lungs[:, 2:18, 11:19] = 2
    classes[7, 4:12, 2:8] = 1      # largest lesion: 48 px
    classes[2, 4:8, 12:16] = 2     # 16 px
    classes[3, 4:7, 12:15] = 1     # 9 px, next to slice 2
    classes[10, 5:7, 3:6] = 1      # 6 px
    return classes, lungs


def test_volume_row_matches_the_report_and_names_units():
    classes, lungs = _volume()
    rep = volume_report(classes, lungs, (0.5, 0.5, 2.0), "m", 0.5)
    row = vr.volume_row("m", rep, dice=0.25)
    assert row["lesion (mL)"] == rep["lesion_ml"] and row["ground-glass (mL)"] == rep["ggo_ml"]
    assert row["consolidation (mL)"] == rep["consolidation_ml"] and row["lung (mL)"] == rep["lung_ml"]
    assert row["% of lung"] == rep["involvement_pct"]
    assert row["% of right lung"] == rep["per_lung"]["right"]["involvement_pct"]
    assert row["% of left lung"] == rep["per_lung"]["left"]["involvement_pct"]
    assert row["largest-lesion slice"] == 7 and row["volume Dice"] == 0.25
    no_spacing = vr.volume_row("m", volume_report(classes, lungs, None, "m", 0.5))
    assert no_spacing["lesion (voxels)"] == np.count_nonzero(classes) and "volume Dice" not in no_spacing
    fmt = vr.column_formats(list(row) + list(no_spacing))
    assert fmt["lesion (voxels)"] == "{:.0f}" and fmt["lesion (mL)"] == "{:.2f}" and fmt["volume Dice"] == "{:.3f}"


def test_slice_row_uses_mm2_when_known_and_percent_of_lung():
    classes, lungs = _volume()
    c, lu = classes[7], lungs[7]
    row = vr.slice_row("m", c, lu, (0.5, 0.25), n_lesions=1, seconds=0.0123)
    rep = slice_report(c, lu, (0.25, 0.5))  # (x = col, y = row)
    assert row["lesion area (mm²)"] == rep["lesion_mm2"] == pytest.approx(48 * 0.125)
    assert row["% of lung"] == rep["involvement_pct"]
    assert row["separate lesions"] == 1 and row["inference (ms)"] == 12.3
    px = vr.slice_row("m", c, lu, None)
    assert px["lesion area (px)"] == 48 and "lesion area (mm²)" not in px
    truth = vr.slice_row("gt", c > 0, lu, None, types_known=False)
    assert truth["lesion area (px)"] == 48 and truth["ground-glass (px)"] is None


def test_key_slices_start_with_the_largest_and_skip_neighbours():
    classes, lungs = _volume()
    rep = volume_report(classes, lungs, None, "m", 0.5)
    keys = vr.key_slices(rep)
    assert keys[0] == 7 and sorted(keys[1:]) == [2, 10]  # slice 3 is next to slice 2: skipped
    empty = volume_report(np.zeros_like(classes), lungs, None, "m", 0.5)
    assert len(vr.key_slices(empty)) == 3 and len(set(vr.key_slices(empty))) == 3
    one = volume_report(classes[:1], lungs[:1], None, "m", 0.5)
    assert vr.key_slices(one) == [0]


def test_selected_slice_reads_the_clicked_point():
    assert vr.selected_slice({"points": [{"x": 4, "y": 1.5, "curve_number": 1}]}) == 4
    assert vr.selected_slice({"points": []}) is None
    assert vr.selected_slice(None) is None

    class State:
        points = [{"x": 2.0}]

    assert vr.selected_slice(State()) == 2


def test_slice_area_figure_has_one_trace_per_model():
    classes, lungs = _volume()
    reps = {name: volume_report(classes, lungs, (1, 1, 1), name, 0.5) for name in ("a", "b")}
    fig = vr.slice_area_figure(reps, current=3)
    assert [t.name for t in fig.data] == ["a", "b"]
    assert list(fig.data[0].x) == list(range(12)) and fig.data[0].y[7] == 48
    assert "mm²" in fig.layout.yaxis.title.text


def test_html_report_is_self_contained_with_disclaimer_and_facts():
    classes, lungs = _volume()
    rep = volume_report(classes, lungs, (0.5, 0.5, 2.0), "smallcovid-net", 0.45)
    display = lambda k: np.full((20, 20), 40 * (k % 5), np.uint8)  # noqa: E731
    images = hr.overlays_for(vr.key_slices(rep), display, classes)
    assert all(img.shape == (20, 20, 3) for _, img in images)
    html = hr.html_report(rep, model="smallcovid-net <b>", weights_sha256="ab" * 32, threshold=0.45,
                          scan_name="series-1.2.3", images=images, dice=0.5,
                          date=datetime(2026, 1, 2, 3, 4, tzinfo=timezone.utc))
    assert "Research use only — not a medical device." in html
    assert "smallcovid-net &lt;b&gt;" in html and "<b>" not in html.split("<body>")[1].split("<h2>")[0]
    assert "ab" * 32 in html and "0.45" in html and "2026-01-02" in html and "0.500" in html
    uris = html.split("src='")[1:]
    assert len(uris) == 3 and "largest lesion" in html
    data = base64.b64decode(uris[0].split("'")[0].split(",", 1)[1])
    assert Image.open(BytesIO(data)).size == (20, 20)
    assert "http" not in html.replace("http-equiv", "")  # nothing fetched from elsewhere


def test_image_data_uri_formats():
    rgb = np.zeros((4, 5, 3), np.uint8)
    assert hr.image_data_uri(rgb, "png").startswith("data:image/png;base64,")
    assert hr.image_data_uri(rgb).startswith("data:image/jpeg;base64,")
    with pytest.raises(ValueError):
        hr.image_data_uri(rgb, "gif")


# ------------------------------------------------------------------ lung QC on the page and in the HTML report

def _plausible_volume():
    """Like :func:`_volume` with lungs covering 36 % of each slice (no lung QC finding)."""
    classes, lungs = _volume()
    lungs[:] = 0
    lungs[:, 4:16, 3:9] = 1
    lungs[:, 4:16, 11:17] = 2
    return classes, lungs


def test_qc_warning_text_lists_each_sentence_or_nothing():
    classes, lungs = _volume()  # lungs fill 64 % of each 20x20 slice
    rep = volume_report(classes, lungs, (0.5, 0.5, 2.0), "m", 0.5)
    assert [f["code"] for f in vr.report_qc(rep)] == ["lung_cover"]
    text = vr.qc_warning_text(vr.report_qc(rep))
    assert text.startswith("**Lung QC failed:**") and "lung volume and % of lung" in text
    assert f"- {rep['qc'][0]['message']} (`lung_cover`)" in text.splitlines()
    ok = volume_report(*_plausible_volume(), (0.5, 0.5, 2.0), "m", 0.5)
    assert vr.report_qc(ok) == [] and vr.qc_warning_text(vr.report_qc(ok)) is None
    assert vr.report_qc({}) == [] and vr.qc_warning_text(None) is None
    assert "% of lung" in vr.qc_warning_text(rep["qc"], "% of lung")


def test_unreliable_columns_are_shown_marked_not_as_plain_numbers():
    classes, lungs = _volume()
    rep = volume_report(classes, lungs, (0.5, 0.5, 2.0), "m", 0.5)
    row = vr.volume_row("m", rep)
    assert row["lung (mL)"] == rep["lung_ml"]  # the row keeps the number (CSV, sorting)
    bad = vr.unreliable_columns(list(row), rep["qc"])
    assert bad == ["lung (mL)", "% of lung", "% of right lung", "% of left lung"]
    assert vr.unreliable_columns(list(row), []) == []
    fmt = vr.column_formats(list(row), bad)
    assert fmt["lesion (mL)"] == "{:.2f}"
    assert fmt["lung (mL)"](1234.5) == "≈ 1,234.50 (unreliable: see lung QC)"
    assert fmt["% of lung"](None) == "—" and fmt["% of lung"](float("nan")) == "—"
    assert vr.column_formats(["lung (voxels)"], ["lung (voxels)"])["lung (voxels)"](12345) == (
        "≈ 12,345 (unreliable: see lung QC)")
    assert vr.marked(4321.0, unit="mL") == "≈ 4,321.00 mL (unreliable: see lung QC)"
    quantities = dict(hr.report_quantities(rep))
    assert quantities["Lung volume"] == vr.marked(rep["lung_ml"], unit="mL")
    assert quantities["Lung involved"].startswith("≈ ") and quantities["Right lung involved"].startswith("≈ ")
    assert not quantities["Lesion volume"].startswith("≈")
    plain = dict(hr.report_quantities(volume_report(*_plausible_volume(), (0.5, 0.5, 2.0), "m", 0.5)))
    assert not any(v.startswith("≈") for v in plain.values())


def test_html_report_warns_about_implausible_lungs():
    classes, lungs = _volume()
    rep = volume_report(classes, lungs, (0.5, 0.5, 2.0), "m", 0.5)
    rep["qc"].append({"code": "lr_ratio", "message": "Right <lung> & left."})
    kw = dict(model="m", weights_sha256=None, threshold=0.5, scan_name="s", images=[])
    html = hr.html_report(rep, **kw)
    assert "<div class='qc'><b>Lung QC failed:</b>" in html
    assert rep["qc"][0]["message"] in html and "Right &lt;lung&gt; &amp; left." in html
    assert html.index("class='qc'>") < html.index("Lung volume")
    assert "≈ " in html.split("Lung volume")[1].split("</tr>")[0]
    ok = hr.html_report(volume_report(*_plausible_volume(), (0.5, 0.5, 2.0), "m", 0.5), **kw)
    assert "class='qc'" not in ok and "≈" not in ok


def test_slice_qc_keeps_position_independent_codes_for_volume_slices():
    lone = np.zeros((40, 41), np.uint8)
    lone[8:30, 5:15] = 1  # one small lung only: normal near an apex, so not said on a volume's slice
    assert [f["code"] for f in vr.slice_qc(lone, (0.7, 0.7))] == ["one_lung", "lung_area"]  # 1 cm²
    assert vr.slice_qc(lone, (0.7, 0.7), in_volume=True) == []
    full = np.ones((40, 41), np.uint8)
    full[15:25, 15:25] = 0  # everything but an island labelled lung
    assert "lung_at_edge" in [f["code"] for f in vr.slice_qc(full, None, in_volume=True)]
