"""Where lesions may be: the lung labels grown by a few millimetres.

Lesion and type maps are zero outside this zone in every output (pleural lesions lie at
the lung's edge, and the lung labels are blocky at their ~2.5 mm working grid).
:func:`grown_lungs` gives the zone of a slice or volume; :class:`LesionZone` gives it a
slice (or a crop) at a time, for volumes.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from smallcovid.inference.lungs import DISPLAY_FOV_MM, WORK_MM

#: Lesions may lie this far outside the lung labels (pleural lesions, the labels' blocky edge).
LESION_MARGIN_MM = 5.0


def grown_lungs(lungs: np.ndarray, spacing_mm: tuple[float, ...] | None = None,
                margin_mm: float = LESION_MARGIN_MM) -> np.ndarray:
    """Where lesions may be: the lung labels (H, W) or (Z, H, W) grown by ``margin_mm`` in-plane.

    ``spacing_mm``: (row, col) mm, or (slice, row, col) for a volume; None assumes a crop's
    long side spans 300 mm, as :func:`lung_masks_display` does. Returns bool of the labels'
    shape, always a superset of ``lungs != 0``. See :class:`LesionZone` for a volume
    slice by slice.
    """
    lab = np.asarray(lungs)
    zone = LesionZone(lab[None] if lab.ndim == 2 else lab, spacing_mm, margin_mm)
    out = np.stack([zone.mask(k) for k in range(len(zone))]) if len(zone) else lab != 0
    return out.reshape(lab.shape)


class LesionZone:
    """The grown lung mask of a (Z, H, W) label volume, made a slice (or a crop) at a time.

    Grown on the ~2.5 mm block grid of :func:`lung_masks_hu` (whose labels are constant per
    block, so a block's centre pixel stands for it), so the whole volume costs a few small
    arrays; :meth:`mask` repeats the blocks back at full size for one slice, within a crop
    if given, and adds the labels themselves (a superset of them for any input).
    """

    def __init__(self, lungs: np.ndarray, spacing_mm: tuple[float, ...] | None = None,
                 margin_mm: float = LESION_MARGIN_MM) -> None:
        lab = np.asarray(lungs)
        if lab.ndim != 3:
            raise ValueError(f"lungs must be (Z, H, W), got shape {lab.shape}")
        if not (np.isfinite(margin_mm) and margin_mm >= 0):
            raise ValueError(f"margin_mm must be a finite number >= 0, got {margin_mm!r}")
        z, h, w = lab.shape
        if spacing_mm is None:
            sp = (DISPLAY_FOV_MM / max(h, w, 1),) * 2
        else:
            sp = tuple(float(s) for s in np.ravel(spacing_mm))[-2:]
        self.lungs = lab
        self.fr, self.fc = (max(1, int(round(WORK_MM / s))) for s in sp)
        kr, kc = (int(np.ceil(margin_mm / (s * f))) for s, f in zip(sp, (self.fr, self.fc)))
        # Block centres, sampled as lung_masks_hu samples them (its last block takes the remainder).
        small = lab[:, self.fr // 2::self.fr, self.fc // 2::self.fc] != 0
        self.small = ndi.binary_dilation(small, structure=_disk(kr, kc)[None]) if small.any() else small

    def __len__(self) -> int:
        return int(self.lungs.shape[0])

    def mask(self, k: int, rows: slice = slice(None), cols: slice = slice(None)) -> np.ndarray:
        """(h, w) bool: slice ``k``'s grown lungs within ``rows`` x ``cols``."""
        h, w = self.lungs.shape[1:]
        r0, r1, _ = rows.indices(h)
        c0, c1, _ = cols.indices(w)
        lungs = self.lungs[k, r0:r1, c0:c1] != 0
        nr, nc = self.small.shape[1:]
        if nr == 0 or nc == 0:
            return lungs
        rr = np.minimum(np.arange(r0, r1) // self.fr, nr - 1)
        cc = np.minimum(np.arange(c0, c1) // self.fc, nc - 1)
        return self.small[k][np.ix_(rr, cc)] | lungs


def _disk(kr: int, kc: int) -> np.ndarray:
    """An elliptical structuring element of half-sizes ``kr`` x ``kc`` (>= 0)."""
    r, c = np.mgrid[-kr:kr + 1, -kc:kc + 1]
    return (r / max(kr, 1)) ** 2 + (c / max(kc, 1)) ** 2 <= 1.0
