"""The rows of a cross-validation summary: per fold (means of its validation slices), mean and
std over folds, and one record per slice (see :func:`smallcovid.training.cvsummary.summarise_folds`)."""

from __future__ import annotations

import numpy as np

from smallcovid.core.vocab import METRIC_NAMES


def slice_rows(result, fold: int) -> list[dict]:
    """One record per validation slice of ``fold``, scored by the fold model that held it out
    at the fold's threshold (chosen on the other folds): ``{"slice", "fold", "dice",
    "precision", "recall", "lesion_share"}`` (lesion_share: the ground truth's share of the
    slice's pixels, 0-1). Dice of a slice with no lesion follows the metrics' empty-mask rule."""
    c = result.counts
    area = (c.tp + c.fn) / np.maximum(c.tp + c.fn + c.fp + c.tn, 1)
    per = result.per_image
    return [{"slice": stem, "fold": fold, "dice": round(float(per["dice"][i]), 4),
             "precision": round(float(per["precision"][i]), 4), "recall": round(float(per["recall"][i]), 4),
             "lesion_share": round(float(area[i]), 4)} for i, stem in enumerate(result.stems)]


def fold_row(m: dict) -> dict:
    """Flatten one fold's metrics block (as in ``metrics.json``) into a table row of means."""
    row = {k: m["mean"][k] for k in METRIC_NAMES}
    row["pooled_dice"] = m["pooled"]["dice"]
    row["threshold"] = m["threshold"]
    for t, v in m.get("type_dice", {}).items():
        row[f"dice_{t}"] = v["mean"]
    return row


def mean_std(per_fold: list[dict], key: str) -> dict:
    """Mean and std over folds of each :func:`fold_row` column; None where no fold has a value."""
    rows = [fold_row(m[key]) for m in per_fold]
    out = {}
    for name in rows[0]:
        vals = np.array([np.nan if r.get(name) is None else r[name] for r in rows], dtype=float)
        if np.isnan(vals).all():
            out[name] = {"mean": None, "std": None}
        else:
            out[name] = {"mean": float(np.nanmean(vals)), "std": float(np.nanstd(vals))}
    return out
