"""Patient orientation of a slice's rows and columns, and the one orientation the models see.

Directions are nibabel-style letters in RAS terms: the letter says towards which side of
the patient an index *increases* (``"L"``: towards the patient's left, ``"P"``: towards
the back, ``"S"``: towards the head). A slice's orientation is the pair ``(row letter,
column letter)``: the direction in which the row index grows (down the image) and the
column index grows (across it).

The training slices (and every MedSeg NIfTI slice ``data[:, :, k]``) are ``("L", "P")``:
the patient's right at the top, the back at the right. That is the **canonical**
orientation: whatever the file, each slice reaches the lung finder and the models in it,
and every output goes back to the file's own orientation. A standard axial DICOM
(ImageOrientationPatient ``[1, 0, 0, 0, 1, 0]``) is ``("P", "L")``: its transpose.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

CANONICAL = ("L", "P")
_LETTERS = {("x", 1): "R", ("x", -1): "L", ("y", 1): "A", ("y", -1): "P", ("z", 1): "S", ("z", -1): "I"}
_OPPOSITE = {"L": "R", "R": "L", "A": "P", "P": "A", "S": "I", "I": "S"}
_AXIS = {"L": "x", "R": "x", "A": "y", "P": "y", "S": "z", "I": "z"}


def _letter_ras(vec: Sequence[float]) -> str | None:
    """The letter of a RAS direction vector's dominant axis, None when no axis dominates."""
    v = np.asarray(vec, dtype=np.float64)
    if v.shape != (3,) or not np.isfinite(v).all() or not np.any(v):
        return None
    a = np.abs(v)
    i = int(np.argmax(a))
    if a[i] < 0.6 * float(np.linalg.norm(v)):  # oblique beyond ~53 degrees: no clear axis
        return None
    return _LETTERS[("xyz"[i], 1 if v[i] > 0 else -1)]


def codes_from_iop(iop: Sequence[float] | None) -> tuple[str, str] | None:
    """``(row letter, column letter)`` from a DICOM ImageOrientationPatient (LPS cosines).

    IOP's first triplet is the direction of increasing column index, its second that of
    increasing row index. Returns None when missing or not a clear axial-plane geometry.
    """
    try:
        v = np.asarray([float(x) for x in iop], dtype=np.float64)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        return None
    if v.shape != (6,):
        return None
    lps_to_ras = np.array([-1.0, -1.0, 1.0])
    col, row = _letter_ras(v[:3] * lps_to_ras), _letter_ras(v[3:] * lps_to_ras)
    return (row, col) if row and col else None


def codes_from_affine(affine: np.ndarray | None) -> tuple[str, str, str] | None:
    """Letters of the three voxel axes of a NIfTI-style (RAS) 4x4 affine, None when unknown or oblique."""
    if affine is None:
        return None
    a = np.asarray(affine, dtype=np.float64)
    if a.shape != (4, 4) or not np.isfinite(a).all():
        return None
    letters = tuple(_letter_ras(a[:3, i]) for i in range(3))
    if None in letters or len({_AXIS[x] for x in letters}) != 3:  # type: ignore[index]
        return None
    return letters  # type: ignore[return-value]


def plane_from_affine(affine: np.ndarray | None) -> tuple[str, str] | None:
    """In-plane ``(row letter, column letter)`` of the first two voxel axes of a RAS affine,
    None when unknown, oblique or not an axial plane."""
    letters = codes_from_affine(affine)
    return None if letters is None else in_plane(letters[:2])


def in_plane(codes: tuple[str, str] | None) -> tuple[str, str] | None:
    """``codes`` when both are in the axial plane (L/R and A/P, one each), else None."""
    if codes is None or len(codes) != 2:
        return None
    axes = {_AXIS.get(c) for c in codes}
    return tuple(codes) if axes == {"x", "y"} else None  # type: ignore[return-value]


def _plan(codes: tuple[str, str]) -> tuple[bool, bool, bool]:
    """(transpose, flip rows, flip columns) taking ``codes`` to :data:`CANONICAL`; the flips
    apply after the transpose."""
    transpose = _AXIS[codes[0]] != "x"
    r, c = (codes[1], codes[0]) if transpose else codes
    return transpose, r != CANONICAL[0], c != CANONICAL[1]


def to_canonical(a: np.ndarray, codes: tuple[str, str] | None) -> np.ndarray:
    """``a`` (..., H, W) in orientation ``codes`` -> a view in :data:`CANONICAL` (..., H', W').

    ``codes`` None (unknown, e.g. a PNG) or not axial returns ``a`` unchanged: such images
    are taken to be in the training orientation already.
    """
    codes = in_plane(codes)
    if codes is None:
        return a
    t, fr, fc = _plan(codes)
    out = np.swapaxes(a, -1, -2) if t else a
    if fr:
        out = out[..., ::-1, :]
    if fc:
        out = out[..., :, ::-1]
    return out


def from_canonical(a: np.ndarray, codes: tuple[str, str] | None) -> np.ndarray:
    """Inverse of :func:`to_canonical`: (..., H', W') canonical -> a view in orientation ``codes``."""
    codes = in_plane(codes)
    if codes is None:
        return a
    t, fr, fc = _plan(codes)
    out = a
    if fc:
        out = out[..., :, ::-1]
    if fr:
        out = out[..., ::-1, :]
    return np.swapaxes(out, -1, -2) if t else out


def transposes(codes: tuple[str, str] | None) -> bool:
    """Whether :func:`to_canonical` swaps rows and columns for ``codes`` (so (row, col)
    sizes such as the pixel spacing swap too)."""
    codes = in_plane(codes)
    return codes is not None and _plan(codes)[0]


def axial_order(letters: tuple[str, str, str] | None) -> tuple[int, int, int]:
    """Permutation ``p`` of stored NIfTI axes with ``data.transpose(p)`` = (slice, row, column)
    and the slice axis the head-feet one; ``(2, 0, 1)`` (as stored) when unknown."""
    if letters is None:
        return (2, 0, 1)
    z = next(i for i, x in enumerate(letters) if _AXIS[x] == "z")
    rest = [i for i in range(3) if i != z]
    return (z, rest[0], rest[1])
