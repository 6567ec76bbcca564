"""Helpers for uploaded files: matching ground truth, reading it, mask NIfTI bytes, what to say
about a scan that cannot be used (a read error per file, a slice without contrast).

Ground truth for a 2D slice is a PNG/TIFF mask (0/255 or 0/1) or a lesion-type map
(0 background, 1 ground-glass, 2 consolidation, 3 folded into 2). For a 3D NIfTI
volume it may also be a NIfTI label volume of the same shape (MedSeg values 0..3).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from smallcovid.core.errors import InputFileError, SmallCovidError
from smallcovid.io import Slice, Volume, read_classes, read_label_volume, read_mask, read_scan, nifti_mask_data

_NIFTI = (".nii", ".nii.gz")


@dataclass(frozen=True, eq=False)
class KeptUpload:
    """An uploaded file as a session keeps it: the attributes of Streamlit's ``UploadedFile``
    that the app reads (``file_id``, ``name``, ``size``, ``type``, ``getvalue()``), holding the
    very bytes object of the upload (no copy), without a file position to share or move."""

    file_id: str
    name: str
    type: str
    data: bytes

    @classmethod
    def of(cls, upload, data: bytes | None = None) -> "KeptUpload":
        """From an ``UploadedFile`` (or anything with those attributes), holding ``data`` (the
        same bytes held elsewhere, e.g. by the server's upload manager) or else the upload's own
        value; a KeptUpload as it is."""
        if isinstance(upload, cls):
            return upload
        data = upload.getvalue() if data is None else data
        return cls(str(upload.file_id), str(upload.name), str(getattr(upload, "type", "")),
                   data if isinstance(data, bytes) else bytes(data))

    @property
    def size(self) -> int:
        return len(self.data)

    def getvalue(self) -> bytes:
        return self.data


def stem(name: str) -> str:
    """File name without folders and extension (``.nii.gz`` counts as one): ``a/b/case.nii.gz`` -> ``case``."""
    return re.sub(r"(\.nii\.gz|\.[A-Za-z0-9]{1,5})$", "", Path(name).name)


_SCAN_TAGS = ("image", "img", "im", "scan", "ct")
_MASK_TAGS = ("mask", "masks", "label", "labels", "seg", "gt", "lesion", "lesions")


def _base(name: str, tags: Sequence[str]) -> str:
    """Lower-case stem without one trailing ``_<tag>`` / ``-<tag>`` (``tr_im`` -> ``tr``, ``case_mask`` -> ``case``)."""
    s = stem(name).lower()
    for tag in tags:
        for sep in ("_", "-", "."):
            if s.endswith(sep + tag) and len(s) > len(tag) + 1:
                return s[: -len(tag) - 1]
    return s


def match_mask(mask_names: Sequence[str], scan_name: str) -> int | None:
    """Index of the mask for ``scan_name``, or None: the masks must be named like the scan.

    A mask matches when its stem is the scan's (``case.jpg`` / ``case.png``), optionally with a
    mask tag (``case_mask``, ``case_labels``, ``case_seg``, ``case_gt`` …), also when the scan
    has an image tag (``tr_im.nii.gz`` / ``tr_mask.nii.gz``); case is ignored; the first
    matching name wins. A single mask of another name does *not* match (it would silently
    score the wrong image): see :func:`unmatched_mask_message`.
    """
    s = stem(scan_name).lower()
    scan_bases = {s, _base(scan_name, _SCAN_TAGS)}
    for i, name in enumerate(mask_names):
        if stem(name).lower() == s or _base(name, _MASK_TAGS) in scan_bases:
            return i
    return None


def unmatched_mask_message(mask_names: Sequence[str], scan_name: str) -> str:
    """One sentence for masks that :func:`match_mask` did not pair with ``scan_name``."""
    s = stem(scan_name)
    expected = f"{s}.png or {s}_mask.png"
    if len(mask_names) == 1:
        return (f"The mask {Path(mask_names[0]).name} is not named like the scan {Path(scan_name).name} "
                f"(expected {expected}), so it is not used: no metrics shown. Rename it if it belongs to this scan.")
    return (f"None of the {len(mask_names)} uploaded masks is named like the scan {Path(scan_name).name} "
            f"(expected {expected}): no metrics shown.")


def read_ground_truth(data: bytes, name: str, shape: tuple[int, int], volume: Volume | None = None,
                      index: int | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Ground truth for one slice -> ((H, W) bool mask, (H, W) uint8 types or None).

    Args:
        data, name: the uploaded file and its name.
        shape: (H, W) of the slice it belongs to.
        volume, index: for a volume input, the volume and the slice index; a NIfTI label
            volume of the same shape is then accepted.

    Raises:
        InputFileError: unreadable file, wrong size or values (one sentence naming the file).
    """
    if volume is not None and name.lower().endswith(_NIFTI):
        labels = read_label_volume(data, name)
        if labels.shape != volume.voxels.shape:
            d, h, w = labels.shape
            raise InputFileError(name, f"has {d} slices of {w}x{h} but the volume has "
                                       f"{len(volume)} of {shape[1]}x{shape[0]}")
        lab = labels[index or 0]
        return lab > 0, np.minimum(lab, 2).astype(np.uint8)
    try:
        return read_mask(data, name, shape=shape), None
    except InputFileError as first:
        try:
            types = read_classes(data, name, shape=shape)
        except InputFileError:
            raise first from None
        return types > 0, types


def as_volume(s: Slice) -> Volume:
    """A one-slice :class:`Volume` for a 2D slice (for writing its mask as NIfTI)."""
    spacing = None if s.spacing is None else (1.0, *s.spacing)
    return Volume(s.pixels[None], s.units, spacing, None, s.source, plane=s.axes)


def nifti_mask_bytes(mask: np.ndarray, like: Volume) -> bytes:
    """(D, H, W) mask -> ``.nii.gz`` bytes (uint8 0/1) in the geometry of ``like``, built in memory (no disk)."""
    return nifti_mask_data(np.asarray(mask).astype(np.uint8), like, gz=True)


NO_CONTRAST = "has no contrast (every pixel has the same value); there is nothing to segment"


def no_contrast_note(sl: Slice, name: str, index: int | None = None) -> str | None:
    """``"blank.png: this image has no contrast (…); there is nothing to segment."`` for a slice whose
    pixels all hold one value (``index``: its slice number in a volume); None when it has contrast."""
    pixels = np.asarray(sl.pixels)
    finite = pixels[np.isfinite(pixels)]
    if finite.size and float(finite.max()) > float(finite.min()):
        return None
    what = "this image" if index is None else f"slice {index + 1}"
    return f"{Path(name).name}: {what} {NO_CONTRAST}."


def scan_error(data: bytes, name: str) -> str | None:
    """The one-sentence error of reading ``data`` as a scan (the file named), or None when it reads."""
    try:
        read_scan(data, name=name)
    except SmallCovidError as exc:
        return first_line(exc)
    return None


def first_line(exc: BaseException) -> str:
    """The first line of an error's message (a generic sentence when it has none)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else "The input could not be used."


def markdown_lines(lines: Sequence[str]) -> str:
    """Sentences as Markdown, one line each, shown literally (``bad_1.png`` … ``bad_2.png`` is no italics)."""
    return "  \n".join(re.sub(r"([\\`*_{}\[\]<>#|~$])", r"\\\1", line) for line in lines)
