"""DICOM series slices built from pydicom's CT_small.dcm fixture (shared by the series and app tests)."""

from __future__ import annotations

import numpy as np
import pydicom
from pydicom.data import get_testdata_file

FIXTURE = get_testdata_file("CT_small.dcm")
UID_A = "1.2.826.0.1.3680043.8.498.11111111"
UID_B = "1.2.826.0.1.3680043.8.498.22222222"
STEP = 2.5


def series_slice(k: int, uid: str = UID_A, z0: float = -75.7, step: float = STEP, offset: int = 10,
                 **changes) -> pydicom.Dataset:
    """Slice k of a series: z = z0 + k * step, stored pixels = fixture + offset * k.

    ``changes`` set (or, with None, delete) further DICOM attributes.
    """
    ds = pydicom.dcmread(FIXTURE)
    ds.SeriesInstanceUID = uid
    ds.SOPInstanceUID = f"{uid}.{k + 1}"
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.InstanceNumber = k + 1
    x, y, _ = (float(v) for v in ds.ImagePositionPatient)
    ds.ImagePositionPatient = [x, y, z0 + k * step]
    ds.SliceLocation = z0 + k * step
    ds.PixelData = (ds.pixel_array.astype(np.int16) + offset * k).tobytes()
    for key, value in changes.items():
        if value is None:
            delattr(ds, key)
        else:
            setattr(ds, key, value)
    return ds
