"""How an uploaded DICOM series was assembled, in one sentence for the Segment page."""

from __future__ import annotations

import numpy as np

from smallcovid.io.series import SeriesVolume
from smallcovid.io.seriesorder import SPACING_TOLERANCE


def series_caption(volume: SeriesVolume) -> str:
    """One sentence: the series' name, how many files formed it and in what order.

    E.g. ``Series 'CHEST_1mm' from 48 files, ordered by ImagePositionPatient along the slice
    normal (z from -120.0 to -73.0 mm, 1.00 mm apart)`` or ``Series 'series-3f2a…' from 12
    files, ordered by InstanceNumber (no slice positions)``.
    """
    n = len(volume.files) or len(volume.voxels)
    name = volume.source or volume.description or volume.series_uid or "DICOM"
    head = f"Series '{name}' from {n} file{'' if n == 1 else 's'}"
    z = np.asarray(volume.z_mm, dtype=np.float64)
    if volume.order == "single" or n == 1:
        return head + (f" (one slice at z {z[0]:.1f} mm)" if z.size == 1 else " (one slice)")
    if volume.order == "instance":
        return head + ", ordered by InstanceNumber (no slice positions)"
    if volume.order == "position":
        where = ""
        if z.size > 1:
            gaps = np.diff(z)
            median = float(np.median(gaps))
            apart = f"{median:.2f} mm apart"
            if float(np.abs(gaps - median).max()) > SPACING_TOLERANCE * median:
                apart = f"median {median:.2f} mm apart, gaps from {gaps.min():.2f} to {gaps.max():.2f} mm"
            where = f" (z from {z[0]:.1f} to {z[-1]:.1f} mm, {apart})"
        return head + ", ordered by ImagePositionPatient along the slice normal" + where
    return head
