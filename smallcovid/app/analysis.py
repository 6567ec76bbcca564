"""Numbers the app shows: lesion quantities, per-model metric rows, Table 1, disagreement ranking.

Masks are (H, W) bool; type maps (H, W) uint8 (0 background, 1 ground-glass,
2 consolidation); spacing is (row mm, col mm). Metric values come from
:mod:`smallcovid.inference.metrics`, so they follow its empty-mask convention: prediction
and truth both empty -> Dice 1; exactly one empty -> Dice 0.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Mapping, Sequence

import numpy as np
from scipy import ndimage

from smallcovid.core.errors import SmallCovidError
from smallcovid.core.vocab import LESION_TYPES, TABLE_METRICS
from smallcovid.inference.metrics import confusion_counts, scores

EMPTY_MASK_NOTE = (
    "Empty-mask convention: when prediction and ground truth are both empty, Dice and IoU are 1; "
    "when exactly one of them is empty, they are 0."
)


@dataclass(frozen=True)
class LesionStats:
    """Quantities of one predicted lesion mask.

    Attributes:
        area_px: lesion pixels.
        area_mm2: lesion area in mm² (None without pixel spacing).
        percent: lesion share of the whole image, in %.
        n_lesions: connected lesion regions (8-connectivity).
        type_area_px: lesion type name -> pixels (empty without a type map).
        type_area_mm2: lesion type name -> mm² (empty without spacing or types).
    """

    area_px: int
    area_mm2: float | None
    percent: float
    n_lesions: int
    type_area_px: dict[str, int]
    type_area_mm2: dict[str, float]

    def to_dict(self) -> dict:
        return asdict(self)


def lesion_stats(
    mask: np.ndarray, types: np.ndarray | None = None, spacing: tuple[float, float] | None = None
) -> LesionStats:
    """Area, share of the image, number of separate lesions and per-type areas of ``mask``."""
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 2 or mask.size == 0:
        raise SmallCovidError(f"lesion statistics need a non-empty (H, W) mask, got shape {mask.shape}")
    if types is not None and np.shape(types) != mask.shape:
        raise SmallCovidError(f"the type map {np.shape(types)} does not match the mask {mask.shape}")
    px_mm2 = None if spacing is None else float(spacing[0]) * float(spacing[1])
    _, n = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
    area = int(mask.sum())
    type_px: dict[str, int] = {}
    if types is not None:
        t = np.asarray(types)
        type_px = {name: int(((t == k) & mask).sum()) for k, name in LESION_TYPES.items()}
    return LesionStats(
        area_px=area,
        area_mm2=None if px_mm2 is None else area * px_mm2,
        percent=100.0 * area / mask.size,
        n_lesions=int(n),
        type_area_px=type_px,
        type_area_mm2={} if px_mm2 is None else {k: v * px_mm2 for k, v in type_px.items()},
    )


def stats_row(label: str, stats: LesionStats, seconds: float | None = None) -> dict:
    """One flat table row (column name -> value) of :class:`LesionStats` for ``label``."""
    row: dict = {"model": label, "lesion area (px)": stats.area_px}
    if stats.area_mm2 is not None:
        row["lesion area (mm²)"] = round(stats.area_mm2, 1)
    row["% of image"] = round(stats.percent, 2)
    row["separate lesions"] = stats.n_lesions
    for name, px in stats.type_area_px.items():
        row[f"{name} (px)"] = px
        if name in stats.type_area_mm2:
            row[f"{name} (mm²)"] = round(stats.type_area_mm2[name], 1)
    if seconds is not None:
        row["inference (ms)"] = round(1000.0 * seconds, 1)
    return row


def metric_row(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Dice, precision, recall and IoU of one (H, W) prediction against its truth."""
    pred, truth = np.asarray(pred, dtype=bool), np.asarray(truth, dtype=bool)
    if pred.shape != truth.shape:
        raise SmallCovidError(f"the ground-truth mask is {truth.shape[::-1]} (width x height) but the "
                              f"prediction is {pred.shape[::-1]}")
    s = scores(confusion_counts(pred, truth))
    return {k: float(s[k][0]) for k in TABLE_METRICS}


def metrics_table(preds: Mapping[str, np.ndarray], truth: np.ndarray) -> list[dict]:
    """Rows ``{"model": label, "dice": .., "precision": .., "recall": .., "iou": ..}`` per model."""
    return [{"model": label, **metric_row(m, truth)} for label, m in preds.items()]


def best_label(rows: Sequence[Mapping], key: str = "dice") -> str | None:
    """Label of the row with the highest ``key`` (first on ties); None for no rows."""
    if not rows:
        return None
    return max(rows, key=lambda r: (r[key], -list(rows).index(r)))["model"]


def table1_rows(results: Mapping[str, object], paper: Mapping[str, Sequence[float]] | None = None) -> list[dict]:
    """The paper's Table 1 from :class:`smallcovid.inference.evaluation.EvalResult` per model label.

    Columns: model, n, threshold, ``<metric>`` mean, ``<metric> ±`` std, ``pooled <metric>``
    for Dice / precision / recall / IoU; ``<type> Dice`` (mean over images containing that
    lesion type) when the set has types; plus ``paper dice/precision/recall`` when
    ``paper`` has the model's registry name (the result's ``extra["name"]``).
    """
    rows = []
    for label, r in results.items():
        s = r.summary  # type: ignore[attr-defined]
        row: dict = {"model": label, "n": s.n_images, "threshold": round(r.threshold, 3)}  # type: ignore[attr-defined]
        for k in TABLE_METRICS:
            row[k] = s.mean[k]
            row[f"{k} ±"] = s.std[k]
        for k in TABLE_METRICS:
            row[f"pooled {k}"] = s.pooled[k]
        for t, v in getattr(r, "type_dice", {}).items():
            row[f"{t} Dice"] = v["mean"]
        name = getattr(r, "extra", {}).get("name", label)
        if paper is not None and name in paper:
            for k, v in zip(("dice", "precision", "recall"), paper[name]):
                row[f"paper {k}"] = v
        rows.append(row)
    return rows


def format_mean_std(mean: float, std: float, digits: int = 3) -> str:
    """``0.712 ± 0.104``."""
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def most_disagreed(per_image_dice: Mapping[str, Sequence[float]], k: int = 4) -> list[int]:
    """Indices of the ``k`` images whose Dice varies most across models (largest std first).

    Args:
        per_image_dice: model label -> (N,) per-image Dice, same image order for every model.
    """
    arrays = [np.asarray(v, dtype=float) for v in per_image_dice.values()]
    if not arrays:
        return []
    n = len(arrays[0])
    if any(len(a) != n for a in arrays):
        raise SmallCovidError("every model must be scored on the same images")
    spread = np.std(np.stack(arrays), axis=0) if len(arrays) > 1 else np.zeros(n)
    order = np.argsort(-spread, kind="stable")
    return [int(i) for i in order[: max(0, int(k))]]


class CompactMaps:
    """A memory-lean stand-in for :class:`smallcovid.inference.predictor.ProbMaps` (same ``mask`` / ``type_map``).

    Keeps the (H, W) float32 lesion probability and only the argmax lesion type
    (H, W) uint8 (1 or 2) instead of three float maps: about a quarter of the memory.
    """

    __slots__ = ("lesion", "kind", "seconds")

    def __init__(self, maps) -> None:
        self.lesion = np.asarray(maps.lesion, dtype=np.float32)
        self.kind = (np.argmax(maps.types[1:], axis=0) + 1).astype(np.uint8)
        self.seconds = float(maps.seconds)

    def mask(self, threshold: float) -> np.ndarray:
        """(H, W) bool: p >= threshold."""
        return self.lesion >= threshold

    def type_map(self, threshold: float) -> np.ndarray:
        """(H, W) uint8: 0 outside the mask, else 1 (ground-glass) or 2 (consolidation)."""
        return np.where(self.mask(threshold), self.kind, 0).astype(np.uint8)
