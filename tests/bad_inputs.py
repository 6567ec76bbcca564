"""Generator of malformed user inputs (code, not binary blobs) for the reader tests.

:func:`bad_inputs` returns :class:`BadInput` cases; each must make the named
reader raise ``InputFileError`` with a one-line message naming the file. All
data is built in memory in well under a second: the gzip bomb repeats one
full-flushed deflate block of 1 MiB of zeros, so ~1 MB on disk inflates to
1.1 GiB (its gzip CRC is left 0: a correct reader gives up long before the trailer).

Not here on purpose: a 16-bit all-zero PNG. A blank slice is a legitimate (if
useless) input, so it loads as units "raw" and preprocesses to zeros; see
``test_io.test_16bit_all_zero_png_loads_as_blank``.
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from io import BytesIO
from typing import NamedTuple

import nibabel as nib
import numpy as np
import pydicom
from PIL import Image
from pydicom.data import get_testdata_file

PNG_SIG = b"\x89PNG\r\n\x1a\n"


class BadInput(NamedTuple):
    """name: file name (its extension is only a hint); data: file bytes;
    reader: "scan", "mask", "classes" or "labels"; shape: (H, W) of the image a mask belongs to."""

    name: str
    data: bytes
    reader: str = "scan"
    shape: tuple[int, int] | None = None


def png_bytes(arr: np.ndarray, **save_kw) -> bytes:
    buf = BytesIO()
    Image.fromarray(arr).save(buf, format="PNG", **save_kw)
    return buf.getvalue()


def image_bytes(img: Image.Image, fmt: str) -> bytes:
    buf = BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def nifti_bytes(arr: np.ndarray, affine: np.ndarray | None = None, gz: bool = False) -> bytes:
    data = nib.Nifti1Image(arr, np.eye(4) if affine is None else affine).to_bytes()
    return gzip.compress(data, mtime=0) if gz else data


def ct_small_bytes() -> bytes:
    with open(get_testdata_file("CT_small.dcm"), "rb") as fh:
        return fh.read()


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png_header_only(width: int, height: int, bit_depth: int = 8, idat: bytes | None = None) -> bytes:
    """PNG signature + IHDR (gray), optionally one IDAT chunk and IEND."""
    out = PNG_SIG + _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, bit_depth, 0, 0, 0, 0))
    if idat is not None:
        out += _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")
    return out


def tiff_header(width: int, height: int) -> bytes:
    """Minimal little-endian 8-bit gray TIFF claiming width x height, with 64 bytes of pixels."""
    entries = [(256, 4, width), (257, 4, height), (258, 3, 8), (259, 3, 1), (262, 3, 1),
               (273, 4, 8 + 2 + 8 * 12 + 4), (278, 4, height), (279, 4, width * height)]
    ifd = struct.pack("<H", len(entries))
    for tag, typ, value in entries:
        ifd += struct.pack("<HHI", tag, typ, 1) + (struct.pack("<HH", value, 0) if typ == 3 else struct.pack("<I", value))
    return b"II*\x00" + struct.pack("<I", 8) + ifd + struct.pack("<I", 0) + bytes(64)


def gzip_bomb(prefix: bytes, zeros_mib: int = 1100) -> bytes:
    """gzip of ``prefix`` followed by ``zeros_mib`` MiB of zeros, built without inflating them."""
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    head = comp.compress(prefix) + comp.flush(zlib.Z_FULL_FLUSH)
    block = comp.compress(bytes(1 << 20)) + comp.flush(zlib.Z_FULL_FLUSH)  # self-contained after a full flush
    tail = comp.flush(zlib.Z_FINISH)
    size = (len(prefix) + (zeros_mib << 20)) & 0xFFFFFFFF
    return (b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff" + head + block * zeros_mib + tail
            + struct.pack("<II", 0, size))


def bad_inputs() -> list[BadInput]:
    """At least 27 kinds of bad input (currently 36)."""
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, 4096, dtype=np.uint8).tobytes()
    gray = rng.integers(0, 256, (53, 37), dtype=np.uint8)
    png = png_bytes(gray)
    jpg = image_bytes(Image.fromarray(gray), "JPEG")
    ct = ct_small_bytes()
    vol = (rng.standard_normal((37, 53, 4)) * 300 - 500).astype(np.float32)
    nii_gz = nifti_bytes(vol, gz=True)
    nii = nifti_bytes(vol)

    no_pixels = pydicom.dcmread(BytesIO(ct))
    del no_pixels.PixelData
    buf = BytesIO()
    no_pixels.save_as(buf)

    zip_buf = BytesIO()
    import zipfile
    with zipfile.ZipFile(zip_buf, "w") as zf:
        zf.writestr("slice.png", png)

    huge_header = bytearray(nifti_bytes(np.zeros((8, 8, 8), np.uint8))[:352])
    huge_header[40:56] = struct.pack("<8h", 3, 2048, 2048, 2048, 1, 1, 1, 1)
    bad_dims = bytearray(nii)
    bad_dims[40:42] = struct.pack("<h", 9)

    mask = np.zeros((53, 37), np.uint8)
    mask[10:30, 5:20] = 255
    odd_mask = mask.copy()
    odd_mask[0, 0] = 7
    coloured = np.stack([mask, mask, mask], -1)
    coloured[40, 30] = (255, 0, 0)
    classes = mask // 255
    classes[0, :3] = 5
    labels = np.zeros((37, 53, 3), np.uint8)
    labels[0, 0, 0] = 7
    bomb_prefix = nifti_bytes(np.zeros((64, 64, 4), np.int16))
    small = b"\x00\x01\x02"  # compresses to a valid but corrupt-looking IDAT payload for a 37x53 image

    return [
        BadInput("empty.png", b""),
        BadInput("one_byte.dcm", b"\x00"),
        BadInput("truncated.png", png[: len(png) // 2]),
        BadInput("truncated.jpg", jpg[: len(jpg) // 2]),
        BadInput("truncated.dcm", ct[: len(ct) // 2]),
        BadInput("truncated.nii.gz", nii_gz[: len(nii_gz) // 2]),
        BadInput("truncated.nii", nii[: len(nii) // 2]),
        BadInput("random.png", noise),
        BadInput("random.jpg", noise[::-1]),
        BadInput("random.dcm", noise[1:]),
        BadInput("random.nii", noise[2:]),
        BadInput("random.nii.gz", noise[3:]),
        BadInput("random.tif", noise[4:]),
        BadInput("archive.png", zip_buf.getvalue()),
        BadInput("page.png", b"<!DOCTYPE html>\n<html><body><h1>404 Not Found</h1></body></html>\n"),
        BadInput("report.jpg", b"%PDF-1.4\n" + noise[:200]),
        BadInput("notes.dcm", b"Patient notes: this is not a DICOM file.\n" * 5),
        BadInput("bomb.png", png_header_only(20000, 20000, 1, zlib.compress(bytes(2000)))),
        BadInput("bomb.tif", tiff_header(12000, 12000)),
        BadInput("gzip_bomb.nii.gz", gzip_bomb(bomb_prefix)),
        BadInput("zeros_bomb.nii.gz", gzip_bomb(b"", 1100)),
        BadInput("gzipped_text.nii.gz", gzip.compress(b"hello world\n" * 100)),
        BadInput("volume_4d.nii", nifti_bytes(np.zeros((4, 4, 4, 2), np.float32))),
        BadInput("volume_5d.nii.gz", nifti_bytes(np.zeros((8, 8, 8, 2, 2), np.int16), gz=True)),
        BadInput("huge_header.nii", bytes(huge_header) + bytes(1000)),
        BadInput("bad_dims.nii", bytes(bad_dims)),
        BadInput("thin.png", png_bytes(np.zeros((500, 1), np.uint8))),
        BadInput("tiny.png", png_bytes(np.zeros((4, 4), np.uint8))),
        BadInput("all_nan.nii.gz", nifti_bytes(np.full((16, 16, 3), np.nan, np.float32), gz=True)),
        BadInput("all_inf.tif", image_bytes(Image.fromarray(np.full((20, 20), np.inf, np.float32)), "TIFF")),
        BadInput("no_pixels.dcm", buf.getvalue()),
        BadInput("header_only.png", png_header_only(37, 53)),
        BadInput("bad_idat.png", png_header_only(37, 53, 8, zlib.compress(small)[:4] + noise[:50])),
        BadInput("mask_wrong_size.png", png_bytes(np.zeros((30, 20), np.uint8)), "mask", (53, 37)),
        BadInput("mask_values.png", png_bytes(odd_mask), "mask", (53, 37)),
        BadInput("mask_colour.png", png_bytes(coloured), "mask"),
        BadInput("mask.jpg", image_bytes(Image.fromarray(mask), "JPEG"), "mask"),
        BadInput("mask_is_dicom.dcm", ct, "mask"),
        BadInput("classes_values.png", png_bytes(classes), "classes", (53, 37)),
        BadInput("labels_values.nii.gz", nifti_bytes(labels, gz=True), "labels"),
        BadInput("labels_not_nifti.png", png, "labels"),
    ]


def write_all(folder: str | os.PathLike) -> list[tuple[BadInput, str]]:
    """Write every case into ``folder``; returns (case, path) pairs."""
    out = []
    for case in bad_inputs():
        path = os.path.join(folder, case.name)
        with open(path, "wb") as fh:
            fh.write(case.data)
        out.append((case, path))
    return out
