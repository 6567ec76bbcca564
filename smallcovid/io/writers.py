"""Write masks atomically: PNG slices and NIfTI volumes in the geometry of the scan they label.

Every writer goes through :func:`~smallcovid.core.fsutil.atomic_write_bytes`, so a reader
never sees a half-written file and a failed write leaves the old one in place.
"""

from __future__ import annotations

import gzip
import os
from io import BytesIO

import numpy as np

from smallcovid.core.errors import SmallCovidError
from smallcovid.core.fsutil import atomic_write_bytes
from smallcovid.io.readers import Volume


def write_png(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write a (H, W) uint8 array (or (H, W, 3|4) uint8 colour) as PNG, atomically."""
    from PIL import Image

    arr = np.asarray(array)
    if arr.dtype != np.uint8 or not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] in (3, 4))):
        raise SmallCovidError(f"{os.fspath(path)}: write_png needs a (H, W) uint8 array, got {arr.dtype} {arr.shape}")
    buf = BytesIO()
    Image.fromarray(np.ascontiguousarray(arr)).save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())


def write_nifti_mask(path: str | os.PathLike, mask: np.ndarray, like: Volume) -> None:
    """Write a (D, H, W) label/mask volume in the geometry of ``like``, atomically.

    Gzip-compressed unless ``path`` ends in ``.nii``; see :func:`nifti_mask_data`.
    """
    atomic_write_bytes(path, nifti_mask_data(mask, like, gz=not os.fspath(path).endswith(".nii"), name=os.fspath(path)))


#: gzip level of written masks: 1 is ~10x faster than nibabel's default 9 and, on 0/1/2 label
#: volumes, barely larger.
NIFTI_GZIP_LEVEL = 1


def nifti_mask_data(mask: np.ndarray, like: Volume, gz: bool = True, name: str = "mask") -> bytes:
    """A (D, H, W) label/mask volume as NIfTI bytes in the geometry of ``like``, built in memory.

    The array is stored as uint8 in NIfTI's (X, Y, Z) order (inverse of :func:`read_scan`)
    with ``like.affine`` (or a diagonal affine from ``like.spacing``, identity when
    unknown); gzip-compressed (level :data:`NIFTI_GZIP_LEVEL`, no time stamp, so equal
    masks give equal bytes) when ``gz``. Written slice by slice: no full-size copy.
    """
    import nibabel

    arr = np.asarray(mask)
    if arr.shape != like.voxels.shape:
        raise SmallCovidError(f"{name}: mask shape {arr.shape} differs from the volume's {like.voxels.shape}")
    if arr.dtype != np.uint8 and arr.size and (arr.min() < 0 or arr.max() > 255):
        raise SmallCovidError(f"{name}: mask values must lie in 0..255")
    if like.affine is not None:
        affine = np.asarray(like.affine, dtype=np.float64)
    else:
        s = like.spacing or (1.0, 1.0, 1.0)
        affine = np.diag([s[1], s[2], s[0], 1.0])
    data = arr.astype(np.uint8, copy=False).transpose(1, 2, 0)  # (row, col, slice)
    p = tuple(like.stored_order)
    if p != (2, 0, 1):  # back to the axis order of the file the volume came from
        q = (p[1], p[2], p[0])
        stored_affine = affine.copy()
        stored_affine[:, list(q)] = affine[:, :3]
        data, affine = data.transpose(np.argsort(q)), stored_affine
    img = nibabel.Nifti1Image(data, affine)
    img.set_data_dtype(np.uint8)
    buf = BytesIO()
    if gz:
        with gzip.GzipFile(fileobj=buf, mode="wb", compresslevel=NIFTI_GZIP_LEVEL, mtime=0) as fh:
            img.to_stream(fh)
    else:
        img.to_stream(buf)
    return buf.getvalue()
