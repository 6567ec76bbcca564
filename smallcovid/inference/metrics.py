"""Segmentation metrics from confusion counts (Dice, precision, recall, IoU, specificity).

Counts come from ``segmentation_models_pytorch.metrics.get_stats``; the ratios are
computed here so that the empty-mask policy is explicit:

* Dice and IoU: both prediction and truth empty -> 1; exactly one empty -> 0.
* Precision: no predicted lesion pixels -> 1 if the truth is empty too, else 0.
* Recall: no true lesion pixels -> 1 if nothing was predicted, else 0.
* Specificity: no true background pixels -> 1 if no false positives, else 0.

Per-image figures are averaged over images (mean +- std); "pooled" figures sum the
counts over all images first, which weights large lesions more.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from segmentation_models_pytorch.metrics import get_stats

from smallcovid.core.vocab import METRIC_NAMES  # noqa: F401  (the keys of scores(); re-exported)


@dataclass(frozen=True)
class Counts:
    """Pixel confusion counts, one entry per image (arrays of shape (N,), int64)."""

    tp: np.ndarray
    fp: np.ndarray
    fn: np.ndarray
    tn: np.ndarray

    def pooled(self) -> "Counts":
        """Counts summed over images, as a length-1 ``Counts``."""
        return Counts(*(np.array([x.sum()], dtype=np.int64) for x in (self.tp, self.fp, self.fn, self.tn)))

    @staticmethod
    def concat(parts: list["Counts"]) -> "Counts":
        """Join per-image counts of several batches."""
        return Counts(*(np.concatenate([getattr(p, k) for p in parts]) for k in ("tp", "fp", "fn", "tn")))


def confusion_counts(pred: np.ndarray | torch.Tensor, truth: np.ndarray | torch.Tensor) -> Counts:
    """Per-image confusion counts of two binary masks.

    Args:
        pred: (N, H, W) or (H, W) boolean / {0, 1} prediction.
        truth: same shape, boolean / {0, 1} ground truth.
    """
    p = torch.as_tensor(np.asarray(pred)).bool()
    t = torch.as_tensor(np.asarray(truth)).bool()
    if p.shape != t.shape:
        raise ValueError(f"prediction shape {tuple(p.shape)} differs from truth shape {tuple(t.shape)}")
    if p.ndim == 2:
        p, t = p[None], t[None]
    # get_stats wants (N, C, ...) with C=1 for binary mode.
    tp, fp, fn, tn = get_stats(p[:, None].long(), t[:, None].long(), mode="binary")
    return Counts(*(x[:, 0].numpy().astype(np.int64) for x in (tp, fp, fn, tn)))


def _ratio(num: np.ndarray, den: np.ndarray, empty_value: np.ndarray) -> np.ndarray:
    num = num.astype(np.float64)
    den = den.astype(np.float64)
    out = np.where(den > 0, num / np.where(den > 0, den, 1.0), empty_value)
    return out


def scores(c: Counts) -> dict[str, np.ndarray]:
    """Per-entry metric arrays (shape (N,)) from counts, with the module's empty policy."""
    tp, fp, fn, tn = c.tp, c.fp, c.fn, c.tn
    both_empty = ((tp + fp + fn) == 0).astype(np.float64)
    return {
        "dice": _ratio(2 * tp, 2 * tp + fp + fn, both_empty),
        "precision": _ratio(tp, tp + fp, (fn == 0).astype(np.float64)),
        "recall": _ratio(tp, tp + fn, (fp == 0).astype(np.float64)),
        "iou": _ratio(tp, tp + fp + fn, both_empty),
        "specificity": _ratio(tn, tn + fp, (fp == 0).astype(np.float64)),
    }


@dataclass(frozen=True)
class Summary:
    """Mean, standard deviation (over images) and pooled value of each metric."""

    mean: dict[str, float]
    std: dict[str, float]
    pooled: dict[str, float]
    n_images: int

    def to_dict(self) -> dict:
        return {"mean": self.mean, "std": self.std, "pooled": self.pooled, "n_images": self.n_images}


def summarize(c: Counts) -> Summary:
    """Mean +- std over images and pooled figures for every metric in ``METRIC_NAMES``."""
    per = scores(c)
    pooled = scores(c.pooled())
    return Summary(
        mean={k: float(v.mean()) for k, v in per.items()},
        std={k: float(v.std()) for k, v in per.items()},
        pooled={k: float(v[0]) for k, v in pooled.items()},
        n_images=int(len(c.tp)),
    )


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """Dice of one binary mask pair (H, W), with the empty-mask policy above."""
    return float(scores(confusion_counts(pred, truth))["dice"][0])


def type_dice(pred_types: np.ndarray, true_types: np.ndarray, lesion_type: int) -> float:
    """Dice of one lesion type (1 ground-glass, 2 consolidation) for one image (H, W)."""
    return dice(pred_types == lesion_type, true_types == lesion_type)
