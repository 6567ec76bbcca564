"""Read a DICOM series (one file per slice) as one :class:`~smallcovid.io.readers.Volume`.

Files are grouped by ``SeriesInstanceUID`` from their headers (read with
``stop_before_pixels=True``), so slices of different series are never mixed.
Pixels are decoded per file by :func:`smallcovid.io.decoders.decode_dicom`, which
applies that file's RescaleSlope / RescaleIntercept (HU for CT).

Voxel order: ``voxels[k, r, c]`` is row ``r``, column ``c`` of slice ``k`` exactly as
stored in the DICOM file (no flip or rotation). Slices are sorted by
ImagePositionPatient projected on the slice normal ``n = row cosine x column cosine``,
ascending (for a standard axial series ``n`` points to the head, so slice 0 is the
lowest, feet-most slice). When any slice lacks a position or orientation the order
falls back to InstanceNumber and the volume has no affine. How the slices were ordered is
kept on the volume (:attr:`SeriesVolume.order`, :attr:`SeriesVolume.z_mm`).

Names: :func:`smallcovid.io.seriesnames.series_stem` names a series' outputs after its
folder, its SeriesDescription or a hash of its SeriesInstanceUID (the command-line contract).

Geometry: ``spacing = (slice mm, row mm, col mm)`` with row/col mm from PixelSpacing and
slice mm the median distance between neighbouring slice planes (SpacingBetweenSlices or
SliceThickness for a single slice); ``None`` when any of the three is unknown.
``affine`` maps NIfTI indices ``(r, c, k)`` (the array that
:func:`~smallcovid.io.writers.nifti_mask_data` writes, ``data[:, :, k] == voxels[k]``) to
RAS+ mm, i.e. DICOM's LPS with x and y negated, as nibabel and dcm2niix do, so an exported
mask overlays the series in a NIfTI viewer.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections import Counter
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import NamedTuple, Union

import numpy as np

from smallcovid.core.errors import InputFileError
from smallcovid.io import decoders as _d
from smallcovid.io import validate as _v
from smallcovid.io.readers import Volume
from smallcovid.io.seriesnames import common_description, series_stem, unique_stem
from smallcovid.io.seriesorder import floats, order_slices, slice_step

log = logging.getLogger(__name__)

#: A file path, or ``(name, bytes)`` for an upload.
Source = Union[str, os.PathLike, tuple[str, bytes]]

_DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


@dataclass(frozen=True, eq=False)
class SeriesVolume(Volume):
    """A :class:`Volume` read from a DICOM series, plus where it came from.

    Attributes:
        series_uid: the SeriesInstanceUID shared by all slices.
        files: file names in voxel order (``files[k]`` holds ``voxels[k]``).
        description: the slices' SeriesDescription (0008,103E), ``""`` when none.
        order: how the slices were ordered: ``"position"`` (ImagePositionPatient along
            the slice normal), ``"instance"`` (InstanceNumber, positions unknown),
            ``"single"`` (one file), ``""`` when unknown (not read from files).
        z_mm: each slice's position along the slice normal in mm (LPS), in voxel order;
            empty when unknown.
    """

    series_uid: str = ""
    files: tuple[str, ...] = ()
    description: str = ""
    order: str = ""
    z_mm: tuple[float, ...] = ()


class _Header(NamedTuple):
    source: Source
    name: str
    uid: str
    ds: object  # pydicom Dataset without pixel data


def _read(source: Source) -> tuple[bytes, str]:
    if isinstance(source, tuple):
        if len(source) != 2 or not isinstance(source[1], (bytes, bytearray, memoryview)):
            raise InputFileError(repr(source)[:60], "is not a file path or a (name, bytes) pair")
        return _v.read_source(source[1], str(source[0]))
    return _v.read_source(source, None)


def _read_headers(sources: list[Source], skip_other: bool = False) -> list[_Header]:
    """Headers of ``sources``; non-DICOM files raise, or are skipped when ``skip_other``."""
    import pydicom

    out: list[_Header] = []
    for source in sources:
        if skip_other and not isinstance(source, tuple) and os.path.getsize(source) < 132:
            log.info("%s: skipped (too small to be a DICOM file)", os.fspath(source))
            continue  # empty or tiny files cannot hold the DICOM preamble + "DICM"
        data, name = _read(source)
        if _v.sniff(data) != "dicom":
            if skip_other:
                log.info("%s: skipped (not a DICOM file)", name)
                continue
            raise _v.unsupported(data, name, "DICOM")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ds = pydicom.dcmread(BytesIO(data), stop_before_pixels=True)
                sop = str(getattr(getattr(ds, "file_meta", None), "MediaStorageSOPClassUID", "") or "")
                uid = str(ds.get("SeriesInstanceUID", "") or "").strip()
        except Exception as exc:
            raise InputFileError(name, f"is truncated or corrupt DICOM data ({_v.one_line(exc)})") from exc
        if not uid or sop == _DICOMDIR_SOP_CLASS:
            what = "is a DICOMDIR index" if sop == _DICOMDIR_SOP_CLASS else "has no SeriesInstanceUID"
            if skip_other:
                log.info("%s: skipped (%s, not an image slice)", name, what)
                continue
            raise InputFileError(name, f"{what}; expected a CT image slice of a series")
        out.append(_Header(source, name, uid, ds))
    return out


def _group(headers: list[_Header]) -> dict[str, list[_Header]]:
    groups: dict[str, list[_Header]] = {}
    for h in headers:
        groups.setdefault(h.uid, []).append(h)
    return groups


def group_series(sources: list[Source]) -> dict[str, list[Source]]:
    """Group DICOM files by SeriesInstanceUID (headers only; no pixels are decoded).

    Args:
        sources: file paths and/or ``(name, bytes)`` pairs.

    Returns:
        ``{series_uid: [source, ...]}`` with each list in the order given, series in order
        of first appearance; pass one list to :func:`read_series`.

    Raises:
        InputFileError: a file is missing, empty, too large, not DICOM (by content),
            corrupt, or has no SeriesInstanceUID (e.g. a DICOMDIR).
    """
    return {uid: [h.source for h in hs] for uid, hs in _group(_read_headers(list(sources))).items()}


def series_descriptions(sources: list[Source]) -> dict[str, str]:
    """``{series_uid: SeriesDescription}`` of DICOM files (headers only), as :func:`group_series`.

    Each series' description is :func:`common_description` of its files' values.
    """
    return {uid: _description(hs) for uid, hs in _group(_read_headers(list(sources))).items()}


def _description(headers: list[_Header]) -> str:
    return common_description(str(h.ds.get("SeriesDescription", "") or "") for h in headers)


def read_series(sources: list[Source], name: str | None = None) -> SeriesVolume:
    """Read the files of one DICOM series as a (D, H, W) float32 volume.

    Args:
        sources: file paths and/or ``(name, bytes)`` pairs, in any order.
        name: name for messages and ``Volume.source`` (default: :func:`series_stem` of the
            SeriesDescription or UID).

    Returns:
        A :class:`SeriesVolume` (a :class:`Volume`) in HU for CT; voxel order, spacing
        and affine as in the module docstring. One file gives a volume of depth 1.

    Raises:
        InputFileError: as :func:`group_series`; files of several series; slices
            differing in size, orientation or pixel spacing; duplicate positions;
            no way to order the slices; more voxels than ``validate.MAX_VOXELS``.
    """
    headers = _read_headers(list(sources))
    if not headers:
        raise InputFileError(name or "series", "has no files; expected one or more DICOM slices")
    groups = _group(headers)
    if len(groups) > 1:
        first = [hs[0].name for hs in groups.values()]
        raise InputFileError(name or first[0], f"mixes {len(groups)} DICOM series ({', '.join(first[:4])} differ "
                                               "in SeriesInstanceUID); read each series separately (group_series)")
    return _assemble(headers, name)


def read_series_folder(folder: str | os.PathLike, recursive: bool = False) -> dict[str, SeriesVolume]:
    """Read every DICOM series in ``folder``; returns ``{stem: volume}`` (see :func:`series_stem`).

    Files that are not DICOM by content (``.txt``, ``.DS_Store``, ...), DICOMDIR indexes and
    DICOM files without a SeriesInstanceUID are skipped with a log message; hidden files
    (``.name``) are ignored. A corrupt DICOM file is an error, not a silently missing slice.
    Sub-folders are searched only when ``recursive``. All volumes are held in memory.
    """
    root = Path(folder)
    if not root.is_dir():
        raise InputFileError(root, "is not a folder" if root.exists() else "does not exist")
    paths = sorted(p for p in (root.rglob("*") if recursive else root.iterdir())
                   if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts))
    groups = _group(_read_headers(paths, skip_other=True))
    if not groups:
        raise InputFileError(root, "contains no DICOM image slices")
    out: dict[str, SeriesVolume] = {}
    for uid, hs in groups.items():
        stem = unique_stem(series_stem(uid, root if len(groups) == 1 else None, description=_description(hs)), out)
        out[stem] = _assemble(hs, stem)
    return out


# ------------------------------------------------------------------ assembly

def _common(headers: list[_Header], key, what: str, uid: str, equal) -> object:
    """The majority value of ``key(ds)``; the first file that differs raises."""
    values = [key(h.ds) for h in headers]
    counts = Counter(repr(v) for v in values)
    ref = next(v for v in values if repr(v) == counts.most_common(1)[0][0])
    for h, v in zip(headers, values):
        if not equal(v, ref):
            raise InputFileError(h.name, f"has {what} {_show(v)} but the other slices of series {uid} have "
                                         f"{_show(ref)}; all slices of a series must match")
    return ref


def _show(v: object) -> str:
    if isinstance(v, tuple) and len(v) == 2 and all(isinstance(x, int) for x in v):
        return f"{v[1]}x{v[0]} pixels"
    return "none" if v is None else "[" + ", ".join(f"{x:g}" for x in v) + "]"  # type: ignore[union-attr]


def _close(a, b, tol: float) -> bool:
    return (a is None) == (b is None) and (a is None or np.allclose(a, b, rtol=tol, atol=tol))


def _assemble(headers: list[_Header], name: str | None) -> SeriesVolume:
    uid = headers[0].uid
    description = _description(headers)
    name = name or series_stem(uid, description=description)
    size = _common(headers, lambda ds: (int(ds.get("Rows") or 0), int(ds.get("Columns") or 0)), "size", uid,
                   lambda a, b: a == b)
    rows, cols = size  # type: ignore[misc]
    _v.check_plane(rows, cols, headers[0].name)
    _v.check_voxels((len(headers), rows, cols), name)
    iop = _common(headers, lambda ds: floats(ds.get("ImageOrientationPatient"), 6), "orientation", uid,
                  lambda a, b: _close(a, b, 1e-3))
    pixel = _common(headers, lambda ds: floats(ds.get("PixelSpacing"), 2), "pixel spacing", uid,
                    lambda a, b: _close(a, b, 1e-3))
    normal = None
    if iop is not None:
        normal = np.cross(iop[:3], iop[3:])  # type: ignore[index]
        norm = float(np.linalg.norm(normal))
        normal = normal / norm if norm > 1e-3 else None
    order = order_slices(headers, normal)
    headers, pos = order.headers, order.pos
    step = slice_step(headers, pos, normal)
    # Whole HU (slope 1, an integral intercept: most CT) are kept as int16, half the memory of
    # float32 (see Volume); the first slice that is not whole turns the stack into float32.
    voxels = np.empty((len(headers), rows, cols), dtype=np.int16)
    units = "hu"
    for k, h in enumerate(headers):
        data, _ = _read(h.source)
        dec = _d.decode_dicom(data, h.name)
        if dec.array.shape != (rows, cols):
            raise InputFileError(h.name, f"holds pixel data of shape {dec.array.shape}, expected one {cols}x{rows} "
                                         "slice (multi-frame files cannot be part of a series)")
        if voxels.dtype == np.int16 and not _whole_int16(dec.array):
            voxels = voxels.astype(np.float32)
        voxels[k] = dec.array
        units = units if dec.units == "hu" else "raw"
    if voxels.dtype != np.int16 or units != "hu":
        voxels = _v.clean_finite(voxels, name)
    ok = pixel is not None and step is not None and float(np.linalg.norm(step)) > 0
    spacing = (float(step @ normal) if normal is not None and pos is not None else float(np.linalg.norm(step)),
               float(pixel[0]), float(pixel[1])) if ok else None  # type: ignore[index,operator]
    affine = None
    if ok and pos is not None and normal is not None:
        lps = np.eye(4)
        lps[:3, 0] = np.asarray(iop[3:]) * pixel[0]  # type: ignore[index]  rows advance along the column cosine
        lps[:3, 1] = np.asarray(iop[:3]) * pixel[1]  # type: ignore[index]  columns along the row cosine
        lps[:3, 2] = step  # type: ignore[assignment]
        lps[:3, 3] = pos[0]
        affine = _LPS_TO_RAS @ lps
    if spacing is None:
        log.info("%s: pixel or slice spacing unknown; volume has no spacing", name)
    return SeriesVolume(voxels, units, spacing, affine, name, series_uid=uid,  # type: ignore[arg-type]
                        files=tuple(h.name for h in headers), description=description, order=order.how,
                        z_mm=order.z)


def _whole_int16(a: np.ndarray) -> bool:
    """Whether every value of ``a`` is a whole number in int16's range (finite)."""
    if a.size == 0:
        return True
    lo, hi = float(np.min(a)), float(np.max(a))
    if not (np.isfinite(lo) and np.isfinite(hi) and -32768 <= lo and hi <= 32767):
        return False
    return a.dtype.kind in "iu" or bool(np.array_equal(a, np.rint(a)))
