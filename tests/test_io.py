"""smallcovid.io: every supported format loads correctly; every bad input fails cleanly.

Fixtures are tiny and synthetic (odd sizes such as 37x53) plus pydicom's bundled
CT_small.dcm / MR_small.dcm. The bad inputs come from tests/bad_inputs.py.
"""

from __future__ import annotations

import gzip
import os
import random
from io import BytesIO

import nibabel as nib
import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file

from smallcovid import io

from smallcovid.io import validate
from smallcovid.core.errors import InputFileError, SmallCovidError
from smallcovid.data.preprocess import to_model_input

try:
    from bad_inputs import bad_inputs, ct_small_bytes, image_bytes, nifti_bytes, png_bytes
except ImportError:  # tests/ imported as a package
    from tests.bad_inputs import bad_inputs, ct_small_bytes, image_bytes, nifti_bytes, png_bytes

READERS = {"scan": io.read_scan, "mask": io.read_mask, "classes": io.read_classes,
           "labels": io.read_label_volume}
CASES = bad_inputs()
RNG = np.random.default_rng(7)
GRAY = RNG.integers(0, 256, (53, 37), dtype=np.uint8)


def _call(case, source, name=None):
    kwargs = {"shape": case.shape} if case.shape else {}
    return READERS[case.reader](source, name, **kwargs)


def _write(tmp_path, name, data):
    path = tmp_path / name
    path.write_bytes(data)
    return path


# ------------------------------------------------------------------ bad inputs

def test_generator_covers_at_least_27_kinds():
    assert len(CASES) >= 27
    assert len({c.name for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_raises_one_line_input_file_error(case, tmp_path):
    path = _write(tmp_path, case.name, case.data)
    with pytest.raises(InputFileError) as info:  # any other exception type fails the test
        _call(case, path)
    message = str(info.value)
    assert message.startswith(f"{case.name}: ") and "\n" not in message and len(message) < 300
    assert " at 0x" not in message  # no object reprs
    # the same bytes as an upload give the same problem, under the given name
    with pytest.raises(InputFileError) as again:
        _call(case, case.data, "upload-" + case.name)
    assert again.value.problem == info.value.problem


def test_fuzzed_files_only_raise_input_file_error():
    """Random truncations and byte flips of valid files: load or InputFileError, nothing else."""
    rnd = random.Random(3)
    valid = {"a.png": png_bytes(GRAY), "a.jpg": image_bytes(Image.fromarray(GRAY), "JPEG"),
             "a.tif": image_bytes(Image.fromarray(GRAY), "TIFF"), "a.dcm": ct_small_bytes(),
             "a.nii": nifti_bytes(GRAY.astype(np.int16)[:, :, None].repeat(2, 2)),
             "a.nii.gz": nifti_bytes(GRAY.astype(np.float32)[:, :, None].repeat(2, 2), gz=True)}
    for name, data in valid.items():
        for _ in range(60):
            buf = bytearray(data)
            if rnd.random() < 0.4:
                buf = buf[: rnd.randrange(len(buf))]
            else:
                for _ in range(rnd.randint(1, 10)):
                    buf[rnd.randrange(min(len(buf), 600))] = rnd.randrange(256)
            try:
                io.read_scan(bytes(buf), name)
            except InputFileError as exc:
                assert str(exc).startswith(name) and "\n" not in str(exc)


def test_missing_file_folder_and_wrong_type(tmp_path):
    with pytest.raises(InputFileError, match="nope.png: does not exist"):
        io.read_scan(tmp_path / "nope.png")
    with pytest.raises(InputFileError, match="is a folder"):
        io.read_scan(tmp_path)
    with pytest.raises(InputFileError, match="not a file path or bytes"):
        io.read_scan(12345)  # type: ignore[arg-type]


def test_upload_limit_and_env_var(tmp_path, monkeypatch):
    monkeypatch.setattr(validate, "MAX_UPLOAD_BYTES", 1000)
    path = _write(tmp_path, "big.png", png_bytes(RNG.integers(0, 256, (64, 64), dtype=np.uint8)))
    with pytest.raises(InputFileError, match="big.png: is larger than the upload limit"):
        io.read_scan(path)
    monkeypatch.setenv("SMALLCOVID_MAX_UPLOAD_MB", "2")
    assert validate.env_mb("SMALLCOVID_MAX_UPLOAD_MB", 512) == 2 * 1024 * 1024
    monkeypatch.setenv("SMALLCOVID_MAX_UPLOAD_MB", "lots")
    assert validate.env_mb("SMALLCOVID_MAX_UPLOAD_MB", 512) == 512 * 1024 * 1024


def test_gunzip_limit(monkeypatch):
    data = nifti_bytes(np.zeros((64, 64, 8), np.float32), gz=True)
    monkeypatch.setattr(validate, "MAX_GUNZIP_BYTES", 50_000)
    with pytest.raises(InputFileError, match="would decompress to .* more than the limit of 50000"):
        io.read_scan(data, "vol.nii.gz")


def test_voxel_limit(monkeypatch):
    monkeypatch.setattr(validate, "MAX_VOXELS", 1000)
    with pytest.raises(InputFileError, match="has 5000 voxels, more than the limit of 1000"):
        io.read_scan(nifti_bytes(np.zeros((10, 10, 50), np.int16)), "v.nii")


# ------------------------------------------------------------------ DICOM

def test_dicom_ct_small_in_hounsfield_units():
    path = get_testdata_file("CT_small.dcm")
    ds = pydicom.dcmread(path)
    s = io.read_scan(path)
    assert isinstance(s, io.Slice) and s.units == "hu" and s.source == "CT_small.dcm"
    assert s.shape == (128, 128) and s.pixels.dtype == np.float32
    expected = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    np.testing.assert_array_equal(s.pixels, expected.astype(np.float32))
    assert s.spacing == pytest.approx((0.661468, 0.661468))


def test_dicom_multiframe_is_a_volume_and_mr_is_raw():
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.NumberOfFrames = 3
    ds.PixelData = ds.PixelData * 3
    buf = BytesIO()
    ds.save_as(buf)
    v = io.read_scan(buf.getvalue(), "frames.dcm")
    assert isinstance(v, io.Volume) and len(v) == 3 and v.units == "hu" and v.affine is None
    assert v.spacing == pytest.approx((5.0, 0.661468, 0.661468))
    assert io.read_scan(get_testdata_file("MR_small.dcm")).units == "raw"


# ------------------------------------------------------------------ NIfTI

AFFINE = np.array([[0.7, 0, 0, -10], [0, 0.8, 0, 5], [0, 0, 2.5, 30], [0, 0, 0, 1.0]])


@pytest.mark.parametrize("gz", [False, True], ids=["nii", "nii.gz"])
def test_nifti_3d_voxel_order_spacing_affine(gz, tmp_path):
    data = (RNG.standard_normal((37, 53, 5)) * 400 - 600).astype(np.float32)
    path = _write(tmp_path, "ct.nii.gz" if gz else "ct.nii", nifti_bytes(data, AFFINE, gz))
    v = io.read_scan(path)
    assert isinstance(v, io.Volume) and v.voxels.shape == (5, 37, 53) and len(v) == 5
    for k in range(5):
        np.testing.assert_array_equal(v.voxels[k], data[:, :, k])
    assert v.spacing == pytest.approx((2.5, 0.7, 0.8)) and v.units == "hu"
    np.testing.assert_allclose(v.affine, AFFINE, atol=1e-5)
    s = v.slice(4)
    assert s.shape == (37, 53) and s.spacing == pytest.approx((0.7, 0.8))
    np.testing.assert_array_equal(s.pixels, data[:, :, 4])


def test_nifti_2d_singletons_units_and_nan():
    flat = RNG.random((37, 53)).astype(np.float32) * 100
    s = io.read_scan(nifti_bytes(flat, np.diag([0.5, 0.6, 3, 1])), "flat.nii")
    assert isinstance(s, io.Slice) and s.units == "raw" and s.spacing == pytest.approx((0.5, 0.6))
    np.testing.assert_array_equal(s.pixels, flat)
    assert isinstance(io.read_scan(nifti_bytes(flat[:, :, None]), "one.nii"), io.Slice)
    v = io.read_scan(nifti_bytes(np.stack([flat, flat], 2)[..., None]), "t1.nii")
    assert isinstance(v, io.Volume) and len(v) == 2
    holes = flat.copy()
    holes[0, :5] = np.nan
    holes[1, 1] = np.inf
    s = io.read_scan(nifti_bytes(holes), "holes.nii")
    assert np.isfinite(s.pixels).all() and s.pixels[0, 0] == np.nanmin(flat)


def test_nifti_big_endian_and_nifti2():
    data = (np.arange(37 * 53 * 2).reshape(37, 53, 2) - 2000).astype(np.int16)
    hdr = nib.Nifti1Header().as_byteswapped(">")
    v = io.read_scan(nib.Nifti1Image(data, np.eye(4), header=hdr).to_bytes(), "be.nii")
    np.testing.assert_array_equal(v.voxels[1], data[:, :, 1])
    assert v.units == "hu"
    v2 = io.read_scan(nib.Nifti2Image(data, np.eye(4)).to_bytes(), "two.nii")
    np.testing.assert_array_equal(v2.voxels[0], data[:, :, 0])


# ------------------------------------------------------------------ images

@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA", "LA", "P", "1"])
def test_8bit_png_modes_are_gray_display(mode):
    img = Image.fromarray(GRAY).convert(mode)
    s = io.read_scan(image_bytes(img, "PNG"), f"{mode}.png")
    assert s.units == "display" and s.shape == (53, 37) and s.pixels.dtype == np.float32
    assert 0.0 <= s.pixels.min() and s.pixels.max() <= 1.0
    if mode in ("L", "RGB", "RGBA", "LA"):
        np.testing.assert_allclose(s.pixels, GRAY / 255, atol=1e-6)


def test_16bit_png_keeps_raw_values():
    arr = RNG.integers(0, 5000, (53, 37)).astype(np.uint16)
    arr[3, 4] = 4000
    s = io.read_scan(png_bytes(arr), "sixteen.png")
    assert s.units == "raw" and s.pixels[3, 4] == 4000
    np.testing.assert_array_equal(s.pixels, arr.astype(np.float32))


def test_16bit_all_zero_png_loads_as_blank():
    """Decision: a blank 16-bit slice is valid input (not an error); it preprocesses to zeros."""
    s = io.read_scan(png_bytes(np.zeros((53, 37), np.uint16)), "blank16.png")
    assert s.units == "raw" and not s.pixels.any()
    out = to_model_input(s)
    assert out.shape == (53, 37) and np.isfinite(out).all() and not out.any()


def test_jpeg_tiff_and_float_tiff():
    j = io.read_scan(image_bytes(Image.fromarray(GRAY), "JPEG"), "a.jpg")
    assert j.units == "display" and np.abs(j.pixels - GRAY / 255).mean() < 0.05
    t = io.read_scan(image_bytes(Image.fromarray(GRAY), "TIFF"), "a.tif")
    np.testing.assert_allclose(t.pixels, GRAY / 255, atol=1e-6)
    t16 = io.read_scan(image_bytes(Image.fromarray(GRAY.astype(np.uint16) * 10), "TIFF"), "b.tif")
    assert t16.units == "raw" and t16.pixels.max() == int(GRAY.max()) * 10
    f = RNG.standard_normal((53, 37)).astype(np.float32)
    f[0, 0] = np.nan
    tf = io.read_scan(image_bytes(Image.fromarray(f), "TIFF"), "c.tif")
    assert tf.units == "raw" and tf.pixels[0, 0] == np.nanmin(f) and np.isfinite(tf.pixels).all()


def test_multipage_tiff_takes_first_frame_and_content_beats_extension(tmp_path):
    buf = BytesIO()
    Image.fromarray(GRAY).save(buf, format="TIFF", save_all=True, append_images=[Image.fromarray(255 - GRAY)])
    np.testing.assert_allclose(io.read_scan(buf.getvalue(), "pages.tif").pixels, GRAY / 255, atol=1e-6)
    path = _write(tmp_path, "really_a_png.jpg", png_bytes(GRAY))
    np.testing.assert_allclose(io.read_scan(path).pixels, GRAY / 255, atol=1e-6)


def test_bytes_default_name():
    assert io.read_scan(png_bytes(GRAY)).source == "upload"
    with pytest.raises(InputFileError, match="^upload: is empty$"):
        io.read_scan(b"")


# ------------------------------------------------------------------ Slice / Volume

def test_volume_slice_range_and_constructor_checks():
    v = io.Volume(np.zeros((3, 10, 12)), "hu", (2.0, 0.5, 0.6), None, "v.nii")
    assert v.voxels.dtype == np.float32 and v.slice(2).spacing == (0.5, 0.6)
    for bad in (3, -1, 1.5, True):
        with pytest.raises(SmallCovidError, match="valid indices are 0 to 2"):
            v.slice(bad)
    with pytest.raises(SmallCovidError):
        io.Slice(np.zeros((2, 3, 4)), "hu", None, "x")
    with pytest.raises(SmallCovidError):
        io.Slice(np.zeros((8, 8)), "kelvin", None, "x")  # type: ignore[arg-type]


# ------------------------------------------------------------------ masks and labels

def test_read_mask_variants():
    m = np.zeros((53, 37), np.uint8)
    m[5:20, 3:30] = 255
    got = io.read_mask(png_bytes(m), "m.png", shape=(53, 37))
    assert got.dtype == bool and got.shape == (53, 37) and got.sum() == (m > 0).sum()
    np.testing.assert_array_equal(io.read_mask(png_bytes(m // 255), "m01.png"), m > 0)
    np.testing.assert_array_equal(io.read_mask(png_bytes(np.stack([m] * 3, -1)), "rgb.png"), m > 0)
    assert not io.read_mask(png_bytes(np.zeros((53, 37), np.uint8)), "empty.png").any()


def test_read_classes_folds_3_into_2():
    c = np.zeros((53, 37), np.uint8)
    c[1, :4] = [0, 1, 2, 3]
    got = io.read_classes(png_bytes(c), "c.png", shape=(53, 37))
    assert got.dtype == np.uint8 and got[1, :4].tolist() == [0, 1, 2, 2]


def test_read_label_volume_order():
    lab = RNG.integers(0, 4, (37, 53, 3)).astype(np.float64)  # MedSeg stores labels as floats
    got = io.read_label_volume(nifti_bytes(lab, gz=True), "tr_mask.nii.gz")
    assert got.dtype == np.uint8 and got.shape == (3, 37, 53)
    np.testing.assert_array_equal(got[2], lab[:, :, 2])
    assert io.read_label_volume(nifti_bytes(lab[:, :, 0]), "one.nii").shape == (1, 37, 53)


# ------------------------------------------------------------------ writers

def test_write_nifti_mask_round_trip(tmp_path):
    data = (RNG.standard_normal((37, 53, 4)) * 300).astype(np.float32)
    vol = io.read_scan(_write(tmp_path, "ct.nii.gz", nifti_bytes(data, AFFINE, gz=True)))
    mask = (vol.voxels > 0).astype(np.uint8)
    out = tmp_path / "mask.nii.gz"
    io.write_nifti_mask(out, mask, like=vol)
    img = nib.load(str(out))
    assert img.shape == (37, 53, 4) and img.get_data_dtype() == np.uint8
    np.testing.assert_allclose(img.affine, AFFINE, atol=1e-5)
    np.testing.assert_array_equal(io.read_label_volume(out), mask)
    assert gzip.decompress(out.read_bytes())[:4] == (348).to_bytes(4, "little")
    plain = io.Volume(np.zeros((2, 9, 10)), "raw", (3.0, 0.5, 0.25), None, "x")
    io.write_nifti_mask(tmp_path / "plain.nii", np.ones((2, 9, 10), np.uint8), plain)
    assert nib.load(str(tmp_path / "plain.nii")).header.get_zooms() == pytest.approx((0.5, 0.25, 3.0))
    with pytest.raises(SmallCovidError, match="differs"):
        io.write_nifti_mask(tmp_path / "bad.nii.gz", mask[:2], like=vol)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ct.nii.gz", "mask.nii.gz", "plain.nii"]


def test_write_png_is_atomic(tmp_path, monkeypatch):
    out = tmp_path / "m.png"
    io.write_png(out, GRAY)
    np.testing.assert_array_equal(np.asarray(Image.open(out)), GRAY)
    assert os.listdir(tmp_path) == ["m.png"]

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        io.write_png(out, 255 - GRAY)
    monkeypatch.undo()
    assert os.listdir(tmp_path) == ["m.png"]  # no temp file left, old file intact
    np.testing.assert_array_equal(np.asarray(Image.open(out)), GRAY)
    with pytest.raises(SmallCovidError, match="uint8"):
        io.write_png(out, GRAY.astype(np.float32))


def test_int16_hu_volumes_stay_int16_other_data_float32():
    hu = (RNG.standard_normal((37, 53, 5)) * 300 - 600).astype(np.int16)
    v = io.read_scan(nifti_bytes(hu, gz=True), "ct.nii.gz")
    assert v.units == "hu" and v.voxels.dtype == np.int16 and v.voxels.nbytes == hu.nbytes
    for k in range(5):
        np.testing.assert_array_equal(v.voxels[k], hu[:, :, k])
    assert v.slice(2).pixels.dtype == np.float32
    raw = io.read_scan(nifti_bytes((hu - hu.min()).astype(np.int16), gz=True), "mr.nii.gz")
    assert raw.units == "raw" and raw.voxels.dtype == np.float32  # not HU: float32 as before
    assert io.Volume(np.zeros((2, 4, 4), np.int32), "hu").voxels.dtype == np.float32
