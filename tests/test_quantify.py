"""Volume / area reports from label maps, on tiny masks whose numbers are computed by hand."""

from __future__ import annotations

import json

import numpy as np
import pytest

from smallcovid.inference.quantify import slice_report, spacing_xyz, volume_dice, volume_report

SPACING = (2.0, 2.5, 4.0)  # x, y, z mm: voxel 20 mm^3 = 0.02 mL, pixel 5 mm^2


def _maps() -> tuple[np.ndarray, np.ndarray]:
    """3 slices of 4x5: right lung = columns 0-1, left lung = columns 3-4 (8 px each per slice).

    Lesions: slice 1 GGO at (1,0) (1,1) (2,0) [right], GGO at (0,2) [outside lung],
    consolidation at (0,3) [left]; slice 2 consolidation at (3,4) (2,4) (1,3) [left].
    """
    lungs = np.zeros((3, 4, 5), np.uint8)
    lungs[:, :, 0:2] = 1
    lungs[:, :, 3:5] = 2
    classes = np.zeros((3, 4, 5), np.uint8)
    for r, c in [(1, 0), (1, 1), (2, 0), (0, 2)]:
        classes[1, r, c] = 1
    classes[1, 0, 3] = 2
    for r, c in [(3, 4), (2, 4), (1, 3)]:
        classes[2, r, c] = 2
    return classes, lungs


def _all_plain(obj) -> bool:
    if isinstance(obj, dict):
        return all(isinstance(k, str) and _all_plain(v) for k, v in obj.items())
    if isinstance(obj, list):
        return all(_all_plain(v) for v in obj)
    return obj is None or type(obj) in (int, float, str, bool)


def test_volume_report_numbers():
    classes, lungs = _maps()
    rep = volume_report(classes, lungs, SPACING, "unet", 0.5)
    assert list(rep) == ["model", "threshold", "spacing_mm", "units", "lung_ml", "lesion_ml", "ggo_ml",
                         "consolidation_ml", "involvement_pct", "per_lung", "slices", "largest_lesion_slice",
                         "qc", "reliable", "unreliable"]
    assert rep["model"] == "unet" and rep["threshold"] == 0.5
    assert rep["spacing_mm"] == [2.0, 2.5, 4.0]
    assert rep["units"] == {"volume": "ml", "area": "mm2"}
    assert rep["lung_ml"] == 0.96            # 48 voxels x 0.02 mL
    assert rep["lesion_ml"] == 0.16          # 8 lesion voxels, including the one outside the lungs
    assert rep["ggo_ml"] == 0.08             # 4
    assert rep["consolidation_ml"] == 0.08   # 4
    assert rep["involvement_pct"] == 14.58   # 7 lesion voxels inside the lungs / 48
    assert rep["per_lung"] == {
        "right": {"lung_ml": 0.48, "lesion_ml": 0.06, "involvement_pct": 12.5},   # 3 / 24
        "left": {"lung_ml": 0.48, "lesion_ml": 0.08, "involvement_pct": 16.67},   # 4 / 24
    }
    assert rep["slices"] == [{"index": 0, "lesion_mm2": 0.0, "lung_mm2": 80.0},
                             {"index": 1, "lesion_mm2": 25.0, "lung_mm2": 80.0},
                             {"index": 2, "lesion_mm2": 15.0, "lung_mm2": 80.0}]
    assert rep["largest_lesion_slice"] == 1
    assert _all_plain(rep)
    json.dumps(rep, allow_nan=False)


def test_volume_report_without_spacing_counts_voxels():
    classes, lungs = _maps()
    rep = volume_report(classes, lungs, None, "segnet", 0.4)
    assert rep["spacing_mm"] is None
    assert rep["units"] == {"volume": "voxels", "area": "pixels"}
    assert (rep["lung_ml"], rep["lesion_ml"], rep["ggo_ml"], rep["consolidation_ml"]) == (48, 8, 4, 4)
    assert all(type(rep[k]) is int for k in ("lung_ml", "lesion_ml", "ggo_ml", "consolidation_ml"))
    assert rep["involvement_pct"] == 14.58
    assert rep["per_lung"]["right"] == {"lung_ml": 24, "lesion_ml": 3, "involvement_pct": 12.5}
    assert [s["lesion_mm2"] for s in rep["slices"]] == [0, 5, 3]
    assert [s["lung_mm2"] for s in rep["slices"]] == [16, 16, 16]
    assert _all_plain(rep)


def test_empty_lesion_and_empty_lung():
    classes, lungs = _maps()
    rep = volume_report(np.zeros_like(classes), lungs, SPACING, "m", 0.5)
    assert rep["lesion_ml"] == 0.0 and rep["involvement_pct"] == 0.0
    assert rep["largest_lesion_slice"] is None
    rep = volume_report(classes, np.zeros_like(lungs), SPACING, "m", 0.5)
    assert rep["lung_ml"] == 0.0 and rep["lesion_ml"] == 0.16
    assert rep["involvement_pct"] is None
    assert rep["per_lung"]["left"] == {"lung_ml": 0.0, "lesion_ml": 0.0, "involvement_pct": None}
    json.dumps(rep, allow_nan=False)


def test_largest_slice_tie_takes_lowest_index():
    classes = np.zeros((3, 8, 8), np.uint8)
    classes[2, 0, :2] = 1
    classes[1, 5, :2] = 2
    rep = volume_report(classes, np.ones_like(classes), (1, 1, 1), "m", 0.5)
    assert rep["largest_lesion_slice"] == 1


def test_extra_keys_are_merged_plain_and_cannot_override():
    classes, lungs = _maps()
    rep = volume_report(classes, lungs, SPACING, "m", np.float32(0.5),
                        extra={"source": "scan.nii.gz", "n": np.int64(3), "v": np.array([1.5, 2.0])})
    assert rep["source"] == "scan.nii.gz" and rep["n"] == 3 and rep["v"] == [1.5, 2.0]
    assert type(rep["threshold"]) is float and _all_plain(rep)
    with pytest.raises(ValueError, match="lesion_ml"):
        volume_report(classes, lungs, SPACING, "m", 0.5, extra={"lesion_ml": 1})


def test_slice_report_numbers():
    classes, lungs = _maps()
    rep = slice_report(classes[1], lungs[1], (2.0, 2.5), model="unet", threshold=0.5)
    assert rep["units"] == {"area": "mm2"} and rep["spacing_mm"] == [2.0, 2.5]
    assert (rep["lung_mm2"], rep["lesion_mm2"], rep["ggo_mm2"], rep["consolidation_mm2"]) == (80.0, 25.0, 20.0, 5.0)
    assert rep["involvement_pct"] == 25.0    # 4 lesion px inside the lungs / 16
    assert rep["per_lung"] == {"right": {"lung_mm2": 40.0, "lesion_mm2": 15.0, "involvement_pct": 37.5},
                               "left": {"lung_mm2": 40.0, "lesion_mm2": 5.0, "involvement_pct": 12.5}}
    rep = slice_report(classes[1], lungs[1])
    assert rep["units"] == {"area": "pixels"} and rep["model"] is None and rep["threshold"] is None
    assert (rep["lung_mm2"], rep["lesion_mm2"], rep["ggo_mm2"], rep["consolidation_mm2"]) == (16, 5, 4, 1)
    assert _all_plain(rep)


@pytest.mark.parametrize("classes, lungs, spacing, match", [
    (np.zeros((2, 4, 4), np.uint8), np.zeros((2, 4, 5), np.uint8), (1, 1, 1), "differs"),
    (np.full((2, 4, 4), 3, np.uint8), np.zeros((2, 4, 4), np.uint8), (1, 1, 1), "classes has values from 3 to 3"),
    (np.zeros((2, 4, 4), np.uint8), np.full((2, 4, 4), 4, np.uint8), (1, 1, 1), "lungs has values"),
    (np.zeros((2, 4, 4), np.float32), np.zeros((2, 4, 4), np.uint8), (1, 1, 1), "integer or boolean"),
    (np.zeros((4, 4), np.uint8), np.zeros((4, 4), np.uint8), (1, 1, 1), r"\(Z, H, W\)"),
    (np.zeros((2, 4, 4), np.uint8), np.zeros((2, 4, 4), np.uint8), (1, 0, 1), "positive"),
    (np.zeros((2, 4, 4), np.uint8), np.zeros((2, 4, 4), np.uint8), (1, 1), "3 positive"),
])
def test_volume_report_rejects_bad_input(classes, lungs, spacing, match):
    with pytest.raises(ValueError, match=match):
        volume_report(classes, lungs, spacing, "m", 0.5)


def test_spacing_xyz_from_volume_spacing():
    assert spacing_xyz((4.0, 2.5, 2.0)) == (2.0, 2.5, 4.0)
    assert spacing_xyz(None) is None


def test_volume_dice():
    empty = np.zeros((2, 3, 3), bool)
    one = empty.copy()
    one[0, 0, :2] = True
    assert volume_dice(empty, empty) == 1.0
    assert volume_dice(one, empty) == 0.0 and volume_dice(empty, one) == 0.0
    pred = one.copy()
    pred[1, 2, :2] = True  # 4 predicted, 2 true, 2 overlap -> 2*2 / 6
    assert volume_dice(pred, one.astype(np.uint8) * 255) == pytest.approx(2 / 3)
    assert type(volume_dice(pred, one)) is float
    with pytest.raises(ValueError, match="shape"):
        volume_dice(pred, one[0])


def test_reports_carry_lung_qc_and_mark_lung_quantities():
    """Only the right lung of the toy maps: ``one_lung`` flagged, the numbers kept, the lung keys listed."""
    classes, lungs = _maps()
    lungs[lungs == 2] = 0
    rep = volume_report(classes, lungs, SPACING, "m", 0.5)
    assert [f["code"] for f in rep["qc"]] == ["one_lung"] and rep["reliable"] is False
    assert "left lung is missing" in rep["qc"][0]["message"]
    assert rep["unreliable"] == ["lung_ml", "involvement_pct", "per_lung", "slices.lung_mm2"]
    assert rep["lung_ml"] == 0.48  # still there
    assert all(set(f) == {"code", "message"} and f["message"].endswith(".") for f in rep["qc"])
    s = slice_report(classes[1], lungs[1], (2.0, 2.5))
    assert s["qc"] and s["reliable"] is False and s["unreliable"] == ["lung_mm2", "involvement_pct", "per_lung"]
    assert _all_plain(rep) and _all_plain(s)
    json.dumps(rep, allow_nan=False)


def test_plausible_lungs_give_an_empty_qc_and_reliable_reports():
    """Two adult-size elliptical lungs in a 512x512 frame at 0.7 mm, 3 slices (a thin slab)."""
    yy, xx = np.mgrid[0:512, 0:512]
    sl = np.zeros((512, 512), np.uint8)
    sl[((yy - 260) / 150) ** 2 + ((xx - 170) / 70) ** 2 <= 1] = 1
    sl[((yy - 260) / 150) ** 2 + ((xx - 342) / 65) ** 2 <= 1] = 2
    lungs = np.stack([sl] * 3)
    rep = volume_report(np.zeros_like(lungs), lungs, (0.7, 0.7, 5.0), "m", 0.5)
    assert rep["qc"] == [] and rep["reliable"] is True and rep["unreliable"] == []
    s = slice_report(np.zeros_like(sl), sl, (0.7, 0.7))
    assert s["qc"] == [] and s["reliable"] is True and s["unreliable"] == []


def test_volume_report_uses_given_qc_and_qc_keys_cannot_be_overridden():
    classes, lungs = _maps()
    given = [{"code": "lr_ratio", "message": "Made up."}]
    rep = volume_report(classes, lungs, SPACING, "m", 0.5, qc=given)
    assert rep["qc"] == given and rep["reliable"] is False
    assert volume_report(classes, lungs, SPACING, "m", 0.5, qc=[])["reliable"] is True
    for key in ("qc", "reliable", "unreliable"):
        with pytest.raises(ValueError, match=key):
            volume_report(classes, lungs, SPACING, "m", 0.5, extra={key: 1})
