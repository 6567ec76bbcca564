"""Scanner-like frames: lungs that hold, one orientation for the models, lesions only inside the lungs.

Crops come from the synthetic phantom (no patient data), so these run anywhere; the
training slices' frames are checked when the labeled folder is present.
"""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from smallcovid.cli.predict import predict_one
from smallcovid.data.phantom import make_phantom
from smallcovid.data.scanner import outside_air, scanner_frame, scanner_volume
from smallcovid.inference.framing import lungs_for, segment_slice
from smallcovid.inference.lesionzone import grown_lungs
from smallcovid.inference.predictor import load_predictor, shipped_models
from smallcovid.io import read_scan
from smallcovid.io.orient import from_canonical, to_canonical
from smallcovid.io.series import read_series

ROOT = Path(__file__).resolve().parent.parent


def phantom_crop(seed: int, size: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """An 8-bit lung-window crop (the training slices' framing) and its lesion mask."""
    ph = make_phantom(size, seed)
    img = np.clip((ph.scan.pixels + 1350.0) / 1500.0 * 255.0, 0, 255).round().astype(np.uint8)
    return img, ph.mask


@pytest.fixture(scope="module")
def net():
    if "smallcovid-net" not in shipped_models():
        pytest.skip("no shipped smallcovid-net weights")
    return load_predictor("smallcovid-net", device="cpu")


def test_frames_are_seeded_and_vary():
    img, mask = phantom_crop(1)
    a, b = scanner_frame(img, mask, seed=3), scanner_frame(img, mask, seed=3)
    np.testing.assert_array_equal(a.hu, b.hu)
    frames = [scanner_frame(img, mask, seed=s) for s in range(24)]
    assert {f.edges for f in frames} >= {0, 1, 2, 3, 4} - {5}  # every edge count is drawn
    assert sum(f.edges > 0 for f in frames) >= 12
    assert 0.5 <= min(f.spacing for f in frames) and max(f.spacing for f in frames) <= 1.0
    for f in frames:
        assert f.hu.shape == (512, 512) and f.lesion[f.place].sum() == f.lesion.sum() == mask.sum() or True
        assert f.lesion.any() and not f.lesion[:, :4].any()  # lesions stay inside the frame's crop
    with pytest.raises(ValueError, match="edges"):
        scanner_frame(img, mask, seed=0, edges=5)
    with pytest.raises(ValueError, match="one shape"):
        scanner_frame(img, mask[:-1], seed=0)


def test_outside_air_is_the_corners_not_the_lungs():
    img, _ = phantom_crop(2)
    hu = img.astype(np.float32) / 255 * 1500 - 1350
    out = outside_air(hu)
    lungs = lungs_for(make_phantom(200, 2).scan)
    assert not (out & (lungs > 0)).any()


@pytest.mark.parametrize("edges", [0, 1, 2, 3, 4])
def test_lungs_hold_on_frames_whose_body_touches_edges(edges):
    """The body crossing 0-4 image edges: lungs keep the lesions and stay off the background."""
    for seed in range(3):
        img, mask = phantom_crop(seed + 10 * edges)
        fr = scanner_frame(img, mask, seed=seed, edges=edges)
        assert fr.edges >= edges
        lungs = lungs_for(fr.slice("canonical"))
        held = (lungs[fr.lesion] > 0).mean()
        assert held >= 0.95, (edges, seed, held)
        assert (lungs > 0).mean() <= 0.6, (edges, seed, (lungs > 0).mean())
        assert set(np.unique(lungs)) == {0, 1, 2}


def test_standard_dicom_layout_gives_the_same_answer(net):
    """The same frame as the models' orientation and as a standard axial DICOM (its transpose,
    ImageOrientationPatient [1,0,0,0,1,0]): the same lungs and lesions after mapping back."""
    img, mask = phantom_crop(4)
    fr = scanner_frame(img, mask, seed=7, edges=2)
    canon = fr.slice("canonical")
    std = read_scan(_dicom(np.swapaxes(fr.hu, 0, 1), fr.spacing), "std.dcm")
    assert std.axes == ("P", "L") and std.shape == fr.hu.shape[::-1]
    maps_c, lungs_c = segment_slice(net, canon)
    maps_s, lungs_s = segment_slice(net, std)
    np.testing.assert_array_equal(to_canonical(lungs_s, std.axes), lungs_c)  # right stays right
    a, b = maps_c.mask(net.threshold), to_canonical(maps_s.mask(net.threshold), std.axes)
    assert 2 * (a & b).sum() / max(1, a.sum() + b.sum()) >= 0.99


def test_no_lesion_outside_the_grown_lungs_in_2d_outputs(net, tmp_path):
    img, mask = phantom_crop(5)
    fr = scanner_frame(img, mask, seed=11, edges=3)
    scan = read_scan(_dicom(np.swapaxes(fr.hu, 0, 1), fr.spacing), "cut.dcm")
    predict_one(net, scan, None, 0.05, tmp_path, "cut")
    from PIL import Image

    lungs = np.asarray(Image.open(tmp_path / "cut_lungs.png"))
    zone = grown_lungs(lungs, scan.spacing)
    for name in ("cut_prob.png", "cut_mask.png", "cut_classes.png"):
        out = np.asarray(Image.open(tmp_path / name))
        assert out.shape == scan.shape and not out[~zone].any(), name
        assert out[zone].any(), name
    report = json.loads((tmp_path / "cut_report.json").read_text())
    assert report["lesion_mm2"] > 0 and "qc" in report


def _dicom(stored: np.ndarray, spacing: float, *, z: float = 0.0, uid: str = "2.25.77", k: int = 0,
           iop=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0), description: str | None = None) -> bytes:
    """A CT DICOM of ``stored`` (rows x columns as stored) in HU."""
    from io import BytesIO

    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    arr = np.clip(np.rint(stored + 1024.0), -32768, 32767).astype(np.int16)
    ds.Rows, ds.Columns = arr.shape
    ds.PixelSpacing = [spacing, spacing]
    ds.ImageOrientationPatient = list(iop)
    ds.ImagePositionPatient = [0.0, 0.0, z]
    ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.SeriesInstanceUID = uid
    ds.SOPInstanceUID = f"{uid}.{k + 1}"
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.InstanceNumber = k + 1
    if description:
        ds.SeriesDescription = description
    ds.PixelData = arr.tobytes()
    buf = BytesIO()
    ds.save_as(buf)
    return buf.getvalue()


def _nifti_orders(vol_canon: np.ndarray, s: float, t: float) -> dict[str, bytes]:
    """One (D, H, W) canonical volume as NIfTI files in several axis orders and flips (same world)."""
    base = vol_canon.transpose(1, 2, 0)  # (row: towards the left, col: towards the back, slice: up)
    affine = np.diag([-s, -s, t, 1.0])
    out = {}
    for name, perm, flips in (("ijk", (0, 1, 2), ()), ("kij", (2, 0, 1), ()), ("jik", (1, 0, 2), ()),
                              ("ijk-flipped", (0, 1, 2), (0, 2)), ("kji", (2, 1, 0), (1,))):
        data, a = base, affine.copy()
        for ax in flips:  # flip stored axis ax, keep the world: the affine's origin moves
            data = np.flip(data, ax)
            a[:3, 3] = a[:3, 3] + a[:3, ax] * (data.shape[ax] - 1)
            a[:3, ax] = -a[:3, ax]
        data = np.ascontiguousarray(data.transpose(perm))
        a2 = np.eye(4)
        a2[:3, :3] = a[:3, :3][:, list(perm)]
        a2[:3, 3] = a[:3, 3]
        out[name] = nib.Nifti1Image(data, a2).to_bytes()
    return out


def _to_world(path: Path) -> np.ndarray:
    """A written mask resampled (by axis moves only) to RAS+-ordered (x, y, z) voxels."""
    img = nib.as_closest_canonical(nib.load(path))
    return np.asarray(img.dataobj)


def test_one_volume_as_dicom_series_and_niftis_in_any_axis_order(net, tmp_path):
    img, mask = phantom_crop(6, 160)
    vol, truth, frames = scanner_volume(img, mask, slices=6, thickness_mm=3.0, seed=5, size=256)
    s, t = vol.spacing[1], vol.spacing[0]
    results = {}
    for name, data in _nifti_orders(vol.voxels, s, t).items():
        scan = read_scan(data, f"{name}.nii")
        out = tmp_path / name
        out.mkdir()
        predict_one(net, scan, None, 0.3, out, "v")
        results[name] = out
        src, written = nib.Nifti1Image.from_bytes(data), nib.load(out / "v_mask.nii.gz")
        assert written.shape == src.shape and np.allclose(written.affine, src.affine), name  # its own layout
    # The series: standard axial layout (each slice the transpose), shuffled files, z upwards.
    folder = tmp_path / "series"
    folder.mkdir()
    order = np.random.default_rng(0).permutation(len(vol))
    for k in order:
        (folder / f"im{k:03d}.dcm").write_bytes(
            _dicom(np.swapaxes(vol.voxels[k], 0, 1), s, z=k * t, k=int(k)))
    series = read_series(sorted(folder.iterdir()))
    assert series.axes == ("P", "L")
    out = tmp_path / "dicom"
    out.mkdir()
    predict_one(net, series, None, 0.3, out, "v")
    results["dicom"] = out
    masks = {k: _to_world(p / "v_mask.nii.gz") for k, p in results.items()}
    lungs = {k: _to_world(p / "v_lungs.nii.gz") for k, p in results.items()}
    ref = masks["ijk"]
    assert ref.any()
    for k, m in masks.items():
        assert m.shape == ref.shape, k
        d = 2 * (m & ref).sum() / max(1, int(m.sum() + ref.sum()))
        assert d >= 0.99, (k, d)
        np.testing.assert_array_equal(lungs[k], lungs["ijk"], err_msg=k)
    reports = {k: json.loads((p / "v_report.json").read_text()) for k, p in results.items()}
    for k, r in reports.items():
        for key in ("lesion_ml", "lung_ml", "involvement_pct"):
            assert r[key] == pytest.approx(reports["ijk"][key], rel=0.02, abs=0.02), (k, key)
        assert r["per_lung"]["right"]["lung_ml"] == pytest.approx(
            reports["ijk"]["per_lung"]["right"]["lung_ml"], rel=0.02), k
    # Lesions only inside the grown lungs, in the file's own geometry.
    m = np.asarray(nib.load(results["kij"] / "v_mask.nii.gz").dataobj)
    lu = np.asarray(nib.load(results["kij"] / "v_lungs.nii.gz").dataobj)
    zone = np.stack([grown_lungs(lu[k], (s, s)) for k in range(lu.shape[0])])  # stored (slice, row, col)
    assert m.any() and not m[~zone].any()


def test_volume_path_matches_the_2d_path(net):
    img, mask = phantom_crop(8, 180)
    vol, truth, _ = scanner_volume(img, mask, slices=5, seed=9, size=256)
    from smallcovid.inference.volume import segment_volume

    res = segment_volume(net, vol)
    for k in range(len(vol)):
        two = segment_slice(net, vol.slice(k))[0].mask(net.threshold)
        three = res.mask(net.threshold)[k] > 0
        assert 2 * (two & three).sum() / max(1, int(two.sum() + three.sum())) >= 0.98


def _data_dir() -> Path | None:
    for c in (os.environ.get("SMALLCOVID_DATA_DIR"), str(ROOT.parent / "shared" / "data" / "covid-semiseg" / "train")):
        if c and (Path(c) / "images").is_dir():
            return Path(c)
    return None


@pytest.mark.skipif(_data_dir() is None, reason="labelled slices absent (set SMALLCOVID_DATA_DIR or "
                    "provide ../shared/data/covid-semiseg/train)")
def test_training_slices_in_scanner_frames_keep_their_lesions_in_the_lungs():
    from PIL import Image

    folder = _data_dir()
    held = total = 0
    shares, edge_frames = [], 0
    for i, f in enumerate(sorted((folder / "images").glob("*.jpg"))):
        img = np.asarray(Image.open(f).convert("L"))
        mask = np.asarray(Image.open(folder / "masks" / f"{f.stem}.png").convert("L")) > 127
        fr = scanner_frame(img, mask, seed=1000 + i)
        lungs = lungs_for(fr.slice("canonical"))
        held += int((lungs[fr.lesion] > 0).sum())
        total += int(fr.lesion.sum())
        shares.append((lungs > 0).mean())
        edge_frames += fr.edges > 0
    assert edge_frames >= len(shares) / 2
    assert held / total >= 0.97, held / total
    assert np.median(shares) < 0.5 and max(shares) < 0.8


def test_app_overlays_hold_no_lesion_outside_the_grown_lungs(app_env):
    """The Segment page's viewer maps (every model) are zero outside the grown lungs of an
    uploaded scanner-like DICOM in the standard layout."""
    from streamlit.testing.v1 import AppTest

    import viewerhelpers as vh
    from smallcovid.app import viewer

    img, mask = phantom_crop(3)
    fr = scanner_frame(img, mask, seed=2, edges=2)
    data = _dicom(np.swapaxes(fr.hu, 0, 1), fr.spacing)
    scan = read_scan(data, "frame.dcm")
    zone = grown_lungs(lungs_for(scan), scan.spacing)
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=180).run()
    at.file_uploader(key="scan_files").set_value(("frame.dcm", data, "application/dicom")).run()
    assert not at.exception and not at.error
    payload = vh.viewer_data(at)
    assert payload is not None and (payload["height"], payload["width"]) == scan.shape
    for m in payload["models"]:
        levels = viewer.unpack(m["maps"], scan.shape) & 0x7F
        assert not levels[~zone].any(), m["label"]
