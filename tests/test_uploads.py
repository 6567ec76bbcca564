"""Ground-truth uploads next to a scan: matching by name, reading masks / type maps / label volumes."""

from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
import pytest

from apphelpers import png_bytes
from smallcovid.app import uploads
from smallcovid.core.errors import InputFileError
from smallcovid.io import Slice, Volume


def test_stem_and_match():
    assert uploads.stem("dir/case_1.nii.gz") == "case_1" and uploads.stem("medseg_003.jpg") == "medseg_003"
    names = ["other.png", "case_mask.png", "case.png"]
    assert uploads.match_mask(names, "case.jpg") == 1  # first matching name
    assert uploads.match_mask(["x.png"], "case.jpg") is None  # a single mask of another name is not used
    assert uploads.match_mask(["CASE_labels.nii"], "case.nii.gz") == 0
    assert uploads.match_mask(["tr_mask.nii.gz"], "tr_im.nii.gz") == 0  # the MedSeg pair
    assert "not named like the scan case.jpg" in uploads.unmatched_mask_message(["x.png"], "case.jpg")
    assert uploads.match_mask(["x.png", "y.png"], "case.jpg") is None
    assert uploads.match_mask([], "case.jpg") is None


def test_binary_mask_and_type_map():
    types = np.zeros((20, 30), np.uint8)
    types[2:6, 3:9], types[10:14, 10:20] = 1, 3
    mask, t = uploads.read_ground_truth(png_bytes((types > 0).astype(np.uint8) * 255), "m.png", (20, 30))
    assert t is None and mask.sum() == 24 + 40
    mask, t = uploads.read_ground_truth(png_bytes(types), "c.png", (20, 30))
    assert set(np.unique(t)) == {0, 1, 2} and (mask == (types > 0)).all()  # 3 folds into 2
    with pytest.raises(InputFileError, match=r"^m\.png: .*30x20"):
        uploads.read_ground_truth(png_bytes((types > 0).astype(np.uint8) * 255), "m.png", (30, 20))
    bad = types.copy()
    bad[0, 0] = 77
    with pytest.raises(InputFileError, match="0 and 255"):  # the mask reader's message, not the type map's
        uploads.read_ground_truth(png_bytes(bad), "bad.png", (20, 30))


def test_label_volume_for_a_volume():
    vol = Volume(np.zeros((3, 8, 10), np.float32) - 1000, "hu", (2.0, 0.5, 0.5))
    labels = np.zeros((8, 10, 3), np.uint8)  # stored X, Y, Z
    labels[1:3, 1:4, 2] = 2
    data = nib.Nifti1Image(labels, np.eye(4)).to_bytes()
    mask, t = uploads.read_ground_truth(data, "lab.nii", (8, 10), vol, 2)
    assert mask.sum() == 6 and t.max() == 2
    with pytest.raises(InputFileError, match="has 3 slices of 10x8 but the volume has 2"):
        uploads.read_ground_truth(data, "lab.nii", (8, 10), Volume(np.zeros((2, 8, 10), np.float32), "raw"), 0)


def test_nifti_mask_bytes_of_a_slice():
    s = Slice(np.zeros((6, 7), np.float32), "hu", (0.8, 0.9), "one.nii")
    like = uploads.as_volume(s)
    assert like.voxels.shape == (1, 6, 7) and like.spacing == (1.0, 0.8, 0.9)
    mask = np.zeros((1, 6, 7), bool)
    mask[0, 2, 3] = True
    img = nib.Nifti1Image.from_bytes(gzip.decompress(uploads.nifti_mask_bytes(mask, like)))
    assert img.shape == (6, 7, 1) and np.asarray(img.dataobj)[2, 3, 0] == 1 and np.asarray(img.dataobj).sum() == 1
    assert np.allclose(np.diag(img.affine)[:3], [0.8, 0.9, 1.0])


class _Upload:
    """What Streamlit's UploadedFile offers the app (a private copy of the bytes, as a script gets it)."""

    def __init__(self, data: bytes, name: str = "scan.nii.gz", file_id: str = "f1"):
        self._data, self.name, self.file_id, self.type = bytes(bytearray(data)), name, file_id, "application/gzip"
        self.size = len(data)

    def getvalue(self) -> bytes:
        return self._data


def test_kept_upload_holds_the_given_bytes_without_a_copy():
    record = b"\x1f\x8b" + bytes(5000)                     # the server's own record of the upload
    up = _Upload(record)
    kept = uploads.KeptUpload.of(up, record)
    assert kept.getvalue() is record and up.getvalue() is not record
    assert (kept.name, kept.file_id, kept.size, kept.type) == ("scan.nii.gz", "f1", 5002, "application/gzip")
    assert uploads.KeptUpload.of(kept) is kept
    # Without the record the upload's own bytes are kept (and still no further copy).
    assert uploads.KeptUpload.of(up).getvalue() is up.getvalue()
