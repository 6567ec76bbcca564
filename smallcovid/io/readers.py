"""Read CT slices, volumes and masks from user files (writing masks: :mod:`smallcovid.io.writers`).

The reader is chosen from the file's content (magic bytes), never from its
extension, so a PNG named ``scan.jpg`` loads fine and an HTML page named
``scan.png`` gets a clear error. Every problem with user input raises
:class:`~smallcovid.core.errors.InputFileError` ("<name>: <one sentence>"); raw
Pillow / pydicom / nibabel / zlib exceptions never escape.

Voxel order of NIfTI volumes: ``voxels[k] == data[:, :, k]`` for the array
``data`` as stored (shape X, Y, Z), with no rotation or flip. The MedSeg release
(``tr_im.nii.gz`` / ``tr_mask.nii.gz``) and the PNG/JPEG slices derived from it
use exactly this order, so masks and images line up. Sizes in messages are
written width x height (columns x rows), like image viewers do.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal

import numpy as np

from smallcovid.io import decoders as _d
from smallcovid.io import orient as _orient
from smallcovid.io import validate as _v
from smallcovid.core.errors import InputFileError, SmallCovidError

Units = Literal["hu", "display", "raw"]
_UNITS = ("hu", "display", "raw")

#: A NIfTI whose minimum is at or below this is taken to be CT in Hounsfield units.
HU_MINIMUM_BELOW = -500.0
_IMAGE_FORMATS = {"png": "PNG", "jpeg": "JPEG", "tiff": "TIFF"}


@dataclass(frozen=True, eq=False)
class Slice:
    """One 2D slice.

    Attributes:
        pixels: (H, W) float32 intensities.
        units: ``"hu"`` Hounsfield units; ``"display"`` already windowed, in [0, 1]
            (8-bit PNG/JPEG divided by 255); ``"raw"`` other intensities (16-bit or
            float images, NIfTI without an HU-like range).
        spacing: (row mm, col mm) when known.
        source: file name, for messages.
        axes: patient directions of increasing row and column index (``("P", "L")`` for a
            standard axial DICOM; see :mod:`smallcovid.io.orient`), None when the file does
            not say (PNG/JPEG: taken to be in the training orientation, ``("L", "P")``).
    """

    pixels: np.ndarray
    units: Units
    spacing: tuple[float, float] | None = None
    source: str = "slice"
    axes: tuple[str, str] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "pixels", np.asarray(self.pixels, dtype=np.float32))
        _check_fields(self, 2, self.pixels)

    @property
    def shape(self) -> tuple[int, int]:
        """(H, W) in pixels."""
        return self.pixels.shape  # type: ignore[return-value]


@dataclass(frozen=True, eq=False)
class Volume:
    """A stack of D axial slices.

    Attributes:
        voxels: (D, H, W) float32, or int16 for HU given as int16 (whole HU, as most CT files
            store them); ``voxels[k]`` is axial slice k (:meth:`slice` gives float32).
        units: as for :class:`Slice`.
        spacing: (slice mm, row mm, col mm) when known.
        affine: 4x4 RAS affine of the NIfTI-order array ``(row, col, slice)`` (``data[:, :, k]
            == voxels[k]``), or None when unknown.
        source: file name, for messages.
        stored_order: the permutation ``p`` with ``voxels == stored.transpose(p)`` (up to the
            dtype) for the array as stored in a NIfTI file whose head-feet axis is not its
            third one; ``(2, 0, 1)`` otherwise. Writers put masks back in the stored order.
        plane: in-plane orientation when no affine tells it (a single DICOM slice as a volume).
    """

    voxels: np.ndarray
    units: Units
    spacing: tuple[float, float, float] | None = None
    affine: np.ndarray | None = None
    source: str = "volume"
    stored_order: tuple[int, int, int] = (2, 0, 1)
    plane: tuple[str, str] | None = None

    def __post_init__(self) -> None:
        v = np.asarray(self.voxels)
        # Whole HU stored as int16 (most CT files) stay int16: half the memory of float32 for a
        # volume kept open in the app; every consumer converts a slice or a crop at a time.
        if not (v.dtype == np.int16 and self.units == "hu"):
            v = np.asarray(v, dtype=np.float32)
        object.__setattr__(self, "voxels", v)
        _check_fields(self, 3, self.voxels)
        if self.affine is not None and np.shape(self.affine) != (4, 4):
            raise SmallCovidError(f"{self.source}: affine must be 4x4, got shape {np.shape(self.affine)}")

    def __len__(self) -> int:
        return int(self.voxels.shape[0])

    @property
    def axes(self) -> tuple[str, str] | None:
        """Patient directions of increasing row and column index of each slice (see :class:`Slice`)."""
        if self.plane is not None:
            return self.plane
        return _orient.plane_from_affine(self.affine)

    def slice(self, index: int) -> Slice:
        """Axial slice ``index`` (0 <= index < len(self)) as a :class:`Slice` (a view)."""
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not 0 <= index < len(self):
            raise SmallCovidError(f"{self.source}: slice index {index!r} is out of range; "
                                  f"valid indices are 0 to {len(self) - 1}")
        spacing = None if self.spacing is None else (self.spacing[1], self.spacing[2])
        return Slice(self.voxels[int(index)], self.units, spacing, self.source, self.axes)


def _check_fields(obj: Slice | Volume, ndim: int, arr: np.ndarray) -> None:
    if arr.ndim != ndim:
        raise SmallCovidError(f"{obj.source}: {type(obj).__name__} needs a {ndim}D array, got shape {arr.shape}")
    if obj.units not in _UNITS:
        raise SmallCovidError(f"{obj.source}: units must be one of {', '.join(_UNITS)}, got {obj.units!r}")
    if obj.spacing is not None:
        spacing = tuple(float(s) for s in obj.spacing)
        if len(spacing) != ndim:
            raise SmallCovidError(f"{obj.source}: spacing needs {ndim} values, got {obj.spacing!r}")
        object.__setattr__(obj, "spacing", spacing)


# ------------------------------------------------------------------ readers

def _load(source: str | os.PathLike | bytes, name: str | None) -> tuple[str, bytes, str]:
    """Read, size-check and sniff; returns ``(kind, data, name)`` with gzip already undone."""
    data, name = _v.read_source(source, name)
    kind = _v.sniff(data)
    if kind == "gzip":
        data, kind = _v.gunzip_nifti(data, name), "nifti"
    if kind == "unknown":
        raise _v.unsupported(data, name)
    return kind, data, name


def read_scan(source: str | os.PathLike | bytes, name: str | None = None) -> Slice | Volume:
    """Read a PNG/JPEG/TIFF, DICOM or NIfTI (.nii/.nii.gz) scan from a path or bytes.

    Args:
        source: file path, or the raw bytes of an upload.
        name: name used in messages (default: the path's file name, or "upload").

    Returns:
        A :class:`Slice` for 2D data; a :class:`Volume` for 3D NIfTI (``voxels[k] ==
        data[:, :, k]``, spacing from the header zooms as (z, x, y)) or multi-frame
        DICOM. DICOM is in HU; NIfTI is "hu" when its minimum is <= -500, else "raw".
        Scattered NaN/Inf values are replaced by the finite minimum.

    Raises:
        InputFileError: the file is missing, empty, too large, truncated, not a
            supported format, has absurd dimensions or contains no finite values.
    """
    kind, data, name = _load(source, name)
    if kind in _IMAGE_FORMATS:
        dec = _d.decode_image(data, name, _IMAGE_FORMATS[kind])
    elif kind == "dicom":
        dec = _d.decode_dicom(data, name)
    else:
        dec = _d.decode_nifti(data, name)
    del data  # a volume's bytes: freed before its axial copy is made
    if kind == "nifti" and dec.array.ndim == 3:
        # Slices are cut across the head-feet axis, whichever axis of the file that is.
        order = _orient.axial_order(_orient.codes_from_affine(dec.affine))
        z, q = dec.spacing, (order[1], order[2], order[0])  # q: stored axis of each (row, col, slice) axis
        _v.check_plane(dec.array.shape[q[0]], dec.array.shape[q[1]], name)
        spacing = (z[order[0]], z[order[1]], z[order[2]])  # type: ignore[index]
        affine = None if dec.affine is None else np.column_stack([dec.affine[:, list(q)], dec.affine[:, 3]])
        stored = dec.array.transpose(q)
        dec = None
        if stored.dtype.kind in "biu":  # whole numbers are finite: no scan for NaN needed
            low = float(stored.min())
            # int16 HU stay int16 (see Volume): half the memory of a float32 copy
            arr = _axial(stored, dtype=np.int16 if stored.dtype == np.int16 else np.float32)
        else:
            arr = _v.clean_finite(_axial(stored), name)
            low = float(arr.min())
        del stored  # the stored-order array
        units = "hu" if low <= HU_MINIMUM_BELOW else "raw"
        return Volume(arr, units, spacing, affine, name, order)  # type: ignore[arg-type]
    arr = _v.clean_finite(dec.array, name)
    units = dec.units
    if kind == "nifti":
        units = "hu" if float(arr.min()) <= HU_MINIMUM_BELOW else "raw"
    if arr.ndim == 3:
        return Volume(arr, units, dec.spacing, None, name, plane=dec.axes)  # type: ignore[arg-type]
    axes = _orient.plane_from_affine(dec.affine) if kind == "nifti" else dec.axes
    return Slice(arr, units, dec.spacing, name, axes)  # type: ignore[arg-type]


def _axial(arr: np.ndarray, slab: int = 32, dtype=np.float32) -> np.ndarray:
    """NIfTI data (X, Y, Z) as stored -> (Z, X, Y) C-contiguous ``dtype`` with ``out[k] == arr[:, :, k]``.

    Cast and reordered ``slab`` slices at a time: no full-size temporary, ~5x faster than
    casting the whole array and then making the transpose contiguous, and few numpy calls
    (each takes the GIL back: slow while another thread holds it, e.g. ``import torch``
    during the CLI's read).
    """
    x, y, z = arr.shape
    out = np.empty((z, x, y), dtype)
    for k in range(0, z, slab):
        out[k:k + slab] = arr[:, :, k:k + slab].transpose(2, 0, 1)
    return out


# ------------------------------------------------------------------ masks and labels

def _label_image(source: str | os.PathLike | bytes, name: str | None,
                 shape: tuple[int, int] | None) -> tuple[np.ndarray, str, str]:
    kind, data, name = _load(source, name)
    if kind not in _IMAGE_FORMATS:
        raise InputFileError(name, f"is a {'DICOM' if kind == 'dicom' else 'NIfTI'} file; "
                                   "masks must be PNG or TIFF images")
    arr = _d.decode_image(data, name, _IMAGE_FORMATS[kind], labels=True).array
    if shape is not None and tuple(arr.shape) != tuple(shape):
        raise InputFileError(name, f"is {arr.shape[1]}x{arr.shape[0]} but its image is {shape[1]}x{shape[0]}")
    hint = " (JPEG compression changes pixel values; save masks as PNG)" if kind == "jpeg" else ""
    return arr, name, hint


def read_mask(source: str | os.PathLike | bytes, name: str | None = None,
              shape: tuple[int, int] | None = None) -> np.ndarray:
    """Binary lesion mask -> (H, W) bool. Values must be 0/255 or 0/1 (gray, or RGB with equal channels).

    ``shape`` is the (H, W) of the matching image; a different size is an error.
    """
    arr, name, hint = _label_image(source, name, shape)
    values = np.unique(arr)
    if set(values.tolist()) <= {0, 255} or set(values.tolist()) <= {0, 1}:
        return arr > 0
    raise InputFileError(name, f"has values {_v.format_values(values)}; a mask must contain only "
                               f"0 and 255 (or 0 and 1){hint}")


def read_classes(source: str | os.PathLike | bytes, name: str | None = None,
                 shape: tuple[int, int] | None = None) -> np.ndarray:
    """Lesion-type map -> (H, W) uint8: 0 background, 1 ground-glass, 2 consolidation (3 folds into 2)."""
    arr, name, hint = _label_image(source, name, shape)
    values = np.unique(arr)
    if not set(values.tolist()) <= {0, 1, 2, 3}:
        raise InputFileError(name, f"has values {_v.format_values(values)}; a lesion-type map must contain "
                                   f"only 0 (background), 1 (ground-glass) and 2 (consolidation){hint}")
    return np.where(arr == 3, 2, arr).astype(np.uint8)


def read_label_volume(source: str | os.PathLike | bytes, name: str | None = None) -> np.ndarray:
    """NIfTI label volume (e.g. MedSeg ``tr_mask.nii.gz``) -> (D, H, W) uint8 with values 0..3.

    Same voxel order as :class:`Volume` (``labels[k] == data[:, :, k]``); a 2D file gives D = 1.
    """
    kind, data, name = _load(source, name)
    if kind != "nifti":
        raise InputFileError(name, f"is not a NIfTI label volume (detected {kind.upper()} data)")
    arr = _d.decode_nifti(data, name).array
    if not np.isfinite(arr).all():
        raise InputFileError(name, "contains NaN or infinite values; labels must be whole numbers 0 to 3")
    values = np.unique(arr)
    if not set(values.tolist()) <= {0, 1, 2, 3}:
        raise InputFileError(name, f"has values {_v.format_values(values)}; labels must be 0 (background), "
                                   "1 (ground-glass), 2 (consolidation) or 3 (pleural effusion)")
    arr = arr.astype(np.uint8)
    return arr[None] if arr.ndim == 2 else np.ascontiguousarray(arr.transpose(2, 0, 1))
