"""smallcovid.app.volume_report: quantities rows, key slices, chart selection, the HTML report."""

from __future__ import annotations

import base64
from datetime import datetime, timezone
from io import BytesIO

import numpy as np
import pytest
from PIL import Image

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
    images = vr.overlays_for(vr.key_slices(rep), display, classes)
    assert all(img.shape == (20, 20, 3) for _, img in images)
    html = vr.html_report(rep, model="smallcovid-net <b>", weights_sha256="ab" * 32, threshold=0.45,
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
    assert vr.image_data_uri(rgb, "png").startswith("data:image/png;base64,")
    assert vr.image_data_uri(rgb).startswith("data:image/jpeg;base64,")
    with pytest.raises(ValueError):
        vr.image_data_uri(rgb, "gif")
