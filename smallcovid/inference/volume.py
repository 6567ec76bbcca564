"""Whole-volume segmentation: 8-bit lesion probabilities and the one thresholding rule.

The app keeps a segmented volume as (D, H, W) uint8 probability levels (a quarter of
float32) so that its threshold slider can change without running the model again;
the CLI writes NIfTI masks from the same levels. Both threshold with
:func:`threshold_volume`, so a NIfTI mask from the app and one from
``python -m smallcovid predict`` are identical for the same model, volume and threshold.

Rounding (the documented rule)::

    level(x) = floor(255 * x + 0.5)          # round half up, in float64
    lesion   = level(p) >= level(threshold)

A voxel with ``p >= threshold`` is therefore always lesion (``level`` is monotone);
a voxel less than 1/255 below the threshold may be too when both round to the same
level. 2D masks (:meth:`~smallcovid.inference.predictor.ProbMaps.mask`) compare the
float probability directly (``p >= threshold``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from smallcovid.core.errors import SmallCovidError
from smallcovid.core.vocab import LESION_TYPES
from smallcovid.data.preprocess import Window, to_model_input
from smallcovid.io import Volume

PROB_LEVELS = 255  # uint8 level 255 is probability 1.0


def prob_levels(prob: np.ndarray) -> np.ndarray:
    """Float probabilities in [0, 1] (any shape) -> uint8 levels ``floor(255 * p + 0.5)``.

    Raises:
        SmallCovidError: values outside [0, 1] or NaN (the message gives the range found).
    """
    p = np.asarray(prob, dtype=np.float64)
    if p.size:
        low, high = float(p.min()), float(p.max())  # NaN propagates and fails the test below
        if not (0.0 <= low and high <= 1.0):
            raise SmallCovidError(f"probabilities must lie in [0, 1], got values from {low:g} to {high:g}")
    return np.floor(p * PROB_LEVELS + 0.5).astype(np.uint8)


def threshold_level(threshold: float) -> int:
    """The uint8 level a probability level must reach: ``floor(255 * threshold + 0.5)``.

    Raises:
        SmallCovidError: ``threshold`` is not a number in [0, 1].
    """
    try:
        t = float(threshold)
    except (TypeError, ValueError):
        raise SmallCovidError(f"threshold must be a number between 0 and 1, got {threshold!r}") from None
    if not (math.isfinite(t) and 0.0 <= t <= 1.0):
        raise SmallCovidError(f"threshold must be a number between 0 and 1, got {threshold!r}")
    return int(math.floor(t * PROB_LEVELS + 0.5))


def threshold_volume(prob: np.ndarray, threshold: float,
                     kind: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Lesion mask and type map of a volume (or slice) at ``threshold``, with the module's rounding.

    Args:
        prob: (D, H, W) lesion probabilities, either uint8 levels from :func:`prob_levels`
            or floats in [0, 1] (converted with :func:`prob_levels` first).
        threshold: probability threshold in [0, 1].
        kind: optional (D, H, W) uint8 most likely lesion type per voxel
            (1 ground-glass, 2 consolidation; see :mod:`smallcovid.core.vocab`).

    Returns:
        ``(mask, classes)``: mask (D, H, W) uint8 0/1; classes (D, H, W) uint8 with 0
        outside the mask and ``kind`` inside it, or None without ``kind``.

    Raises:
        SmallCovidError: a bad threshold, probability values or a ``kind`` whose shape
            or values do not fit.
    """
    arr = np.asarray(prob)
    levels = arr if arr.dtype == np.uint8 else prob_levels(arr)
    mask = (levels >= threshold_level(threshold)).astype(np.uint8)
    if kind is None:
        return mask, None
    kind = np.asarray(kind)
    if kind.shape != mask.shape:
        raise SmallCovidError(f"the lesion-type map has shape {kind.shape} but the probabilities {mask.shape}")
    if kind.size and not np.isin(kind, tuple(LESION_TYPES)).all():
        raise SmallCovidError(f"lesion types must be {' or '.join(map(str, LESION_TYPES))}, "
                              f"got {', '.join(map(str, np.unique(kind)[:8]))}")
    return mask, np.where(mask.astype(bool), kind, 0).astype(np.uint8)


@dataclass(frozen=True, eq=False)
class VolumeProbs:
    """A segmented volume, compact.

    Attributes:
        levels: (D, H, W) uint8 lesion probability levels (:func:`prob_levels`).
        kind: (D, H, W) uint8 most likely lesion type (1 or 2), or None when not kept.
    """

    levels: np.ndarray
    kind: np.ndarray | None

    def threshold(self, threshold: float) -> tuple[np.ndarray, np.ndarray | None]:
        """``(mask, classes)`` at ``threshold``: see :func:`threshold_volume`."""
        return threshold_volume(self.levels, threshold, self.kind)


def predict_volume(predictor, volume: Volume, window: Window | None = None, *, batch_size: int = 8,
                   keep_types: bool = True, progress: Callable[[int, int], None] | None = None) -> VolumeProbs:
    """Run ``predictor`` over every slice of ``volume``, keeping 8-bit probability levels.

    Model inputs are made one batch at a time (``to_model_input`` of each slice, HU
    windowed with ``window``), so memory stays at the (D, H, W) uint8 result.

    Args:
        predictor: a :class:`~smallcovid.inference.predictor.Predictor` (anything with
            ``predict_images(list of (H, W) float32 in [0, 1]) -> list of ProbMaps``).
        volume: the (D, H, W) scan.
        window: HU window for ``"hu"`` volumes (default: the lung preset).
        batch_size: slices per forward pass.
        keep_types: also keep the per-voxel lesion type (one more byte per voxel).
        progress: called as ``progress(done, total)`` after each batch.

    Returns:
        :class:`VolumeProbs` with arrays of the volume's shape (D, H, W).
    """
    n = len(volume)
    levels = np.zeros(volume.voxels.shape, np.uint8)
    kind = np.zeros(volume.voxels.shape, np.uint8) if keep_types else None
    for start in range(0, n, batch_size):
        ks = range(start, min(start + batch_size, n))
        maps = predictor.predict_images([to_model_input(volume.slice(k), window) for k in ks], batch_size=batch_size)
        for k, m in zip(ks, maps):
            levels[k] = prob_levels(m.lesion)
            if kind is not None:
                kind[k] = m.kind
        if progress is not None:
            progress(ks[-1] + 1, n)
    return VolumeProbs(levels, kind)
