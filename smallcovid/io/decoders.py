"""Format decoders behind :mod:`smallcovid.io`: Pillow images, DICOM, NIfTI.

Each decoder takes the bytes of a file whose format was already sniffed and
returns plain arrays and metadata. All library calls run inside one guarded
block per decoder, so any Pillow / pydicom / nibabel exception comes out as
:class:`InputFileError` with one sentence (the original is chained).
"""

from __future__ import annotations

import struct
import warnings
from io import BytesIO
from typing import NamedTuple

import numpy as np

from smallcovid.io import validate as _v
from smallcovid.io.orient import codes_from_iop
from smallcovid.core.errors import InputFileError


#: Bytes that hold a NIfTI-1 (348 + 4) or NIfTI-2 (540 + 4) header.
_NIFTI_HEADER_BYTES = 544


class Decoded(NamedTuple):
    """Result of a decoder.

    array: (H, W) or (D, H, W) for DICOM, or (X, Y[, Z]) as stored for NIfTI.
    units: "hu", "display" or "raw". spacing: mm per axis of ``array`` or None.
    affine: 4x4 NIfTI affine or None. axes: DICOM in-plane orientation letters or None.
    """

    array: np.ndarray
    units: str
    spacing: tuple[float, ...] | None = None
    affine: np.ndarray | None = None
    axes: tuple[str, str] | None = None


def decode_image(data: bytes, name: str, fmt: str, labels: bool = False) -> Decoded:
    """Decode the first frame of a PNG/JPEG/TIFF (``fmt``) with Pillow.

    ``labels=False``: 8-bit gray/colour -> gray float32 / 255 ("display");
    16-bit, int32 and float modes keep their values as float32 ("raw").
    ``labels=True``: values kept as integers; colour only when R == G == B.
    Sizes are checked from the header before any pixel is decoded.
    """
    from PIL import Image

    if fmt == "PNG" and data[12:16] == b"IHDR" and len(data) >= 24:
        width, height = struct.unpack(">II", data[16:24])
        _v.check_plane(height, width, name)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. "Corrupt EXIF data": noise, not a failure
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(BytesIO(data), formats=[fmt])
            _v.check_plane(im.height, im.width, name)
            im.load()
            if im.mode.startswith("I") or im.mode == "F":
                arr = np.asarray(im)
                return Decoded(arr if labels else arr.astype(np.float32), "raw")
            if not labels:
                return Decoded(np.asarray(im.convert("L"), dtype=np.float32) / np.float32(255), "display")
            if im.mode in ("1", "L"):
                return Decoded(np.asarray(im, dtype=np.uint8), "raw")
            rgb = np.asarray(im.convert("RGB"))
    except InputFileError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InputFileError(name, f"has more pixels than the safe decoding limit of {Image.MAX_IMAGE_PIXELS} "
                                   "(possible decompression bomb)") from exc
    except MemoryError as exc:
        raise InputFileError(name, "is too large to decode in the available memory") from exc
    except Exception as exc:
        raise InputFileError(name, f"is truncated or corrupt {fmt} data ({_v.one_line(exc)})") from exc
    if not ((rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all()):
        raise InputFileError(name, "has coloured pixels (red, green and blue differ); a mask must be grayscale")
    return Decoded(rgb[..., 0], "raw")


def decode_dicom(data: bytes, name: str) -> Decoded:
    """DICOM -> float32 (H, W), or (F, H, W) for multi-frame, with slope/intercept applied.

    Units are "hu" for CT (or no Modality given), "raw" for other modalities.
    Spacing is (row mm, col mm), or (slice mm, row mm, col mm) for multi-frame
    (slice from SpacingBetweenSlices / SliceThickness, else 1.0).
    """
    import pydicom

    compressed = False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(BytesIO(data))
            if not any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
                raise InputFileError(name, "is a DICOM file without pixel data (for example a report)")
            frames, rows, cols = int(ds.get("NumberOfFrames", 1) or 1), int(ds.Rows), int(ds.Columns)
            _v.check_plane(rows, cols, name)
            _v.check_voxels((frames, rows, cols), name)
            if int(ds.get("SamplesPerPixel", 1) or 1) != 1:
                raise InputFileError(name, f"is a colour DICOM ({ds.get('PhotometricInterpretation', '?')}); "
                                           "only grayscale CT is supported")
            ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
            compressed = bool(ts is not None and ts.is_compressed)
            arr = np.asarray(ds.pixel_array, dtype=np.float32)
            slope = float(ds.get("RescaleSlope", 1) or 1)
            intercept = float(ds.get("RescaleIntercept", 0) or 0)
            spacing = _positive(ds.get("PixelSpacing"), 2)
            thickness = _positive([ds.get("SpacingBetweenSlices") or ds.get("SliceThickness")], 1)
            modality = str(ds.get("Modality", "") or "").upper()
            axes = codes_from_iop(ds.get("ImageOrientationPatient"))
    except InputFileError:
        raise
    except MemoryError as exc:
        raise InputFileError(name, "is too large to decode in the available memory") from exc
    except Exception as exc:
        what = ("uses compressed pixel data that could not be decoded" if compressed
                else "is truncated or corrupt DICOM data")
        raise InputFileError(name, f"{what} ({_v.one_line(exc)})") from exc
    arr = arr * np.float32(slope) + np.float32(intercept)
    units = "hu" if modality in ("", "CT") else "raw"
    if frames > 1 and arr.ndim == 3:
        return Decoded(arr, units, None if spacing is None else ((thickness or (1.0,))[0], *spacing), None, axes)
    return Decoded(arr.reshape(rows, cols), units, spacing, None, axes)


def _positive(values: object, n: int) -> tuple[float, ...] | None:
    """``n`` positive finite floats from a DICOM value, or None."""
    try:
        out = tuple(float(v) for v in values)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        return None
    return out if len(out) == n and all(np.isfinite(v) and v > 0 for v in out) else None


def decode_nifti(data: bytes | bytearray, name: str) -> Decoded:
    """Uncompressed NIfTI-1/2 bytes -> array (X, Y) or (X, Y, Z) as stored, no reorientation.

    Trailing singleton dimensions are dropped ((X, Y, 1) -> 2D, (X, Y, Z, 1) -> 3D);
    anything else beyond 3D is an error. Geometry and size are checked from the
    header before the voxels are read. Spacing is the header zooms of the kept axes.
    Unscaled voxels are a view of ``data`` (no copy; read-only when ``data`` is ``bytes``).
    """
    import nibabel
    from nibabel.volumeutils import apply_read_scaling

    version = (_v.nifti_version(data) or (1, "<"))[0]
    shape, bitpix, offset = _v.nifti_geometry(data, name)
    _v.check_voxels(shape, name)
    need = _v.nifti_nbytes(shape, bitpix, offset)
    if len(data) < need:
        raise InputFileError(name, f"is truncated ({len(data)} bytes, but its NIfTI header describes {need})")
    kept = list(shape)
    while len(kept) > 3 and kept[-1] == 1:
        kept.pop()
    if len(kept) == 3 and kept[2] == 1:
        kept.pop()
    if not 2 <= len(kept) <= 3:
        raise InputFileError(name, f"is a {len(shape)}D NIfTI (shape {'x'.join(map(str, shape))}); "
                                   "only 2D and 3D are supported")
    if len(kept) == 2:  # a volume's slice plane depends on its orientation: read_scan checks it
        _v.check_plane(kept[0], kept[1], name)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # check=False: nibabel's header checks would print fixes via its global logger
            hdr = (nibabel.Nifti1Header if version == 1 else nibabel.Nifti2Header).from_fileobj(
                BytesIO(bytes(data[:_NIFTI_HEADER_BYTES])), check=False)
            if hdr["vox_offset"] < offset:  # what nibabel's check would repair
                hdr["vox_offset"] = offset
            dtype = hdr.get_data_dtype()
            if dtype.kind not in "biuf":
                raise InputFileError(name, f"has voxel type {dtype}; only real-valued images are supported")
            # hdr.data_from_fileobj without its copies: a view of the voxels in ``data``
            # (Fortran order, as NIfTI stores them), scaled like nibabel when the header says so.
            raw = np.frombuffer(data, dtype=dtype, count=int(np.prod(shape)),
                                offset=int(hdr.get_data_offset())).reshape(shape, order="F")
            slope, inter = hdr.get_slope_inter()
            arr = apply_read_scaling(raw, 1.0 if slope is None else slope, 0.0 if inter is None else inter)
            zooms = tuple(abs(float(z)) for z in (tuple(hdr.get_zooms()) + (1.0, 1.0, 1.0))[: len(kept)])
            affine = np.asarray(hdr.get_best_affine(), dtype=np.float64)
    except InputFileError:
        raise
    except MemoryError as exc:
        raise InputFileError(name, "is too large to decode in the available memory") from exc
    except Exception as exc:
        raise InputFileError(name, f"is corrupt NIfTI data ({_v.one_line(exc)})") from exc
    arr = arr.reshape(kept)
    return Decoded(arr if arr.ndim == 3 else np.array(arr), "raw", zooms, affine)  # a slice: its own copy
