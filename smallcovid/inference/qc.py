"""Lung quality control: plausibility checks of an automatic lung mask, in plain words.

Lung volume, involvement (% of lung) and the per-lung figures are only as good as the
lung mask under them. :func:`lung_qc` looks at a lung label map for the usual ways an
automatic mask fails (no lungs, one lung missed, the air around the body taken for lung,
sizes no adult lung has) and returns one short sentence per problem found, so that
reports can say so instead of printing plausible-looking numbers.

Label maps: ``lungs`` is (H, W) for a slice or (D, H, W) for a volume, integer or
boolean, values 0 outside the lungs, 1 right lung, 2 left lung (the patient's).
Spacing: (row mm, col mm) for a slice, (slice mm, row mm, col mm) for a volume
(``Volume.spacing`` order); None when unknown, which skips the checks that need
physical sizes (``lung_area``, ``lung_volume``).

Each finding is ``{"code": str, "message": str}``; the codes are the keys of
:data:`QC_CODES` and stay stable (reports and scripts may match on them).
"""

from __future__ import annotations

import logging
from typing import Any, Sequence

import numpy as np

log = logging.getLogger(__name__)

QC_CODES: dict[str, str] = {
    "no_lungs": "no lung pixel was found",
    "one_lung": "one lung is missing or far smaller than the other",
    "lung_at_edge": "the lung mask runs along the image border (air outside the body taken for lung)",
    "lung_area": "lung area per slice outside the range of adult lungs",
    "lung_volume": "total lung volume outside the range of adult lungs",
    "lr_ratio": "right and left lungs differ in size far more than lungs do",
    "lung_cover": "the lungs cover most of the image",
}

# A lung smaller than this share of the other is taken as missed. Healthy lungs differ by
# ~10-20 % (the right is larger); even after a lobectomy the smaller side keeps well over a
# third, so below 10 % the mask, not the patient, lost a lung.
ONE_LUNG_FRACTION = 0.10
# Right/left size ratios beyond this (either way) are rare outside pneumonectomy, collapse or
# a large effusion, and are the typical result of half a lung leaking into the other label.
LR_RATIO_MAX = 3.0
# Share of a slice's border length along which lung may run. With the whole body in view,
# air and the chest wall lie between the lungs and the border, so they do not touch it.
EDGE_FRACTION_MAX = 0.05
# ... unless the image is cut to the lungs (the training slices' framing: lungs along most of
# the border): so a slice only counts when its lungs also enclose more than this share of the
# rest of it. Outside air taken for lung leaves the body an island in "lung"; on a lung crop
# the mediastinum and chest wall between and around the lungs still reach the border.
ENCLOSED_MIN = 0.5
# A slice whose lungs' bounding box covers this share of it is a lung crop (the value of
# smallcovid.inference.framing.FULL_COVER, which leaves such slices uncropped), unless its
# lungs enclose the body as above.
CROP_BOX_MIN = 0.80
# In a volume: share of the lung-holding slices that may count. A few slices are tolerated
# (the field of view at the bases can be tight); a quarter is not.
EDGE_SLICES_MAX = 0.25
# Total lung area on one slice, cm². Both lungs of a large adult at full inspiration stay below
# ~500-600 cm² on their widest slice; the lung mask is generous on purpose (it takes in the
# pleura and dependent consolidation, ~1.2-1.5x the aerated lung), so 1000 cm² leaves margin. Apices and bases are small, so a
# single slice is only flagged below 5 cm² (a few mm of lung, or a speck of noise).
SLICE_AREA_MIN_CM2 = 5.0
SLICE_AREA_MAX_CM2 = 1000.0
# Total lung volume, litres, when the scan covers the chest: adult total lung capacity is
# ~4-8 L, residual volume ~1-2 L; 1-10 L keeps small adults and expiration scans clear.
VOLUME_MIN_L = 1.0
VOLUME_MAX_L = 10.0
# The volume is only judged when the scan is longer than this along z (mm): adult lungs are
# ~200-300 mm tall, so a shorter scan may hold only part of them (a slab, a few slices); such
# a slab's mean lung area per slice is held against SLICE_AREA_MAX_CM2 instead.
VOLUME_MIN_EXTENT_MM = 150.0
# Share of the image the lungs may cover (3D: on more than half of the lung-holding slices,
# i.e. on the median one). With the whole body in view the lungs take ~20-45 % of a slice;
# more than 60 % means the body outline or the background was labelled lung. Lung crops (see
# CROP_BOX_MIN) are exempt: there the lungs fill most of the image when the mask is right.
COVER_MAX = 0.60

_CHUNK = 16  # slices per step in 3D: bounded temporaries on 512x512x300 volumes


def lung_qc(lungs: np.ndarray, spacing_mm: Sequence[float] | None) -> list[dict[str, str]]:
    """Plausibility checks of a lung label map; an empty list for a plausible one.

    Args:
        lungs: (H, W) or (D, H, W) integer/boolean labels, 0 outside, 1 right, 2 left.
        spacing_mm: (row mm, col mm) for (H, W), (slice mm, row mm, col mm) for (D, H, W);
            None when unknown (area and volume checks are skipped).

    Returns:
        ``[{"code": code, "message": sentence}, ...]`` in the order of :data:`QC_CODES`;
        with ``no_lungs`` nothing else is checked.

    Raises:
        ValueError: ``lungs`` is not a 2D/3D label map with values 0..2, or ``spacing_mm`` is
            not positive finite numbers, one per axis.
    """
    lungs = _check_lungs(lungs)
    spacing = check_spacing(spacing_mm, lungs.ndim)
    vol = lungs[None] if lungs.ndim == 2 else lungs
    right, left, edge, box, border_len = _per_slice_counts(vol)
    total = right + left
    if not total.any():
        return [_finding("no_lungs", "No lung was found, so lung size and involvement cannot be measured.")]
    has = total > 0
    frame = float(vol.shape[1] * vol.shape[2])
    frac, cover, box = edge[has] / float(border_len), total[has] / frame, box[has] / frame  # lung slices only
    wraps = np.array([(f > EDGE_FRACTION_MAX or b >= CROP_BOX_MIN) and _wraps_body(vol[k])
                      for f, b, k in zip(frac, box, np.flatnonzero(has))], bool)
    crop_like = (box >= CROP_BOX_MIN) & ~wraps
    one, ratio = _side_checks(int(right.sum()), int(left.sum()), "area" if lungs.ndim == 2 else "volume")
    out = one + _edge_check(frac, wraps, lungs.ndim) + _size_checks(total, spacing, lungs.ndim) + ratio
    if np.count_nonzero((cover > COVER_MAX) & ~crop_like) > len(cover) / 2:
        lead = "The lungs cover" if lungs.ndim == 2 else "On a typical slice the lungs cover"
        out.append(_finding("lung_cover", f"{lead} {_pct(float(np.median(cover)), COVER_MAX)} of the image, "
                                          f"more than the {_pct(COVER_MAX)} real lungs do."))
    if out:
        log.debug("lung QC: %s", ", ".join(f["code"] for f in out))
    return out


def qc_unreliable(qc: Sequence[dict[str, Any]] | None) -> bool:
    """True when ``qc`` (from :func:`lung_qc` or a report's ``"qc"``) holds any finding."""
    return any(isinstance(f, dict) and f.get("code") for f in (qc or ()))


def qc_summary(qc: Sequence[dict[str, Any]] | None) -> str:
    """One line for the command line: ``lung QC: code (sentence); code (sentence)``, or ``lung QC: ok``."""
    items = [f"{f.get('code')} ({str(f.get('message', '')).rstrip('.')})" for f in (qc or ()) if isinstance(f, dict)]
    return "lung QC: " + ("; ".join(items) if items else "ok")


# ------------------------------------------------------------------ checks

def _side_checks(n_right: int, n_left: int, what: str) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """(``one_lung`` findings, ``lr_ratio`` findings) from the two sides' pixel/voxel counts."""
    (n_small, small), (n_big, big) = sorted(((n_right, "right"), (n_left, "left")))
    if n_small == 0:
        return [_finding("one_lung", f"Only the {big} lung was found; the {small} lung is missing.")], []
    if n_small < ONE_LUNG_FRACTION * n_big:
        share = _pct(n_small / n_big, ONE_LUNG_FRACTION)
        return [_finding("one_lung", f"The {small} lung is only {share} of the {what} of the {big} lung, "
                                     f"so part of the lungs was probably missed.")], []
    if n_big > LR_RATIO_MAX * n_small:
        times = _num(n_big / n_small, LR_RATIO_MAX, 1)
        return [], [_finding("lr_ratio", f"The {big} lung is {times} times the {what} of the {small} lung; "
                                         f"real lungs rarely differ by more than {LR_RATIO_MAX:g} times.")]
    return [], []


def _edge_check(frac: np.ndarray, wraps: np.ndarray, ndim: int) -> list[dict[str, str]]:
    """``lung_at_edge`` from the lung-holding slices' border share and whether their lungs wrap the body."""
    bad = (frac > EDGE_FRACTION_MAX) & wraps
    cause = "so air outside the body was probably taken for lung."
    if ndim == 2:
        if not bad[0]:
            return []
        where = f"along {_pct(frac[0], EDGE_FRACTION_MAX)} of the image border and around the body"
    else:
        share = float(bad.mean())
        if share <= EDGE_SLICES_MAX:
            return []
        where = (f"along the image border and around the body on {_pct(share, EDGE_SLICES_MAX)} of the "
                 f"slices with lungs")
    return [_finding("lung_at_edge", f"The lung mask runs {where}, {cause}")]


def _wraps_body(labels: np.ndarray) -> bool:
    """Whether the lungs of an (H, W) slice enclose most of the rest of it.

    When outside air is labelled lung, the body is an island in the "lung": most non-lung
    pixels lie in regions that do not reach the image border. On a correctly masked lung
    crop the mediastinum and chest wall between and around the lungs do reach it.
    """
    from scipy import ndimage

    rest = labels == 0
    n_rest = int(np.count_nonzero(rest))
    if n_rest == 0:
        return True
    regions, _ = ndimage.label(rest)
    edge = np.unique(np.concatenate([regions[0], regions[-1], regions[:, 0], regions[:, -1]]))
    open_px = int(np.count_nonzero(np.isin(regions, edge[edge > 0])))
    return (n_rest - open_px) > ENCLOSED_MIN * n_rest


def _size_checks(total: np.ndarray, spacing: tuple[float, ...] | None, ndim: int) -> list[dict[str, str]]:
    """``lung_area`` (a slice, or a thin slab's mean slice) and ``lung_volume`` (a chest-long volume)."""
    if spacing is None:
        return []
    px_cm2 = spacing[-2] * spacing[-1] / 100.0
    top = f"more than the {SLICE_AREA_MAX_CM2:g} cm² adult lungs reach."
    if ndim == 2:
        area = float(total[0]) * px_cm2
        if area < SLICE_AREA_MIN_CM2:
            text = (f"{_num(area, SLICE_AREA_MIN_CM2, 1)} cm², less than the {SLICE_AREA_MIN_CM2:g} cm² of "
                    f"even the smallest lung section.")
        elif area > SLICE_AREA_MAX_CM2:
            text = f"{_num(area, SLICE_AREA_MAX_CM2)} cm², {top}"
        else:
            return []
        return [_finding("lung_area", f"The lung area on this slice is {text}")]
    if len(total) * spacing[0] > VOLUME_MIN_EXTENT_MM:
        litres = float(total.sum()) * px_cm2 * spacing[0] / 1e4  # cm² x mm -> L
        if VOLUME_MIN_L <= litres <= VOLUME_MAX_L:
            return []
        text = _num(litres, VOLUME_MIN_L if litres < VOLUME_MIN_L else VOLUME_MAX_L, 2)
        return [_finding("lung_volume", f"The lung volume is {text} L, outside the {VOLUME_MIN_L:g}-"
                                        f"{VOLUME_MAX_L:g} L of adult lungs.")]
    mean = float(total[total > 0].mean()) * px_cm2
    if mean <= SLICE_AREA_MAX_CM2:
        return []
    return [_finding("lung_area", f"The lung area is {_num(mean, SLICE_AREA_MAX_CM2)} cm² per slice on average, {top}")]


# ------------------------------------------------------------------ helpers

def _per_slice_counts(vol: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """(D, H, W) labels -> per slice (each (D,) int64): right, left and border-lung pixels and the
    area of the lungs' bounding box (0 without lung); plus the border length in pixels."""
    d, h, w = vol.shape
    rows, cols = sorted({0, h - 1}), sorted({0, w - 1})
    inner = slice(1, h - 1)
    border_len = len(rows) * w + len(cols) * max(h - 2, 0)
    right, left, edge, box = (np.zeros(d, np.int64) for _ in range(4))
    for k in range(0, d, _CHUNK):
        part = vol[k:k + _CHUNK]
        right[k:k + _CHUNK] = np.count_nonzero(part == 1, axis=(1, 2))
        left[k:k + _CHUNK] = np.count_nonzero(part == 2, axis=(1, 2))
        on = sum(np.count_nonzero(part[:, r, :], axis=1) for r in rows)
        edge[k:k + _CHUNK] = on + sum(np.count_nonzero(part[:, inner, c], axis=1) for c in cols)
        box[k:k + _CHUNK] = _extent(part.any(axis=2)) * _extent(part.any(axis=1))
    return right, left, edge, box, border_len


def _extent(hit: np.ndarray) -> np.ndarray:
    """(n, L) bool -> (n,) first-to-last True span along L (0 for rows without any)."""
    n = hit.shape[1]
    first = np.argmax(hit, axis=1)
    last = n - 1 - np.argmax(hit[:, ::-1], axis=1)
    return np.where(hit.any(axis=1), last - first + 1, 0).astype(np.int64)


def _check_lungs(lungs: np.ndarray) -> np.ndarray:
    arr = np.asarray(lungs)
    if arr.ndim not in (2, 3) or arr.size == 0:
        raise ValueError(f"lungs must be a non-empty (H, W) or (D, H, W) label map, got shape {arr.shape}")
    if arr.dtype.kind not in "biu":
        raise ValueError(f"lungs must be an integer or boolean label map, got dtype {arr.dtype}")
    low, high = int(arr.min()), int(arr.max())
    if low < 0 or high > 2:
        raise ValueError(f"lungs has values from {low} to {high}; allowed: 0 outside, 1 right lung, 2 left lung")
    return arr.view(np.uint8) if arr.dtype == bool else arr


def check_spacing(spacing: object, n: int) -> tuple[float, ...] | None:
    """``spacing`` as ``n`` positive floats (mm), None when None; ValueError naming the value otherwise."""
    if spacing is None:
        return None
    try:
        values = tuple(float(s) for s in spacing)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        values = ()
    if len(values) != n or not all(np.isfinite(v) and v > 0 for v in values):
        order = "(row mm, col mm)" if n == 2 else "(slice mm, row mm, col mm)"
        raise ValueError(f"spacing_mm must be None or {n} positive finite numbers {order}, got {spacing!r}")
    return values


def _finding(code: str, message: str) -> dict[str, str]:
    return {"code": code, "message": message}


def _num(x: float, limit: float, digits: int = 0) -> str:
    """``x`` with ``digits`` decimals, one more where it would read like ``limit`` (700.4 -> "700.4")."""
    text = f"{x:.{digits}f}"
    return f"{x:.{digits + 1}f}" if float(text) == float(f"{limit:.{digits}f}") else text


def _pct(x: float, limit: float | None = None) -> str:
    """A share as a percentage for a sentence: 0.0734 -> "7%"; with one decimal below 1 % or where
    whole percents would read like ``limit`` (0.6031 against 0.60 -> "60.3%")."""
    p = 100.0 * float(x)
    close = limit is not None and f"{p:.0f}" == f"{100.0 * limit:.0f}"
    return f"{p:.1f}%" if p < 1 or close else f"{p:.0f}%"
