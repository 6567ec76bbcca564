"""Lung quality control: every code fires on a tiny synthetic label map, plausible lungs raise none,
reports and the command line say so."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from smallcovid.inference import qc as q
from smallcovid.inference.qc import QC_CODES, lung_qc, qc_summary, qc_unreliable

# In-plane frame of the synthetic slices: 255 x 253 px at 1.4 mm (357 x 354 mm, a chest CT's field of view).
H, W, PX = 255, 253, 1.4


def chest(h: int = H, w: int = W, px: float = PX, scale: float = 1.0, left_scale: float = 1.0) -> np.ndarray:
    """(h, w) uint8 lung labels: two elliptical adult lungs (95 x 50 mm semi-axes, ~300 cm² together)
    centred in the frame, 120 mm apart; ``scale`` shrinks both (apex / base), ``left_scale`` the left."""
    yy, xx = np.mgrid[0:h, 0:w]
    out = np.zeros((h, w), np.uint8)
    for label, cx, s in ((1, w / 2 - 60 / px, scale), (2, w / 2 + 60 / px, scale * left_scale)):
        if s > 0:
            out[((yy - h / 2) / (95 * s / px)) ** 2 + ((xx - cx) / (50 * s / px)) ** 2 <= 1] = label
    return out


def air_as_lung(lungs: np.ndarray, px: float = PX) -> np.ndarray:
    """``lungs`` with everything outside a 150 x 170 mm body ellipse labelled right lung
    (outside air taken for lung)."""
    h, w = lungs.shape
    yy, xx = np.mgrid[0:h, 0:w]
    out = lungs.copy()
    out[((yy - h / 2) / (150 / px)) ** 2 + ((xx - w / 2) / (170 / px)) ** 2 > 1] = 1
    return out


def chest_volume(d: int = 61, **kw) -> np.ndarray:
    """(d, H, W) lungs whose size follows sin(pi z) from apex to base (~5.8 L at 5 mm slices and 1.4 mm)."""
    return np.stack([chest(scale=np.sin(np.pi * (k + 0.5) / d) ** 0.5, **kw) for k in range(d)])


def codes(found: list[dict]) -> list[str]:
    return [f["code"] for f in found]


# ------------------------------------------------------------------ plausible lungs

def test_plausible_slice_and_volume_raise_nothing():
    assert lung_qc(chest(), (PX, PX)) == []
    assert lung_qc(chest(), None) == []
    vol = chest_volume()
    litres = np.count_nonzero(vol) * 5.0 * PX * PX / 1e6
    assert 3 < litres < 8  # an adult's lungs
    assert lung_qc(vol, (5.0, PX, PX)) == []
    assert lung_qc(vol, None) == []


def test_a_lung_crop_is_not_taken_for_air_at_the_edge():
    """Cut to the lungs' box (the training slices' framing) the lungs run along most of the
    border and fill most of the image; the mediastinum between them still reaches the border."""
    sl = chest()
    rows, cols = np.flatnonzero(sl.any(axis=1)), np.flatnonzero(sl.any(axis=0))
    crop = sl[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    assert np.count_nonzero(crop) / crop.size > q.COVER_MAX
    assert lung_qc(crop, (PX, PX)) == []
    assert lung_qc(np.stack([crop] * 5), (5.0, PX, PX)) == []


def test_crop_threshold_is_the_framing_one():
    from smallcovid.inference.framing import FULL_COVER

    assert q.CROP_BOX_MIN == FULL_COVER


# ------------------------------------------------------------------ each code

def test_no_lungs():
    found = lung_qc(np.zeros((7, 9), np.uint8), (0.7, 0.7))
    assert codes(found) == ["no_lungs"]
    assert codes(lung_qc(np.zeros((3, 7, 9), np.uint8), None)) == ["no_lungs"]


def test_one_lung_missing_or_tiny():
    found = lung_qc(chest(left_scale=0), (PX, PX))
    assert codes(found) == ["one_lung"] and "left lung is missing" in found[0]["message"]
    found = lung_qc(chest(left_scale=0.25), (PX, PX))  # area ratio 1/16: 6 %
    assert codes(found) == ["one_lung"] and "only 6%" in found[0]["message"]
    vol = chest_volume(d=31, left_scale=0)
    found = lung_qc(vol, (10.0, PX, PX))
    assert codes(found) == ["one_lung"] and "left lung is missing" in found[0]["message"]


def test_lr_ratio_between_three_and_ten():
    found = lung_qc(chest(left_scale=0.45), (PX, PX))  # area ratio ~4.9
    assert codes(found) == ["lr_ratio"]
    assert "right lung is 4.9 times the area of the left" in found[0]["message"]
    assert lung_qc(chest(left_scale=0.7), (PX, PX)) == []  # ~2x: within what lungs do


def test_lung_at_edge_slice_and_volume():
    found = lung_qc(air_as_lung(chest()), (PX, PX))
    assert "lung_at_edge" in codes(found)
    msg = next(f["message"] for f in found if f["code"] == "lung_at_edge")
    assert "image border" in msg and "%" in msg
    # a volume: flagged on 3 of 9 lung slices (a third), not on 2 (22 %, a tight field of view at the bases)
    good, bad = chest(), air_as_lung(chest())
    assert "lung_at_edge" in codes(lung_qc(np.stack([bad] * 3 + [good] * 6), (5.0, PX, PX)))
    assert "lung_at_edge" not in codes(lung_qc(np.stack([bad] * 2 + [good] * 7), (5.0, PX, PX)))


def test_lung_area_of_a_slice():
    small = lung_qc(chest(), (0.05 * PX, 0.05 * PX))  # the same pixels, 1/400 of the area: ~0.8 cm²
    assert codes(small) == ["lung_area"] and "cm²" in small[0]["message"] and "less than" in small[0]["message"]
    big = lung_qc(chest(), (2.2 * PX, 2.2 * PX))  # ~4.8x the area: ~1460 cm²
    assert codes(big) == ["lung_area"] and "more than the 1000 cm²" in big[0]["message"]
    assert lung_qc(chest(), None) == []  # no spacing: not judged


def test_lung_volume_of_a_chest_long_scan():
    vol = chest_volume()
    low = lung_qc(vol, (5.0, 0.5, 0.5))  # ~0.7 L
    assert codes(low) == ["lung_volume"] and " L, outside the 1-10 L" in low[0]["message"]
    high = lung_qc(vol, (5.0, 2.5, 2.5))  # ~18 L
    assert codes(high) == ["lung_volume"]
    assert lung_qc(vol, None) == []


def test_thin_slab_is_judged_by_its_mean_slice_area():
    slab = np.stack([chest()] * 3)
    assert lung_qc(slab, (5.0, PX, PX)) == []  # 15 mm: no volume check
    found = lung_qc(slab, (5.0, 2.2 * PX, 2.2 * PX))
    assert codes(found) == ["lung_area"] and "per slice on average" in found[0]["message"]
    assert lung_qc(slab, (5.0, 0.3, 0.3)) == []  # small, but a slab may lie at the apex


def test_lung_cover():
    """Lungs inside the image (no border contact) that fill 65 % of it."""
    sl = np.zeros((41, 37), np.uint8)
    sl[4:37, 3:18] = 1
    sl[4:37, 19:34] = 2
    found = lung_qc(sl, None)
    assert codes(found) == ["lung_cover"] and "65%" in found[0]["message"]
    found = lung_qc(np.stack([sl] * 5), None)
    assert codes(found) == ["lung_cover"] and found[0]["message"].startswith("On a typical slice")


def test_every_code_is_documented_and_findings_are_sentences():
    seen = set()
    for found in (lung_qc(np.zeros((5, 5), np.uint8), None), lung_qc(chest(left_scale=0), None),
                  lung_qc(air_as_lung(chest()), (PX, PX)), lung_qc(chest(), (3 * PX, 3 * PX)),
                  lung_qc(chest_volume(), (5.0, 0.5, 0.5)), lung_qc(chest(left_scale=0.45), None)):
        for f in found:
            assert set(f) == {"code", "message"} and f["message"].endswith(".") and "\n" not in f["message"]
            seen.add(f["code"])
    assert seen <= set(QC_CODES)
    assert seen >= set(QC_CODES) - {"lung_cover"}  # lung_cover: test_lung_cover


# ------------------------------------------------------------------ input checks, helpers

@pytest.mark.parametrize("lungs, spacing, match", [
    (np.zeros(5, np.uint8), None, r"shape \(5,\)"),
    (np.zeros((2, 3, 4, 5), np.uint8), None, r"shape \(2, 3, 4, 5\)"),
    (np.zeros((3, 4), np.float32), None, "dtype float32"),
    (np.full((3, 4), 3, np.uint8), None, "values from 3 to 3"),
    (np.full((3, 4), -1, np.int8), None, "values from -1 to -1"),
    (np.zeros((3, 4), np.uint8), (1.0, 1.0, 1.0), r"2 positive .* got \(1.0, 1.0, 1.0\)"),
    (np.zeros((2, 3, 4), np.uint8), (1.0, 1.0), r"3 positive .* got \(1.0, 1.0\)"),
    (np.zeros((3, 4), np.uint8), (0.0, 1.0), r"got \(0.0, 1.0\)"),
    (np.zeros((3, 4), np.uint8), (float("nan"), 1.0), "nan"),
    (np.zeros((3, 4), np.uint8), "ab", "'ab'"),
])
def test_bad_inputs_are_refused_by_name(lungs, spacing, match):
    with pytest.raises(ValueError, match=match):
        lung_qc(lungs, spacing)


def test_boolean_masks_and_tiny_frames():
    assert codes(lung_qc(np.ones((1, 1), bool), None)) == ["one_lung", "lung_at_edge", "lung_cover"]
    assert codes(lung_qc(np.ones((1, 3, 1), np.uint8), None))[0] == "one_lung"


def test_unreliable_and_summary():
    found = [{"code": "lung_at_edge", "message": "The lung mask runs along 40% of the image border."},
             {"code": "lr_ratio", "message": "The right lung is 4.2 times the area of the left lung."}]
    assert qc_unreliable(found) and not qc_unreliable([]) and not qc_unreliable(None)
    assert qc_summary(found) == ("lung QC: lung_at_edge (The lung mask runs along 40% of the image border); "
                                 "lr_ratio (The right lung is 4.2 times the area of the left lung)")
    assert qc_summary([]) == "lung QC: ok"
    assert "\n" not in qc_summary(lung_qc(air_as_lung(chest()), (PX, PX)))


# ------------------------------------------------------------------ reports and the command line

def test_volume_result_report_checks_the_whole_lung_map():
    """The report counts within the lungs' region, but QC sees the full slices (else every lung
    would seem to touch the border of its own bounding box)."""
    from smallcovid.inference.framing import Box
    from smallcovid.inference.volume import VolumeResult

    lungs = np.stack([chest()] * 4)
    shape = lungs.shape
    boxes = tuple(Box(60, 200, 40, 210) for _ in range(4))
    res = VolumeResult(np.zeros(shape, np.uint8), np.ones(shape, np.uint8), lungs, (5.0, PX, PX), boxes)
    rep = res.report(0.5, "m")
    assert rep["qc"] == [] and rep["reliable"] is True and rep["unreliable"] == []
    bad = VolumeResult(np.zeros(shape, np.uint8), np.ones(shape, np.uint8), np.stack([air_as_lung(chest())] * 4),
                       (5.0, PX, PX), boxes)
    rep = bad.report(0.5, "m")
    assert "lung_at_edge" in codes(rep["qc"]) and rep["reliable"] is False
    assert rep["unreliable"] == ["lung_ml", "involvement_pct", "per_lung", "slices.lung_mm2"]
    json.dumps(rep, allow_nan=False)


def test_qc_warning_line():
    from smallcovid.cli.predict import qc_warning

    rep = {"qc": [{"code": "no_lungs", "message": "No lung was found, so lung size and involvement cannot be "
                                                  "measured."}]}
    assert qc_warning("scans/a.nii.gz", rep) == ("warning: scans/a.nii.gz: lung QC: no_lungs (No lung was found, "
                                                 "so lung size and involvement cannot be measured)")
    assert qc_warning("a.png", {"qc": []}) is None and qc_warning("a.png", {}) is None


class _NoLesions:
    """A stand-in model: no lesion anywhere (the command's steps around it are the real ones)."""

    name, threshold, card = "no-lesions", 0.5, {}

    def predict_images(self, images, batch_size=8):
        from smallcovid.inference.predictor import ProbMaps

        return [ProbMaps(lesion=np.zeros(im.shape, np.float32),
                         types=np.stack([np.ones(im.shape, np.float32)] + [np.zeros(im.shape, np.float32)] * 2),
                         seconds=0.0) for im in images]


def test_predict_warns_once_per_implausible_scan_and_exits_0(tmp_path, monkeypatch, capsys):
    """A NIfTI of soft tissue only (no lungs) gets one warning line; a chest phantom none."""
    import smallcovid.inference.ensemble as ensemble
    from smallcovid.cli.benchvolume import synthetic_ct
    from smallcovid.cli.main import main

    monkeypatch.setattr(ensemble, "load_model", lambda *a, **k: _NoLesions())
    chest_ct = tmp_path / "chest.nii.gz"
    nib.save(nib.Nifti1Image(np.ascontiguousarray(synthetic_ct(3, 96).transpose(1, 2, 0)),
                             np.diag([3.0, 3.0, 3.0, 1.0])), chest_ct)
    tissue = tmp_path / "tissue.nii.gz"
    nib.save(nib.Nifti1Image(np.full((33, 29, 3), 40, np.int16), np.diag([0.7, 0.7, 2.5, 1.0])), tissue)
    out = tmp_path / "out"
    rc = main(["predict", "--model", "smallcovid-net", str(chest_ct), str(tissue), "--out", str(out),
               "--device", "cpu"])
    stdout, stderr = capsys.readouterr()
    assert rc == 0, stderr
    assert stdout.count(": wrote ") == 2
    assert json.loads((out / "chest_report.json").read_text())["qc"] == []
    report = json.loads((out / "tissue_report.json").read_text())
    assert codes(report["qc"]) == ["no_lungs"] and report["reliable"] is False
    assert stderr.splitlines() == [f"warning: {tissue}: {qc_summary(report['qc'])}"]


# ------------------------------------------------------------------ the Segment page

def _chest_nifti(px: float) -> bytes:
    """One HU slice: a body ellipse with two symmetric lungs (radii in pixels), at ``px`` mm per pixel."""
    h, w = 181, 179
    yy, xx = np.mgrid[0:h, 0:w]
    hu = np.full((h, w), -1000.0, np.float32)
    hu[((yy - h / 2) / 80) ** 2 + ((xx - w / 2) / 60) ** 2 <= 1] = 40
    for cy in (h / 2 - 32, h / 2 + 32):
        hu[((yy - cy) / 24) ** 2 + ((xx - w / 2) / 45) ** 2 <= 1] = -850
    return nib.Nifti1Image(hu[:, :, None], np.diag([px, px, 5.0, 1.0])).to_bytes()


def test_segment_page_warns_and_marks_percent_of_lung(app_env):
    """At 4 mm a pixel the same lungs cover ~1,200 cm²: a warning above the viewer, "% of lung" marked."""
    from streamlit.testing.v1 import AppTest

    import viewerhelpers as vh

    at = AppTest.from_file(str(Path(__file__).resolve().parent.parent / "app.py"), default_timeout=180).run()
    at.multiselect(key="models").set_value(["smallcovid-net"]).run()
    at.file_uploader(key="scan_files").set_value(("big.nii.gz", _chest_nifti(4.0), "application/gzip")).run()
    assert not at.exception and not at.error
    qc_boxes = [w.value for w in at.warning if "Lung QC failed" in w.value]
    assert len(qc_boxes) == 1 and "(`lung_area`)" in qc_boxes[0] and "% of lung" in qc_boxes[0]
    assert vh.viewer_data(at)["quantities"]["lung_unreliable"] is True
    at.file_uploader(key="scan_files").set_value(("ok.nii.gz", _chest_nifti(1.0), "application/gzip")).run()
    assert not at.exception and not any("Lung QC" in w.value for w in at.warning)
    assert vh.viewer_data(at)["quantities"]["lung_unreliable"] is False
