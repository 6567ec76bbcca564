"""Lesion and lung volumes from label maps (numpy; JSON-safe reports).

Inputs are label maps of equal shape:

* ``classes``: 0 background, 1 ground-glass opacity (GGO), 2 consolidation.
* ``lungs``: 0 outside the lungs, 1 right lung, 2 left lung (patient's right/left).

Counting policy:

* ``lesion_*`` counts **every** lesion voxel (GGO + consolidation), also those outside
  the lung mask (a lung mask that misses a dense consolidation must not hide it).
* ``involvement_pct`` = lesion voxels inside the lungs / lung voxels x 100, i.e. lesion
  outside the lung mask does not count; it is ``None`` when the lung mask is empty.
* ``per_lung[side]["lesion_ml"]`` counts lesion inside that lung only, so the two sides
  can add up to less than ``lesion_ml``.

Lung quality control (:func:`smallcovid.inference.qc.lung_qc`): every report carries ``qc``,
a list of ``{"code", "message"}`` findings about the lung mask (empty when it looks
plausible), ``reliable`` (False when ``qc`` has any finding) and ``unreliable``: the keys
built on the lung mask (``lung_ml`` / ``lung_mm2``, ``involvement_pct``, ``per_lung`` and,
in a volume, ``slices.lung_mm2``) when ``reliable`` is False, else empty. The numbers stay
in the report; ``unreliable`` says which ones not to trust.

Units: volumes in mL (voxel count x x*y*z mm^3 / 1000), areas in mm^2, rounded to 0.01;
percentages rounded to 0.01. When the spacing is unknown (``None``) the same keys hold
voxel / pixel counts (ints) and ``units`` says so: ``{"volume": "voxels", "area":
"pixels"}`` instead of ``{"volume": "ml", "area": "mm2"}``. All numbers are plain
Python ``int`` / ``float`` / ``None``, so ``json.dumps`` works on the result.
"""

from __future__ import annotations

import logging
from typing import Any, Sequence

import numpy as np

from smallcovid.inference.qc import check_spacing as _check_spacing
from smallcovid.inference.qc import lung_qc, qc_unreliable

log = logging.getLogger(__name__)

_SIDES = (("right", 1), ("left", 2))
_QC_KEYS = ("qc", "reliable", "unreliable")
_VOLUME_KEYS = ("model", "threshold", "spacing_mm", "units", "lung_ml", "lesion_ml", "ggo_ml",
                "consolidation_ml", "involvement_pct", "per_lung", "slices", "largest_lesion_slice", *_QC_KEYS)
_SLICE_KEYS = ("model", "threshold", "spacing_mm", "units", "lung_mm2", "lesion_mm2", "ggo_mm2",
               "consolidation_mm2", "involvement_pct", "per_lung", *_QC_KEYS)
#: Report keys built on the lung mask: listed in ``unreliable`` when lung QC has findings.
LUNG_KEYS_VOLUME = ("lung_ml", "involvement_pct", "per_lung", "slices.lung_mm2")
LUNG_KEYS_SLICE = ("lung_mm2", "involvement_pct", "per_lung")


def spacing_xyz(volume_spacing: tuple[float, float, float] | None) -> tuple[float, float, float] | None:
    """``Volume.spacing`` (slice mm, row mm, col mm) -> ``spacing_mm`` (x = col, y = row, z = slice)."""
    if volume_spacing is None:
        return None
    z, y, x = (float(s) for s in volume_spacing)
    return (x, y, z)


def volume_report(classes: np.ndarray, lungs: np.ndarray,
                  spacing_mm: tuple[float, float, float] | None, model: str, threshold: float,
                  extra: dict | None = None, *, qc: Sequence[dict] | None = None) -> dict[str, Any]:
    """Lung and lesion volumes of one scan.

    Args:
        classes: (Z, H, W) integer lesion map, values 0/1/2 (see module docstring).
        lungs: (Z, H, W) integer lung map, values 0/1 right/2 left.
        spacing_mm: (x, y, z) voxel size in mm, x along W (columns), y along H (rows),
            z between slices (use :func:`spacing_xyz` for a ``Volume.spacing``); None if unknown.
        model: model name, copied into the report.
        threshold: probability threshold used for the lesion map, copied.
        extra: more top-level keys (e.g. the input's name); may not override report keys.
        qc: lung QC findings already made on the whole lung map (pass them when ``lungs`` is
            cut to a region: the border and coverage checks need the full slices); None runs
            :func:`~smallcovid.inference.qc.lung_qc` on ``lungs``.

    Returns:
        ``model``, ``threshold``, ``spacing_mm`` ([x, y, z] or None), ``units``, ``lung_ml``,
        ``lesion_ml``, ``ggo_ml``, ``consolidation_ml``, ``involvement_pct``, ``per_lung``
        ({"right"|"left": {"lung_ml", "lesion_ml", "involvement_pct"}}), ``slices`` (one
        {"index", "lesion_mm2", "lung_mm2"} per slice k = 0..Z-1),
        ``largest_lesion_slice`` (index of the slice with the most lesion area, the lowest on a
        tie; None when there is no lesion), ``qc``, ``reliable`` and ``unreliable`` (see the
        module docstring), plus the ``extra`` keys.

    Raises:
        ValueError: shapes differ or are not 3D, values out of range, bad spacing or ``extra``.
    """
    classes, lungs = _check_maps(classes, lungs, 3)
    spacing = _check_spacing(spacing_mm, 3)
    vol = None if spacing is None else spacing[0] * spacing[1] * spacing[2] / 1000.0
    area = None if spacing is None else spacing[0] * spacing[1]
    lesion = classes > 0
    in_lung = lungs > 0
    report: dict[str, Any] = {
        "model": str(model), "threshold": float(threshold),
        "spacing_mm": None if spacing is None else list(spacing),
        "units": {"volume": "voxels", "area": "pixels"} if spacing is None else {"volume": "ml", "area": "mm2"},
        "lung_ml": _scale(np.count_nonzero(in_lung), vol),
        "lesion_ml": _scale(np.count_nonzero(lesion), vol),
        "ggo_ml": _scale(np.count_nonzero(classes == 1), vol),
        "consolidation_ml": _scale(np.count_nonzero(classes == 2), vol),
        "involvement_pct": _pct(np.count_nonzero(lesion & in_lung), np.count_nonzero(in_lung)),
        "per_lung": _per_lung(lesion, lungs, vol, "ml"),
    }
    lesion_px = np.count_nonzero(lesion, axis=(1, 2))
    lung_px = np.count_nonzero(in_lung, axis=(1, 2))
    report["slices"] = [{"index": k, "lesion_mm2": _scale(les, area), "lung_mm2": _scale(lun, area)}
                        for k, (les, lun) in enumerate(zip(lesion_px.tolist(), lung_px.tolist()))]
    report["largest_lesion_slice"] = int(np.argmax(lesion_px)) if lesion_px.size and lesion_px.max() > 0 else None
    if qc is None:
        qc = lung_qc(lungs, None if spacing is None else (spacing[2], spacing[1], spacing[0]))
    report.update(_qc_keys(qc, LUNG_KEYS_VOLUME))
    return _merge(report, extra, _VOLUME_KEYS)


def slice_report(classes2d: np.ndarray, lungs2d: np.ndarray, spacing_mm: tuple[float, float] | None = None,
                 model: str | None = None, threshold: float | None = None,
                 extra: dict | None = None) -> dict[str, Any]:
    """Lung and lesion areas of one 2D slice.

    Args:
        classes2d: (H, W) integer lesion map, values 0/1/2.
        lungs2d: (H, W) integer lung map, values 0/1 right/2 left.
        spacing_mm: (x, y) pixel size in mm (x along W, y along H), or None if unknown.
        model, threshold: copied into the report (None when not given).
        extra: more top-level keys; may not override report keys.

    Returns:
        ``model``, ``threshold``, ``spacing_mm``, ``units``, ``lung_mm2``, ``lesion_mm2``,
        ``ggo_mm2``, ``consolidation_mm2`` (pixel counts when the spacing is unknown),
        ``involvement_pct`` (lesion inside the lungs as % of lung area, None without lung),
        ``per_lung`` ({"right"|"left": {"lung_mm2", "lesion_mm2", "involvement_pct"}}) and
        ``qc``, ``reliable``, ``unreliable`` (lung QC of ``lungs2d``; see the module docstring).
    """
    classes, lungs = _check_maps(classes2d, lungs2d, 2)
    spacing = _check_spacing(spacing_mm, 2)
    area = None if spacing is None else spacing[0] * spacing[1]
    lesion = classes > 0
    in_lung = lungs > 0
    report: dict[str, Any] = {
        "model": None if model is None else str(model),
        "threshold": None if threshold is None else float(threshold),
        "spacing_mm": None if spacing is None else list(spacing),
        "units": {"area": "pixels"} if spacing is None else {"area": "mm2"},
        "lung_mm2": _scale(np.count_nonzero(in_lung), area),
        "lesion_mm2": _scale(np.count_nonzero(lesion), area),
        "ggo_mm2": _scale(np.count_nonzero(classes == 1), area),
        "consolidation_mm2": _scale(np.count_nonzero(classes == 2), area),
        "involvement_pct": _pct(np.count_nonzero(lesion & in_lung), np.count_nonzero(in_lung)),
        "per_lung": _per_lung(lesion, lungs, area, "mm2"),
    }
    report.update(_qc_keys(lung_qc(lungs, None if spacing is None else (spacing[1], spacing[0])), LUNG_KEYS_SLICE))
    return _merge(report, extra, _SLICE_KEYS)


def volume_dice(pred_mask: np.ndarray, true_mask: np.ndarray) -> float:
    """Dice 2|P & T| / (|P| + |T|) of two binary masks of any equal shape (nonzero = foreground).

    Policy as in :mod:`smallcovid.inference.metrics`: both empty -> 1.0; exactly one
    empty -> 0.0.
    """
    p = np.asarray(pred_mask) != 0
    t = np.asarray(true_mask) != 0
    if p.shape != t.shape:
        raise ValueError(f"volume_dice: prediction shape {p.shape} differs from truth shape {t.shape}")
    total = np.count_nonzero(p) + np.count_nonzero(t)
    if total == 0:
        return 1.0
    return float(2.0 * np.count_nonzero(p & t) / total)


# ------------------------------------------------------------------ helpers

def _check_maps(classes: np.ndarray, lungs: np.ndarray, ndim: int) -> tuple[np.ndarray, np.ndarray]:
    shape = "(Z, H, W)" if ndim == 3 else "(H, W)"
    out = []
    for label, arr, top, allowed in (("classes", classes, 2, "0 background, 1 ground-glass, 2 consolidation"),
                                     ("lungs", lungs, 2, "0 outside, 1 right lung, 2 left lung")):
        arr = np.asarray(arr)
        if arr.ndim != ndim:
            raise ValueError(f"{label} must be a {shape} array, got shape {arr.shape}")
        if arr.dtype.kind not in "biu":
            raise ValueError(f"{label} must be an integer or boolean label map, got dtype {arr.dtype}")
        if arr.size and (int(arr.min()) < 0 or int(arr.max()) > top):
            raise ValueError(f"{label} has values from {int(arr.min())} to {int(arr.max())}; allowed: {allowed}")
        out.append(arr)
    if out[0].shape != out[1].shape:
        raise ValueError(f"classes shape {out[0].shape} differs from lungs shape {out[1].shape}")
    return out[0], out[1]


def _scale(count: int | np.integer, unit: float | None) -> int | float:
    """A count as-is (unknown spacing) or times ``unit``, rounded to 0.01."""
    return int(count) if unit is None else round(float(count) * unit, 2)


def _pct(part: int | np.integer, whole: int | np.integer) -> float | None:
    return None if int(whole) == 0 else round(100.0 * int(part) / int(whole), 2)


def _per_lung(lesion: np.ndarray, lungs: np.ndarray, unit: float | None, suffix: str) -> dict[str, dict]:
    out = {}
    for side, value in _SIDES:
        lung = lungs == value
        n_lung, n_lesion = np.count_nonzero(lung), np.count_nonzero(lesion & lung)
        out[side] = {f"lung_{suffix}": _scale(n_lung, unit), f"lesion_{suffix}": _scale(n_lesion, unit),
                     "involvement_pct": _pct(n_lesion, n_lung)}
    return out


def _qc_keys(qc: Sequence[dict], lung_keys: tuple[str, ...]) -> dict[str, Any]:
    """``qc`` (plain dicts of str), ``reliable`` and ``unreliable`` for a report."""
    findings = [{"code": str(f["code"]), "message": str(f["message"])} for f in qc]
    bad = qc_unreliable(findings)
    return {"qc": findings, "reliable": not bad, "unreliable": list(lung_keys) if bad else []}


def _merge(report: dict[str, Any], extra: dict | None, reserved: tuple[str, ...]) -> dict[str, Any]:
    if not extra:
        return report
    clash = sorted(set(extra) & set(reserved))
    if clash:
        raise ValueError(f"extra may not override report keys, got {', '.join(map(str, clash))}")
    report.update({str(k): _plain(v) for k, v in extra.items()})
    return report


def _plain(value: Any) -> Any:
    """numpy scalars/arrays inside ``extra`` -> plain Python values (recursively)."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
