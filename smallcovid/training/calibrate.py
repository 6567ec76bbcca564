"""Fit a model's probability calibration on out-of-fold predictions and measure it honestly.

The calibration that ships in the card is fitted on every fold's out-of-fold
maps. The figures reported beside it are nested: fold k's maps are calibrated by
a map fitted on the *other* folds only, exactly like the reported thresholds, so
no reported number was tuned on the images it is measured on.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Sequence

import numpy as np

from smallcovid.data.dataset import Sample
from smallcovid.inference.evaluation import best_threshold, evaluate_maps, threshold_sweep
from smallcovid.inference.predictor import ProbMaps
from smallcovid.models.calibration import (
    Calibration,
    expected_calibration_error,
    fit_operating_point,
    fit_platt,
    reliability_curve,
    sample_pixels,
)

log = logging.getLogger(__name__)

#: The probability every calibrated model's best out-of-fold threshold is mapped to (the paper's).
TARGET_THRESHOLD = 0.8


def calibrated_maps(maps: Sequence[ProbMaps], cal: Calibration) -> list[ProbMaps]:
    """The same maps with ``cal`` applied to the lesion probability (types unchanged)."""
    return [replace(m, lesion=cal.apply(m.lesion)) for m in maps]


def _fit(method: str, maps: Sequence[ProbMaps], samples: Sequence[Sample], target: float) -> Calibration:
    p, t = sample_pixels([m.lesion for m in maps], [s.mask for s in samples])
    if method == "platt":
        return fit_platt(p, t)
    if method == "operating-point":
        raw = best_threshold(threshold_sweep(maps, samples))
        return fit_operating_point(p, t, raw_threshold=raw, target=target)
    raise ValueError(f"calibration method must be platt or operating-point, got {method!r}")


def _best_threshold(method: str, maps: Sequence[ProbMaps], samples: Sequence[Sample], target: float) -> float:
    """The threshold to use on calibrated maps: the target for operating-point, else the best-Dice one."""
    return target if method == "operating-point" else best_threshold(threshold_sweep(maps, samples))


def calibrate_folds(
    fold_maps: Sequence[Sequence[ProbMaps]],
    fold_samples: Sequence[Sequence[Sample]],
    *,
    method: str = "platt",
    target: float = TARGET_THRESHOLD,
) -> dict:
    """Calibration for a model card from k folds of out-of-fold predictions.

    Args:
        fold_maps: per fold, the fold model's maps of that fold's validation slices.
        fold_samples: per fold, those slices (with masks), in the same order.
        method: ``platt`` (default: calibrated probabilities) or ``operating-point`` (see
            :mod:`smallcovid.models.calibration`).
        target: the calibrated probability the best threshold maps to (operating-point).

    Returns:
        A JSON-ready dict: the fitted ``a``, ``b``, ``method``; ``threshold``, the
        threshold with the best out-of-fold Dice on calibrated maps (``target`` for
        operating-point); ``target_threshold``; nested ``ece_before`` / ``ece_after``
        / ``ece_platt`` (pooled over all out-of-fold pixels, 15 bins); per fold
        ``dice_at_target`` and ``dice_at_threshold`` (a threshold chosen on the
        other folds' calibrated maps) after nested calibration; and
        ``reliability`` curves before and after.
    """
    if len(fold_maps) != len(fold_samples) or len(fold_maps) < 2:
        raise ValueError(f"calibration needs at least 2 folds of maps and samples, got {len(fold_maps)}")
    all_maps = [m for ms in fold_maps for m in ms]
    all_samples = [s for ss in fold_samples for s in ss]
    final = _fit(method, all_maps, all_samples, target)

    raw_p, nested_p, platt_p, truth, per_fold = [], [], [], [], []
    for k in range(len(fold_maps)):
        others_m = [m for j, ms in enumerate(fold_maps) if j != k for m in ms]
        others_s = [s for j, ss in enumerate(fold_samples) if j != k for s in ss]
        cal_k = _fit(method, others_m, others_s, target)
        platt_k = cal_k if method == "platt" else _fit("platt", others_m, others_s, target)
        maps_k = calibrated_maps(fold_maps[k], cal_k)
        thr_k = _best_threshold(method, calibrated_maps(others_m, cal_k), others_s, target)
        at_target = evaluate_maps(maps_k, fold_samples[k], target).summary.mean["dice"]
        at_thr = evaluate_maps(maps_k, fold_samples[k], thr_k).summary.mean["dice"]
        per_fold.append({"fold": k + 1, "a": cal_k.a, "b": cal_k.b, "threshold": thr_k,
                         "dice_at_target": float(at_target), "dice_at_threshold": float(at_thr)})
        p, t = sample_pixels([m.lesion for m in fold_maps[k]], [s.mask for s in fold_samples[k]], seed=k)
        raw_p.append(p)
        truth.append(t)
        nested_p.append(cal_k.apply(p))
        platt_p.append(platt_k.apply(p))
    raw, nested, platt, y = (np.concatenate(v) for v in (raw_p, nested_p, platt_p, truth))
    dice = np.array([f["dice_at_target"] for f in per_fold])
    tuned = np.array([f["dice_at_threshold"] for f in per_fold])
    out = {
        **final.to_dict(),
        "threshold": _best_threshold(method, calibrated_maps(all_maps, final), all_samples, target),
        "target_threshold": target,
        "fitted_on": "out-of-fold predictions of every fold",
        "ece_before": expected_calibration_error(raw, y),
        "ece_after": expected_calibration_error(nested, y),
        "ece_platt": expected_calibration_error(platt, y),
        "dice_at_target": {"mean": float(dice.mean()), "std": float(dice.std())},
        "dice_at_threshold": {"mean": float(tuned.mean()), "std": float(tuned.std())},
        "per_fold": per_fold,
        "reliability": {"before": reliability_curve(raw, y), "after": reliability_curve(nested, y)},
    }
    log.info("calibration %s: a=%.3f b=%.3f, threshold %.2f, ECE %.4f -> %.4f", method, final.a, final.b,
             out["threshold"], out["ece_before"], out["ece_after"])
    return out
