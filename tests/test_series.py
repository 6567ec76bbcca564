"""DICOM series -> Volume: grouping, ordering, spacing, HU, affine, stems and errors.

Series are built from pydicom's real CT fixture (``CT_small.dcm``, 128x128, pixel spacing
0.661468 mm, axial orientation, RescaleIntercept -1024) with distinct pixels per slice.
"""

from __future__ import annotations

import hashlib
import logging
import random
import shutil
import warnings

import numpy as np
import pydicom
import pytest

from smallcovid.core.errors import InputFileError
from dicomhelpers import FIXTURE, STEP, UID_A, UID_B, series_slice
from pydicom.data import get_testdata_file
from smallcovid.io import Volume, nifti_mask_data
from smallcovid.io import validate as _v
from smallcovid.app.dicom_series import series_caption
from smallcovid.io.series import (SeriesVolume, group_series, read_series, read_series_folder,
                                  series_descriptions)
from smallcovid.io.seriesnames import common_description, description_stem, series_stem, unique_stem

PIX = 0.661468


def _base() -> pydicom.Dataset:
    return pydicom.dcmread(FIXTURE)


def _write(path, k, uid=UID_A, z0=-75.7, step=STEP, **changes) -> None:
    """Slice k of a series: z = z0 + k * step, pixels = fixture + 10 * k (stored values)."""
    series_slice(k, uid, z0, step, offset=10, **changes).save_as(path, enforce_file_format=True)


def _series(folder, n=7, shuffle=True, **kw) -> list:
    folder.mkdir(parents=True, exist_ok=True)
    order = list(range(n))
    if shuffle:
        random.Random(3).shuffle(order)  # file names do not follow slice order
    paths = []
    for i, k in enumerate(order):
        path = folder / f"img{i:02d}.dcm"
        _write(path, k, **kw)
        paths.append(path)
    random.Random(5).shuffle(paths)
    return paths


def _expected(k: int) -> np.ndarray:
    ds = _base()
    return ds.pixel_array.astype(np.float32) + 10 * k - 1024


def test_series_is_sorted_by_position_with_hu_and_spacing(tmp_path):
    paths = _series(tmp_path / "scan")
    vol = read_series(paths)
    assert isinstance(vol, Volume) and isinstance(vol, SeriesVolume)
    # whole HU (slope 1, intercept -1024) are kept as int16: half the memory of float32
    assert vol.voxels.shape == (7, 128, 128) and vol.voxels.dtype == np.int16
    assert vol.units == "hu" and vol.slice(3).pixels.dtype == np.float32
    for k in range(7):
        np.testing.assert_array_equal(vol.voxels[k], _expected(k))
    assert vol.spacing == pytest.approx((STEP, PIX, PIX))
    assert vol.series_uid == UID_A
    assert vol.source == series_stem(UID_A)
    assert [int(pydicom.dcmread(tmp_path / "scan" / f).InstanceNumber) for f in vol.files] == list(range(1, 8))


def test_a_fractional_rescale_keeps_float32(tmp_path):
    # One slice with slope 0.5 (a half-HU step): the stack cannot be whole numbers.
    paths = _series(tmp_path / "scan", n=4, shuffle=False)
    ds = pydicom.dcmread(paths[0])
    ds.RescaleSlope = 0.5
    ds.save_as(paths[0], enforce_file_format=True)
    vol = read_series(paths)
    assert vol.voxels.dtype == np.float32
    half = [k for k in range(4) if not np.array_equal(vol.voxels[k], np.rint(vol.voxels[k]))]
    assert len(half) == 1


def test_affine_maps_voxels_to_ras_positions(tmp_path):
    vol = read_series(_series(tmp_path / "scan"))
    ipp0 = np.array([-158.135803, -179.035797, -75.7])
    for k, r, c in [(0, 0, 0), (3, 5, 0), (6, 0, 9), (6, 127, 127)]:
        # DICOM: P = IPP_k + c * col_spacing * row_cosine + r * row_spacing * col_cosine (LPS)
        lps = ipp0 + np.array([c * PIX, r * PIX, k * STEP])
        ras = vol.affine @ np.array([r, c, k, 1.0])  # NIfTI index order: data[r, c, k] == voxels[k, r, c]
        np.testing.assert_allclose(ras[:3], [-lps[0], -lps[1], lps[2]], atol=1e-4)


def test_exported_nifti_mask_keeps_series_geometry(tmp_path):
    import gzip

    import nibabel

    vol = read_series(_series(tmp_path / "scan"))
    mask = np.zeros(vol.voxels.shape, np.uint8)
    mask[2, 10, 20] = 1
    img = nibabel.Nifti1Image.from_bytes(gzip.decompress(nifti_mask_data(mask, vol)))
    np.testing.assert_allclose(img.affine, vol.affine, atol=1e-4)
    assert np.asarray(img.dataobj)[10, 20, 2] == 1
    assert nibabel.aff2axcodes(img.affine) == ("P", "L", "S")  # rows go posterior, columns to the left


def test_oblique_affine_matches_nibabel_dicom_wrapper(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # nibabel calls its DICOM readers experimental
        from nibabel.nicom.dicomwrappers import wrapper_from_data

    c, s = np.cos(0.3), np.sin(0.3)
    iop = [c, s, 0.0, 0.0, 0.0, -1.0]  # rows tilted in the axial plane, columns pointing feet-wards
    _write(tmp_path / "obl.dcm", 0, ImageOrientationPatient=iop)
    vol = read_series([tmp_path / "obl.dcm"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = wrapper_from_data(pydicom.dcmread(tmp_path / "obl.dcm")).affine  # LPS, axes (row, col, slice)
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ vol.affine
    np.testing.assert_allclose(lps[:3, [0, 1, 3]], ref[:3, [0, 1, 3]], atol=1e-4)
    np.testing.assert_allclose(np.abs(lps[:3, 2]), np.abs(ref[:3, 2]), atol=1e-4)  # slice axis: 5 mm along the normal


def test_reversed_positions_and_bytes_sources(tmp_path):
    # Slice k at z = -75.7 - 2.5 k: sorted ascending along the normal, slice 0 is the last written.
    paths = _series(tmp_path / "scan", step=-STEP)
    vol = read_series([(p.name, p.read_bytes()) for p in paths])
    for j in range(7):
        np.testing.assert_array_equal(vol.voxels[j], _expected(6 - j))
    assert vol.spacing[0] == pytest.approx(STEP)
    np.testing.assert_allclose(vol.affine[:3, 3], [158.135803, 179.035797, -75.7 - 6 * STEP], atol=1e-4)
    np.testing.assert_allclose(vol.affine[:3, 2], [0, 0, STEP], atol=1e-6)


def test_positions_missing_falls_back_to_instance_number(tmp_path, caplog):
    paths = _series(tmp_path / "scan", ImagePositionPatient=None)
    with caplog.at_level(logging.WARNING, logger="smallcovid.io.seriesorder"):
        vol = read_series(paths)
    for k in range(7):
        np.testing.assert_array_equal(vol.voxels[k], _expected(k))
    assert vol.affine is None
    assert vol.spacing == pytest.approx((5.0, PIX, PIX))  # SpacingBetweenSlices of the fixture
    assert "InstanceNumber" in caplog.text


def test_single_file_is_a_volume_of_depth_one(tmp_path):
    vol = read_series([FIXTURE])
    assert vol.voxels.shape == (1, 128, 128)
    assert vol.spacing == pytest.approx((5.0, PIX, PIX))
    assert vol.affine is not None


def test_uneven_spacing_warns_and_uses_median(tmp_path, caplog):
    folder = tmp_path / "scan"
    folder.mkdir()
    for i, z in enumerate([0.0, 2.5, 5.0, 7.5, 12.5]):  # one slice missing
        _write(folder / f"s{i}.dcm", i, z0=z, step=0.0)
    with caplog.at_level(logging.WARNING, logger="smallcovid.io.seriesorder"):
        vol = read_series(sorted(folder.iterdir()))
    assert vol.spacing[0] == pytest.approx(2.5)
    assert "median" in caplog.text


def test_per_slice_rescale_intercept(tmp_path):
    paths = _series(tmp_path / "scan", n=3, shuffle=False)
    _write(paths[1], 1, RescaleIntercept=-1000)
    vol = read_series(paths)
    np.testing.assert_array_equal(vol.voxels[1], _expected(1) + 24)


def test_folder_with_two_series_is_grouped_never_mixed(tmp_path):
    folder = tmp_path / "study"
    _series(folder, n=4)
    for k in range(3):
        _write(folder / f"other{k}.dcm", k, uid=UID_B, z0=100.0)
    (folder / "notes.txt").write_text("not dicom")
    (folder / ".DS_Store").write_bytes(b"\0" * 64)
    (folder / "empty").write_bytes(b"")
    shutil.copy(get_testdata_file("DICOMDIR"), folder / "DICOMDIR")
    (folder / "blob.bin").write_bytes(b"\1" * 4096)
    groups = group_series(sorted(p for p in folder.iterdir() if p.suffix == ".dcm"))
    assert sorted(groups) == [UID_A, UID_B]
    assert len(groups[UID_A]) == 4 and len(groups[UID_B]) == 3
    vols = read_series_folder(folder)
    assert set(vols) == {series_stem(UID_A), series_stem(UID_B)}  # long shared UID prefix: never merged
    a, b = sorted(vols.values(), key=lambda v: len(v), reverse=True)
    assert (a.series_uid, len(a), b.series_uid, len(b)) == (UID_A, 4, UID_B, 3)
    with pytest.raises(InputFileError, match="mixes 2 DICOM series"):
        read_series(sorted(p for p in folder.iterdir() if p.suffix == ".dcm"))


def test_folder_with_one_series_is_named_after_the_folder(tmp_path):
    folder = tmp_path / "patient 7"
    _series(folder, n=3)
    vols = read_series_folder(folder)
    assert list(vols) == ["patient 7"]
    assert vols["patient 7"].source == "patient 7"


def test_stem_rules():
    stem = series_stem(UID_A)
    assert stem.startswith("series-") and len(stem) == len("series-") + 10
    assert stem == "series-" + hashlib.sha1(UID_A.encode()).hexdigest()[:10]
    assert unique_stem(stem, {stem}) == stem + "-2" and unique_stem(stem, {stem, stem + "-2"}) == stem + "-3"
    assert series_stem(UID_A, folder="/data/case01/") == "case01"
    assert series_stem(UID_A, folder="/data/case01/", description="CHEST 1mm") == "case01"  # the folder first
    vol = SeriesVolume(np.zeros((1, 8, 8)), "hu", series_uid=UID_A)
    assert series_stem(vol) == stem
    with pytest.raises(ValueError):
        series_stem("")


def test_stem_from_folder_holding_one_series(tmp_path):
    folder = tmp_path / "case01"
    _series(folder, n=3, SeriesDescription="CHEST 1mm")
    assert list(read_series_folder(folder)) == ["case01"]  # the folder's name wins over the description


@pytest.mark.parametrize("description, stem", [
    ("CHEST 1mm", "CHEST_1mm"),
    ("Lung 1.0 / B70f", "Lung_1.0_B70f"),
    ("  Thorax  \\ Weichteil  ", "Thorax_Weichteil"),
    ("Poumons é/à 1,25 mm", "Poumons_e_a_1_25_mm"),
    ("肺 CT 肺窗", "CT"),
    ("../../etc/passwd", "etc_passwd"),
    ("-rf *", "rf"),
    ("x" * 100, "x" * 60),
])
def test_description_stem_is_file_safe(description, stem):
    assert description_stem(description) == stem
    vol = SeriesVolume(np.zeros((1, 8, 8)), "hu", series_uid=UID_A, description=description)
    assert series_stem(vol) == stem
    assert series_stem(UID_A, description=description) == stem


@pytest.mark.parametrize("description", ["", "   ", "///", "肺窗", "._-_."])
def test_description_without_safe_characters_falls_back_to_uid_hash(description):
    assert description_stem(description) == ""
    vol = SeriesVolume(np.zeros((1, 8, 8)), "hu", series_uid=UID_A, description=description)
    assert series_stem(vol) == series_stem(UID_A) == "series-" + hashlib.sha1(UID_A.encode()).hexdigest()[:10]


def test_uid_hash_stem_tells_series_with_a_long_shared_prefix_apart():
    uid1, uid2 = "1.2.826.0.1.3680043.8.498.1", "1.2.826.0.1.3680043.8.498.2"
    assert uid1[:20] == uid2[:20]
    assert series_stem(uid1) != series_stem(uid2)
    assert series_stem(uid1) == series_stem(uid1) == series_stem(SeriesVolume(np.zeros((1, 2, 2)), "hu",
                                                                               series_uid=uid1))
    assert series_stem(UID_A) != series_stem(UID_B)  # the helpers' UIDs share 27 characters


def test_series_read_is_named_after_its_description(tmp_path):
    paths = _series(tmp_path / "scan", n=3, SeriesDescription="Lung 1.0 / B70f")
    vol = read_series(paths)
    assert vol.description == "Lung 1.0 / B70f"
    assert vol.source == series_stem(vol) == "Lung_1.0_B70f"
    assert series_descriptions(paths) == {UID_A: "Lung 1.0 / B70f"}
    assert read_series(_series(tmp_path / "plain", n=2)).source == series_stem(UID_A)  # no description: hash


def test_description_is_the_majority_value():
    assert common_description(["B", "A", "A", ""]) == "A"
    assert common_description(["B", "A", "", " "]) == "B"  # a tie: the first seen; blanks do not count
    assert common_description(["", None]) == ""


def test_folder_series_sharing_a_description_get_numbered_stems(tmp_path):
    folder = tmp_path / "study"
    _series(folder, n=3, SeriesDescription="CHEST 1mm")
    for k in range(2):
        _write(folder / f"other{k}.dcm", k, uid=UID_B, z0=100.0, SeriesDescription="CHEST 1mm")
    vols = read_series_folder(folder)
    assert set(vols) == {"CHEST_1mm", "CHEST_1mm-2"}
    assert {len(v) for v in vols.values()} == {3, 2}


def test_caption_for_a_positioned_series(tmp_path):
    paths = _series(tmp_path / "scan", n=7, SeriesDescription="CHEST 1mm")
    vol = read_series(paths, name="CHEST_1mm")
    assert vol.order == "position"
    assert vol.z_mm == pytest.approx([-75.7 + k * STEP for k in range(7)])
    assert series_caption(vol) == ("Series 'CHEST_1mm' from 7 files, ordered by ImagePositionPatient along the "
                                   "slice normal (z from -75.7 to -60.7 mm, 2.50 mm apart)")


def test_caption_for_uneven_positions_names_the_gaps(tmp_path):
    folder = tmp_path / "scan"
    folder.mkdir()
    for i, z in enumerate([0.0, 2.5, 5.0, 7.5, 12.5]):
        _write(folder / f"s{i}.dcm", i, z0=z, step=0.0)
    text = series_caption(read_series(sorted(folder.iterdir())))
    assert text.endswith("(z from 0.0 to 12.5 mm, median 2.50 mm apart, gaps from 2.50 to 5.00 mm)")


def test_caption_for_a_series_ordered_by_instance_number(tmp_path):
    vol = read_series(_series(tmp_path / "scan", n=4, ImagePositionPatient=None))
    assert vol.order == "instance" and vol.z_mm == ()
    assert series_caption(vol) == (f"Series '{series_stem(UID_A)}' from 4 files, "
                                   "ordered by InstanceNumber (no slice positions)")


def test_caption_for_a_single_file():
    vol = read_series([FIXTURE])
    assert vol.order == "single" and vol.z_mm == pytest.approx([-75.7])
    assert series_caption(vol).endswith("from 1 file (one slice at z -75.7 mm)")


def test_slice_of_other_size_is_a_clear_error(tmp_path):
    paths = _series(tmp_path / "scan", n=4, shuffle=False)
    ds = pydicom.dcmread(paths[2])
    ds.PixelData = ds.pixel_array[:64, :64].copy().tobytes()
    ds.Rows, ds.Columns = 64, 64
    ds.save_as(paths[2])
    with pytest.raises(InputFileError, match=paths[2].name + r": has size 64x64 pixels but the other .* 128x128"):
        read_series(paths)


def test_truncated_slice_is_a_clear_error(tmp_path):
    paths = _series(tmp_path / "scan", n=3, shuffle=False)
    paths[1].write_bytes(paths[1].read_bytes()[:-5000])
    with pytest.raises(InputFileError, match=paths[1].name + r": .*(truncated|corrupt)"):
        read_series(paths)


def test_other_orientation_is_a_clear_error(tmp_path):
    paths = _series(tmp_path / "scan", n=3, shuffle=False)
    _write(paths[0], 0, ImageOrientationPatient=[1, 0, 0, 0, 0, -1])
    with pytest.raises(InputFileError, match=paths[0].name + ": has orientation"):
        read_series(paths)


def test_duplicate_positions_are_an_error(tmp_path):
    folder = tmp_path / "scan"
    folder.mkdir()
    for k in range(3):
        _write(folder / f"s{k}.dcm", k, z0=0.0, step=0.0)
    with pytest.raises(InputFileError, match="same position"):
        read_series(sorted(folder.iterdir()))


def test_non_dicom_and_dicomdir_files_raise_naming_the_file(tmp_path):
    paths = _series(tmp_path / "scan", n=2)
    txt = tmp_path / "scan" / "readme.dcm"
    txt.write_text("hello, this is not a DICOM file at all")
    with pytest.raises(InputFileError, match=r"readme\.dcm: is not a valid DICOM file"):
        group_series(paths + [txt])
    dicomdir = get_testdata_file("DICOMDIR")
    with pytest.raises(InputFileError, match="DICOMDIR"):
        group_series(paths + [dicomdir])
    with pytest.raises(InputFileError, match=r"upload\.bin: is not a valid DICOM file"):
        read_series([("upload.bin", b"\x89PNG\r\n\x1a\n" + b"\0" * 64)])


def test_voxel_limit_is_checked_before_decoding(tmp_path, monkeypatch):
    paths = _series(tmp_path / "scan", n=3)
    monkeypatch.setattr(_v, "MAX_VOXELS", 2 * 128 * 128)
    with pytest.raises(InputFileError, match=f"has {3 * 128 * 128} voxels, more than the limit"):
        read_series(paths)
