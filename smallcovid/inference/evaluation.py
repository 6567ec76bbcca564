"""Evaluate probability maps against labeled slices (the paper's Table 1 and more).

All figures are computed at each slice's own resolution, from the same
:class:`~smallcovid.inference.predictor.ProbMaps` the app and the CLI use, so a Dice shown
anywhere in SmallCovid is the same number for the same image and threshold.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from smallcovid.core.vocab import LESION_TYPES
from smallcovid.data.dataset import LabeledSet, Sample
from smallcovid.inference.predictor import Predictor, ProbMaps
from smallcovid.inference.metrics import Counts, Summary, confusion_counts, scores, summarize

DEFAULT_SWEEP = tuple(round(t, 2) for t in np.arange(0.1, 0.96, 0.05))


@dataclass(frozen=True, eq=False)
class EvalResult:
    """Metrics of one model on one labeled set at one threshold.

    Attributes:
        stems: image identifiers, in order.
        counts: per-image confusion counts of the binary lesion mask.
        summary: mean / std / pooled Dice, precision, recall, IoU, specificity.
        per_image: metric name -> (N,) array.
        type_dice: lesion type -> {"mean", "std", "pooled", "n"}; the mean is over
            images whose ground truth contains that type (empty when unlabeled).
        threshold: probability threshold used.
    """

    stems: list[str]
    counts: Counts
    summary: Summary
    per_image: dict[str, np.ndarray]
    type_dice: dict[str, dict[str, float]]
    threshold: float
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "threshold": self.threshold,
            **self.summary.to_dict(),
            "type_dice": self.type_dice,
            "per_image": {
                s: {k: float(v[i]) for k, v in self.per_image.items()} for i, s in enumerate(self.stems)
            },
        }


def evaluate_maps(maps: Sequence[ProbMaps], samples: Sequence[Sample], threshold: float) -> EvalResult:
    """Score probability maps (one per sample, same size as its mask) at ``threshold``."""
    if len(maps) != len(samples):
        raise ValueError(f"{len(maps)} predictions for {len(samples)} samples")
    parts = []
    type_parts: dict[int, list[Counts]] = {t: [] for t in LESION_TYPES}
    for m, s in zip(maps, samples):
        if m.lesion.shape != s.mask.shape:
            raise ValueError(f"{s.stem}: prediction {m.lesion.shape} vs mask {s.mask.shape}")
        parts.append(confusion_counts(m.mask(threshold), s.mask))
        if s.types is not None:
            pred_types = m.type_map(threshold)
            for t in LESION_TYPES:
                type_parts[t].append(confusion_counts(pred_types == t, s.types == t))
    counts = Counts.concat(parts)
    type_dice = {}
    for t, cs in type_parts.items():
        if not cs:
            continue
        c = Counts.concat(cs)
        present = (c.tp + c.fn) > 0
        d = scores(c)["dice"][present]
        type_dice[LESION_TYPES[t]] = {
            # None (JSON null) when no image contains the type: strict JSON has no NaN.
            "mean": float(d.mean()) if d.size else None,
            "std": float(d.std()) if d.size else None,
            "pooled": float(scores(c.pooled())["dice"][0]),
            "n": int(present.sum()),
        }
    return EvalResult(
        stems=[s.stem for s in samples],
        counts=counts,
        summary=summarize(counts),
        per_image=scores(counts),
        type_dice=type_dice,
        threshold=float(threshold),
    )


def predict_set(
    predictor: Predictor,
    data: LabeledSet,
    progress: Callable[[int, int], None] | None = None,
    batch_size: int = 4,
) -> list[ProbMaps]:
    """Probability maps for every sample of ``data`` (``progress(done, total)`` after each batch).

    Each slice goes through :func:`~smallcovid.inference.framing.segment_slice`, as in the app
    and ``predict``: framed on its lungs, lesions only inside the grown lung mask, so that the
    figures here are those of every other output.
    """
    from smallcovid.inference.framing import segment_slice
    from smallcovid.io import Slice

    maps: list[ProbMaps] = []
    for start in range(0, len(data), batch_size):
        chunk = data.samples[start : start + batch_size]
        maps.extend(segment_slice(predictor, Slice(s.image, "display", None, s.stem))[0] for s in chunk)
        if progress is not None:
            progress(len(maps), len(data))
    return maps


def evaluate(predictor: Predictor, data: LabeledSet, threshold: float | None = None) -> EvalResult:
    """Predict and score ``data`` with the predictor's (or the given) threshold."""
    thr = predictor.threshold if threshold is None else threshold
    return evaluate_maps(predict_set(predictor, data), data.samples, thr)


def threshold_sweep(
    maps: Sequence[ProbMaps], samples: Sequence[Sample], thresholds: Sequence[float] = DEFAULT_SWEEP
) -> dict[float, float]:
    """Mean per-image Dice at each threshold."""
    out = {}
    for t in thresholds:
        parts = [confusion_counts(m.mask(t), s.mask) for m, s in zip(maps, samples)]
        out[float(t)] = float(scores(Counts.concat(parts))["dice"].mean())
    return out


def best_threshold(sweep: dict[float, float]) -> float:
    """Threshold with the highest mean Dice (ties -> the one closest to 0.5)."""
    return max(sweep, key=lambda t: (round(sweep[t], 6), -abs(t - 0.5)))
