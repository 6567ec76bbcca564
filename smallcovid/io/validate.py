"""Low-level checks on user files: size limits, content sniffing, capped gunzip.

Everything here works on raw ``bytes`` and raises :class:`InputFileError` with
one sentence naming the file and the problem. The limits below are module
globals read at call time (``smallcovid.io`` re-exports them for reading).
"""

from __future__ import annotations

import logging
import os
import re
import struct
import zlib
from pathlib import Path

import numpy as np

from smallcovid.core.errors import InputFileError

log = logging.getLogger(__name__)

_MIB = 1024 * 1024


def env_mb(var: str, default_mb: float) -> int:
    """Read a size limit in MiB from environment variable ``var``; returns bytes.

    A missing, non-numeric or non-positive value falls back to ``default_mb``
    (with a logged warning for the bad cases) so a typo cannot stop the app.
    """
    raw = os.environ.get(var, "").strip()
    if raw:
        try:
            value = float(raw)
            if value > 0:
                return int(value * _MIB)
        except ValueError:
            pass
        log.warning("ignoring %s=%r (expected a positive number of MiB); using %s", var, raw, default_mb)
    return int(default_mb * _MIB)


# Limits; read at call time, so tests and hosts may change them (e.g. monkeypatch).
#: Largest accepted file or upload, bytes (env ``SMALLCOVID_MAX_UPLOAD_MB``, default 512 MiB).
MAX_UPLOAD_BYTES: int = env_mb("SMALLCOVID_MAX_UPLOAD_MB", 512)
#: Largest accepted size of a decompressed ``.nii.gz``, bytes.
MAX_GUNZIP_BYTES: int = 1 << 30
#: Largest accepted number of voxels (D x H x W) in one scan.
MAX_VOXELS: int = 512 * 512 * 1000
#: Accepted range for each side of a slice, pixels.
MIN_SIDE: int = 8
MAX_SIDE: int = 8192
#: Bytes a gzip stream may decompress to beyond what its NIfTI header describes.
NIFTI_TRAILING_SLACK: int = 64 * 1024


_CLAUSE_ENDS = (". ", "; ", " - ", " – ", ": ", ", ")  # strongest first


def one_line(exc: BaseException, limit: int = 160) -> str:
    """Short single-line description of an exception, for error messages.

    A text over ``limit`` characters is cut where a clause of it ends (". ", "; ", " - ",
    ": ", ", ", the strongest break that keeps at least a third of it, outside brackets),
    else at the last word boundary followed by "…"; never in the middle of a word.
    """
    text = re.sub(r"\s*<[^<>]* at 0x[0-9a-fA-F]+>", "", " ".join(str(exc).split())) or type(exc).__name__
    if len(text) <= limit:
        return text
    head = text[: limit - 1]
    for sep in _CLAUSE_ENDS:
        cut = head.rfind(sep)
        while cut >= limit // 3:
            part = head[:cut]
            if part.count("(") == part.count(")") and part.count("[") == part.count("]"):
                return part.rstrip(" .;:,-–")
            cut = head.rfind(sep, 0, cut)
    word = head.rfind(" ")
    return (head[:word] if word > 0 else head).rstrip(" .;:,-–") + "…"


def read_source(source: str | os.PathLike | bytes | bytearray | memoryview,
                name: str | None) -> tuple[bytes, str]:
    """Return ``(data, name)`` for a path or raw bytes, refusing empty or oversized input.

    ``name`` defaults to the path's file name (``"upload"`` for bytes). At most
    :data:`MAX_UPLOAD_BYTES` + 1 bytes are read, so a huge file is refused without loading it.
    """
    max_bytes = MAX_UPLOAD_BYTES
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        name = name or "upload"
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source)
        name = name or path.name or str(path)
        try:
            with open(path, "rb") as fh:
                data = fh.read(max_bytes + 1)
        except FileNotFoundError as exc:
            raise InputFileError(name, "does not exist") from exc
        except IsADirectoryError as exc:
            raise InputFileError(name, "is a folder, not a file") from exc
        except PermissionError as exc:
            raise InputFileError(name, "cannot be read (permission denied)") from exc
        except OSError as exc:
            raise InputFileError(name, f"cannot be read ({one_line(exc)})") from exc
    else:
        raise InputFileError(name or repr(source)[:60],
                             f"is a {type(source).__name__}, not a file path or bytes")
    if not data:
        raise InputFileError(name, "is empty")
    if len(data) > max_bytes:
        raise InputFileError(name, f"is larger than the upload limit of {max_bytes / _MIB:g} MiB")
    if len(data) < 16:
        raise InputFileError(name, f"is only {len(data)} byte{'s' if len(data) > 1 else ''}, too small to be a scan or image")
    return data, name


# ----------------------------------------------------------------- sniffing

_FORMAT_BY_EXT = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".tif": "TIFF",
                  ".tiff": "TIFF", ".dcm": "DICOM", ".dicom": "DICOM", ".nii": "NIfTI",
                  ".gz": "gzip-compressed NIfTI"}


def nifti_version(head: bytes) -> tuple[int, str] | None:
    """``(1 or 2, byte-order char)`` when ``head`` starts with a NIfTI header, else None."""
    if len(head) < 4:
        return None
    for order in "<>":
        size = struct.unpack(order + "i", head[:4])[0]
        if size == 348 and len(head) >= 348 and head[344:347] == b"n+1":
            return 1, order
        if size == 540 and len(head) >= 540 and head[4:7] == b"n+2":
            return 2, order
    return None


def sniff(data: bytes) -> str:
    """Format from magic bytes: png, jpeg, tiff, dicom, nifti, gzip, or ``unknown``."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if data[128:132] == b"DICM":  # before TIFF: a DICOM preamble may hold a TIFF header
        return "dicom"
    if data[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "tiff"
    if nifti_version(data) is not None:
        return "nifti"
    if data.startswith(b"\x1f\x8b"):
        return "gzip"
    return "unknown"


def describe(data: bytes) -> str:
    """Human name for content that is not a supported scan (e.g. ``"a ZIP archive"``)."""
    magic = [(b"PK\x03\x04", "a ZIP archive"), (b"PK\x05\x06", "an empty ZIP archive"),
             (b"%PDF", "a PDF document"), (b"GIF8", "a GIF image"), (b"BM", "a BMP image"),
             (b"\x93NUMPY", "a NumPy array file"), (b"BZh", "bzip2-compressed data"),
             (b"\xfd7zXZ", "xz-compressed data"), (b"7z\xbc\xaf", "a 7-Zip archive"),
             (b"Rar!", "a RAR archive"), (b"\x89HDF", "an HDF5 file"), (b"\x1f\x8b", "gzip data")]
    for prefix, what in magic:
        if data.startswith(prefix):
            return what
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "a WebP image"
    head = data[:2048]
    try:
        text: str | None = head.decode("utf-8")
    except UnicodeDecodeError as exc:  # a multi-byte character cut at the 2048-byte edge is fine
        text = head[: exc.start].decode("utf-8") if exc.start >= len(head) - 3 and len(data) > 2048 else None
    if text is not None and all(c.isprintable() or c in "\r\n\t" for c in text):
        low = text.lstrip("\ufeff \r\n\t").lower()
        if low.startswith(("<!doctype html", "<html")) or "<html" in low or "<body" in low:
            return "HTML text"
        if low.startswith(("<?xml", "<svg")):
            return "XML text"
        return "plain text"
    return "unknown binary data"


def unsupported(data: bytes, name: str, expected_here: str | None = None) -> InputFileError:
    """Error for unrecognised content; mentions the format its extension promised."""
    what = describe(data)
    promised = expected_here or _FORMAT_BY_EXT.get(Path(name).suffix.lower())
    if promised:
        return InputFileError(name, f"is not a valid {promised} file (detected {what})")
    return InputFileError(name, f"is not a supported image (detected {what}); "
                                "expected PNG, JPEG, TIFF, DICOM or NIfTI (.nii/.nii.gz)")


# ----------------------------------------------------------------- NIfTI / gzip

def nifti_geometry(head: bytes, name: str) -> tuple[tuple[int, ...], int, int]:
    """``(shape, bitpix, vox_offset)`` parsed from a NIfTI-1/2 header (no voxel data needed)."""
    version, order = nifti_version(head) or (0, "<")
    try:
        if version == 1:
            dims = struct.unpack(order + "8h", head[40:56])
            bitpix = struct.unpack(order + "h", head[72:74])[0]
            offset = max(int(struct.unpack(order + "f", head[108:112])[0]), 352)
        else:
            dims = struct.unpack(order + "8q", head[16:80])
            bitpix = struct.unpack(order + "h", head[14:16])[0]
            offset = max(struct.unpack(order + "q", head[168:176])[0], 544)
    except (struct.error, ValueError, OverflowError) as exc:
        raise InputFileError(name, f"has an unreadable NIfTI header ({one_line(exc)})") from exc
    ndim = dims[0]
    if not 1 <= ndim <= 7 or any(d < 1 for d in dims[1:ndim + 1]) or bitpix <= 0:
        raise InputFileError(name, f"has an invalid NIfTI header (dim {list(dims)}, bitpix {bitpix})")
    return tuple(int(d) for d in dims[1:ndim + 1]), int(bitpix), int(offset)


def nifti_nbytes(shape: tuple[int, ...], bitpix: int, offset: int) -> int:
    """Bytes a single-file NIfTI with this geometry occupies (header + voxels)."""
    return offset + int(np.prod(shape, dtype=np.float64)) * bitpix // 8


def gunzip_nifti(data: bytes, name: str) -> bytes:
    """Decompress a ``.nii.gz``, stopping early on anything suspicious.

    The NIfTI header is decompressed and checked first (non-NIfTI content is refused after
    its first 540 bytes; so are sizes over :data:`MAX_GUNZIP_BYTES`); then the whole stream
    is decompressed with at most what that header describes plus
    :data:`NIFTI_TRAILING_SLACK` (+1) bytes of output, so a gzip bomb fails at that size.

    The stream is decompressed in one zlib call: each call (and each growth of its output
    buffer) takes the GIL back, which costs up to a few ms while another thread holds it;
    a 300-slice volume read during ``import torch`` took ~4x longer in 1 MiB steps.
    """
    max_bytes = MAX_GUNZIP_BYTES
    head = _gunzip_head(data, name, 544)
    if nifti_version(head) is None:
        raise InputFileError(name, f"is gzip-compressed {describe(head)}, not a NIfTI image")
    shape, bitpix, offset = nifti_geometry(head, name)
    check_voxels(shape, name)
    expected = nifti_nbytes(shape, bitpix, offset)
    if expected > max_bytes:
        raise InputFileError(name, f"would decompress to {expected} bytes, more than the limit of {max_bytes}")
    limit = expected + NIFTI_TRAILING_SLACK
    dec = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = dec.decompress(data, limit + 1)
    except zlib.error as exc:
        raise InputFileError(name, f"is corrupt gzip data ({one_line(exc)})") from exc
    if len(out) > limit:
        raise InputFileError(name, "decompresses to more data than its NIfTI header describes (possible gzip bomb)")
    if not dec.eof:
        raise InputFileError(name, "is truncated gzip data (the compressed stream ends early)")
    return out


def _gunzip_head(data: bytes, name: str, size: int) -> bytes:
    """The first ``size`` decompressed bytes of gzip ``data`` (fewer if the stream is shorter),
    decompressing a few KiB at a time; corrupt or truncated data raises :class:`InputFileError`."""
    dec = zlib.decompressobj(16 + zlib.MAX_WBITS)
    view, pos, out = memoryview(data), 0, b""
    try:
        while len(out) < size and not dec.eof:
            pending = dec.unconsumed_tail
            if not pending:
                if pos >= len(view):  # all input taken: what zlib still holds, then the verdict
                    out += dec.flush()[:size - len(out)]
                    if not dec.eof and len(out) < size:
                        raise InputFileError(name, "is truncated gzip data (the compressed stream ends early)")
                    break
                pending, pos = view[pos:pos + 4096], pos + 4096
            out += dec.decompress(pending, size - len(out))
    except zlib.error as exc:
        raise InputFileError(name, f"is corrupt gzip data ({one_line(exc)})") from exc
    return out


# ----------------------------------------------------------------- array checks

def check_voxels(shape: tuple[int, ...], name: str) -> None:
    """Refuse arrays with more than :data:`MAX_VOXELS` elements (before allocating them)."""
    total = int(np.prod(shape, dtype=np.float64))
    if total > MAX_VOXELS:
        raise InputFileError(name, f"has {total} voxels, more than the limit of {MAX_VOXELS}")


def check_plane(height: int, width: int, name: str) -> None:
    """Each side of a slice must lie in [:data:`MIN_SIDE`, :data:`MAX_SIDE`]; message is width x height."""
    if not (MIN_SIDE <= height <= MAX_SIDE and MIN_SIDE <= width <= MAX_SIDE):
        raise InputFileError(name, f"is {width}x{height} pixels; each side must be between {MIN_SIDE} and {MAX_SIDE}")


def clean_finite(arr: np.ndarray, name: str) -> np.ndarray:
    """float32 copy with NaN/Inf replaced by the finite minimum; all-non-finite is an error."""
    arr = np.asarray(arr, dtype=np.float32)
    finite = np.isfinite(arr)
    if finite.all():
        return arr
    if not finite.any():
        raise InputFileError(name, "contains only NaN or infinite values")
    log.info("%s: replacing %d NaN/infinite values by the finite minimum", name, int((~finite).sum()))
    out = arr.copy()
    out[~finite] = arr[finite].min()
    return out


def format_values(values: np.ndarray, show: int = 8) -> str:
    """``"0, 7, 255"`` (at most ``show`` values, then ``"and N more"``)."""
    vals = [f"{v:g}" if isinstance(v, float) else str(v) for v in values[:show].tolist()]
    rest = len(values) - show
    return ", ".join(vals) + (f" and {rest} more" if rest > 0 else "")
