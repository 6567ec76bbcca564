"""Reading user files: PNG/JPG/TIFF, DICOM and NIfTI into one :class:`Slice` / :class:`Volume` type.

``readers`` picks the decoder from the file's content, ``decoders`` turns bytes
into arrays, ``validate`` holds the input limits and content checks, and
``writers`` writes masks atomically, ``labeled_zip`` unpacks an uploaded labeled dataset safely. A new file format
gets a decoder in ``decoders`` and a branch in ``readers.read_scan``.
"""

from smallcovid.io.readers import (
    Slice,
    Volume,
    read_classes,
    read_label_volume,
    read_mask,
    read_scan,
)
from smallcovid.io.writers import nifti_mask_data, write_nifti_mask, write_png

__all__ = [
    "Slice",
    "Volume",
    "nifti_mask_data",
    "read_classes",
    "read_label_volume",
    "read_mask",
    "read_scan",
    "write_nifti_mask",
    "write_png",
]
