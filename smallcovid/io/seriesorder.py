"""The order and spacing of a DICOM series' slices, from their headers.

Slices are sorted by ImagePositionPatient projected on the slice normal, else by
InstanceNumber (then the geometry is unknown); the step between slices is the median
distance along the normal, in the direction from the first slice to the last, so a gantry
tilt is kept as shear. See :mod:`smallcovid.io.series` for the conventions.
"""

from __future__ import annotations

import logging
from typing import NamedTuple

import numpy as np

from smallcovid.core.errors import InputFileError

log = logging.getLogger(__name__)

#: Relative spread of neighbour distances above which a warning is logged.
SPACING_TOLERANCE = 0.10


def floats(value: object, n: int) -> np.ndarray | None:
    """``value`` (a DICOM multi-value) as ``n`` finite float64s, else None."""
    try:
        arr = np.array([float(v) for v in value], dtype=np.float64)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        return None
    return arr if arr.shape == (n,) and np.isfinite(arr).all() else None


class SliceOrder(NamedTuple):
    """Slices in voxel order and how that order was found."""

    headers: list  # series headers (``.name``, ``.uid``, ``.ds``) in voxel order
    pos: np.ndarray | None  # (D, 3) ImagePositionPatient (LPS mm), None when unknown
    how: str  # "position", "instance" or "single"
    z: tuple[float, ...]  # positions along the normal, () when unknown


def order_slices(headers: list, normal: np.ndarray | None) -> SliceOrder:
    """Series headers (``.name``, ``.uid``, ``.ds``: pydicom header) sorted along the unit slice
    ``normal`` (with projected positions), else by InstanceNumber.

    Raises:
        InputFileError: two slices at one position, or no positions and no unique InstanceNumbers.
    """
    uid = headers[0].uid
    pos = [floats(h.ds.get("ImagePositionPatient"), 3) for h in headers]
    if normal is not None and all(p is not None for p in pos):
        proj = np.array([float(p @ normal) for p in pos])  # type: ignore[operator]
        idx = np.argsort(proj, kind="stable")
        gaps = np.diff(proj[idx])
        if gaps.size and gaps.min() < 1e-3:
            i = int(np.argmin(gaps))
            raise InputFileError(headers[idx[i + 1]].name, f"lies at the same position ({proj[idx[i]]:g} mm) as "
                                 f"{headers[idx[i]].name}; series {uid} seems to hold several acquisitions")
        how = "single" if len(headers) == 1 else "position"
        return SliceOrder([headers[i] for i in idx], np.array([pos[i] for i in idx]), how,
                      tuple(float(proj[i]) for i in idx))
    if len(headers) == 1:
        return SliceOrder(headers, None, "single", ())
    nums = [floats([h.ds.get("InstanceNumber")], 1) for h in headers]
    if any(n is None for n in nums) or len({float(n[0]) for n in nums}) != len(nums):  # type: ignore[index]
        raise InputFileError(headers[0].name, f"series {uid} lacks ImagePositionPatient/ImageOrientationPatient and "
                                              "unique InstanceNumbers, so its slices cannot be ordered")
    log.warning("series %s: slice positions missing; ordered by InstanceNumber, geometry unknown", uid)
    order = np.argsort([float(n[0]) for n in nums], kind="stable")  # type: ignore[index]
    return SliceOrder([headers[i] for i in order], None, "instance", ())


def slice_step(headers: list, pos: np.ndarray | None, normal: np.ndarray | None) -> np.ndarray | None:
    """World-space (LPS mm) vector from one slice to the next; median spacing along the normal."""
    if pos is not None and normal is not None and len(pos) > 1:
        gaps = np.diff(pos @ normal)
        median = float(np.median(gaps))
        if float(np.abs(gaps - median).max()) > SPACING_TOLERANCE * median:
            log.warning("%s: slice spacing varies from %.3g to %.3g mm (missing slices?); using the median %.3g mm",
                        headers[0].name, gaps.min(), gaps.max(), median)
        direction = pos[-1] - pos[0]  # keeps gantry tilt (shear); scaled so its normal component is the median
        return direction / float(direction @ normal) * median
    ds = headers[0].ds
    thick = floats([ds.get("SpacingBetweenSlices") or ds.get("SliceThickness")], 1)  # type: ignore[union-attr]
    if thick is None or thick[0] <= 0:
        return None
    return (normal if normal is not None else np.array([0.0, 0.0, 1.0])) * float(thick[0])
