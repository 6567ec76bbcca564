"""Whole-volume segmentation: the one volume pipeline, 8-bit lesion probabilities, the one thresholding rule.

:func:`segment_volume` is the pipeline the CLI and the app share: lungs once for the
volume, each slice cropped to its lungs (:mod:`smallcovid.inference.framing`), HU in
the model's input window, batches through the model, and a :class:`VolumeResult` of
(D, H, W) uint8 arrays: lesion probability levels (a quarter of float32, so that a
threshold slider can change without running the model again), lesion types and lung
labels, with :meth:`VolumeResult.report` for the quantities. Both threshold with
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
from smallcovid.data.preprocess import Window, input_window, to_model_input
from smallcovid.inference.framing import Box, lungs_for, volume_boxes
from smallcovid.inference.lesionzone import LesionZone
from smallcovid.inference.qc import lung_qc
from smallcovid.inference.quantify import spacing_xyz, volume_report
from smallcovid.io import Slice, Volume
from smallcovid.io.orient import from_canonical, to_canonical

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
    hit = levels >= threshold_level(threshold)
    mask = hit.view(np.uint8)  # 0/1 without a copy
    if kind is None:
        return mask, None
    kind = np.asarray(kind)
    if kind.shape != mask.shape:
        raise SmallCovidError(f"the lesion-type map has shape {kind.shape} but the probabilities {mask.shape}")
    if kind.size:
        if kind.dtype.kind in "iu":  # two reductions instead of a set test
            bad = int(kind.min()) < min(LESION_TYPES) or int(kind.max()) > max(LESION_TYPES)
        else:
            bad = not np.isin(kind, tuple(LESION_TYPES)).all()
        if bad:
            raise SmallCovidError(f"lesion types must be {' or '.join(map(str, LESION_TYPES))}, "
                                  f"got {', '.join(map(str, np.unique(kind)[:8]))}")
    return mask, kind.astype(np.uint8, copy=False) * hit


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


@dataclass(frozen=True, eq=False)
class VolumeResult:
    """A segmented volume with its lungs: what the CLI writes and the app shows.

    Attributes:
        levels: (D, H, W) uint8 lesion probability levels (:func:`prob_levels`).
        kind: (D, H, W) uint8 most likely lesion type, 1 ground-glass or 2 consolidation
            (1 outside the crop, where the lesion probability is 0).
        lungs: (D, H, W) uint8 lung labels, 0 outside, 1 right, 2 left.
        spacing: the volume's (slice mm, row mm, col mm), or None when unknown.
        boxes: the crop of each slice (:class:`~smallcovid.inference.framing.Box`,
            None = the whole slice).
    """

    levels: np.ndarray
    kind: np.ndarray
    lungs: np.ndarray
    spacing: tuple[float, float, float] | None
    boxes: tuple[Box | None, ...] = ()

    def threshold(self, threshold: float) -> tuple[np.ndarray, np.ndarray]:
        """``(mask, classes)``, each (D, H, W) uint8, at ``threshold``: see :func:`threshold_volume`."""
        return threshold_volume(self.levels, threshold, self.kind)  # type: ignore[return-value]

    def mask(self, threshold: float) -> np.ndarray:
        """(D, H, W) uint8 lesion mask (0/1) at ``threshold``, as :func:`threshold_volume`."""
        return (self.levels >= threshold_level(threshold)).view(np.uint8)

    def classes(self, threshold: float) -> np.ndarray:
        """(D, H, W) uint8 lesion classes at ``threshold`` (0 background, 1 GGO, 2 consolidation),
        as :func:`threshold_volume`, made 16 slices at a time (no full-size temporary)."""
        level = threshold_level(threshold)
        out = np.empty(self.levels.shape, np.uint8)
        for k in range(0, len(out), 16):
            np.multiply(self.kind[k:k + 16], self.levels[k:k + 16] >= level, out=out[k:k + 16])
        return out

    def report(self, threshold: float, model: str, extra: dict | None = None) -> dict:
        """:func:`~smallcovid.inference.quantify.volume_report` of the classes at ``threshold``.

        Volumes in mL (voxel counts when the spacing is unknown), ``spacing_mm`` as (x, y, z);
        ``extra`` keys are added (they may not override report keys). Lung QC
        (:func:`~smallcovid.inference.qc.lung_qc`) looks at the whole lung map, the counts at
        the region that holds the lungs and every possible lesion voxel.
        """
        rows, cols = self._region(threshold)
        _, classes = threshold_volume(self.levels[:, rows, cols], threshold, self.kind[:, rows, cols])
        return volume_report(classes, self.lungs[:, rows, cols], spacing_xyz(self.spacing), model,
                             threshold, extra, qc=lung_qc(self.lungs, self.spacing))

    def _region(self, threshold: float) -> tuple[slice, slice]:
        """Rows and columns that hold every lung voxel and every possible lesion voxel.

        With a crop box on every slice, nothing outside the boxes can be lesion (level 0
        there, unless the threshold's level is 0), so the report counts the same voxels
        within the bounding box of the boxes and the lungs, a fraction of the volume.
        """
        boxes = self.boxes
        if not boxes or any(b is None for b in boxes) or threshold_level(threshold) == 0:
            return slice(None), slice(None)
        flat = self.lungs.any(axis=0)
        rows, cols = np.flatnonzero(flat.any(axis=1)), np.flatnonzero(flat.any(axis=0))
        r0, r1 = min(b.r0 for b in boxes), max(b.r1 for b in boxes)
        c0, c1 = min(b.c0 for b in boxes), max(b.c1 for b in boxes)
        if rows.size:
            r0, r1 = min(r0, int(rows[0])), max(r1, int(rows[-1]) + 1)
            c0, c1 = min(c0, int(cols[0])), max(c1, int(cols[-1]) + 1)
        return slice(r0, r1), slice(c0, c1)


def _model_inputs(volume: Volume, ks: range, boxes, window: Window) -> list[np.ndarray]:
    """(h, w) float32 model inputs of slices ``ks``, each cut to its box."""
    out = []
    for k in ks:
        box = boxes[k]
        if volume.units == "raw" or box is None:  # the robust rescale looks at the whole slice
            x = to_model_input(volume.slice(k), window)
            out.append(x if box is None else x[box.slices])
        else:  # windowing is per pixel: only the crop is converted
            out.append(to_model_input(Slice(volume.voxels[k][box.slices], volume.units), window))
    return out


def segment_volume(predictor, volume: Volume, *, progress: Callable[[int, int], None] | None = None,
                   batch_size: int = 8, framing: str = "slice", lungs: np.ndarray | None = None) -> VolumeResult:
    """Lungs, lesion probability levels and lesion types of every slice of ``volume``.

    Lungs are found once for the whole volume (:func:`~smallcovid.inference.framing.lungs_for`),
    each slice is cropped to the framing box (:func:`~smallcovid.inference.framing.volume_boxes`),
    windowed in the model's input window (HU; never a display window), run through the model
    ``batch_size`` slices at a time and pasted back as uint8 levels, so memory stays at three
    (D, H, W) uint8 arrays besides the volume.

    Args:
        predictor: a Predictor or fold ensemble (anything with ``predict_images(list of
            (h, w) float32 in [0, 1], batch_size) -> list of ProbMaps``; ``card`` optional).
        volume: the (D, H, W) scan.
        progress: called as ``progress(done, total)`` after each batch.
        batch_size: slices per forward pass (>= 1).
        framing: ``"slice"`` (a box per slice, as the training slices were cropped) or
            ``"union"`` (one box for the whole volume).
        lungs: (D, H, W) lung labels if already computed (else found here).

    Returns:
        :class:`VolumeResult` with arrays of the volume's shape (D, H, W).

    Raises:
        ValueError: a bad ``batch_size``, ``framing`` or ``lungs`` shape.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a whole number >= 1, got {batch_size!r}")
    shape = volume.voxels.shape
    if lungs is None:
        lungs = lungs_for(volume)
    elif np.shape(lungs) != shape:
        raise ValueError(f"lungs has shape {np.shape(lungs)} but the volume {shape}")
    boxes = volume_boxes(volume, lungs, framing)
    window = input_window(getattr(predictor, "card", None))
    zone = LesionZone(np.asarray(lungs), volume.spacing)  # lesions only inside the grown lungs
    axes = volume.axes  # each crop reaches the model in the training orientation
    n = len(volume)
    levels = np.zeros(shape, np.uint8)
    kind = np.ones(shape, np.uint8)
    fast = callable(getattr(predictor, "predict_levels", None))
    for start in range(0, n, batch_size):
        ks = range(start, min(start + batch_size, n))
        xs = [to_canonical(x, axes) for x in _model_inputs(volume, ks, boxes, window)]
        if fast:  # one forward pass, uint8 maps straight away
            maps = predictor.predict_levels(xs)
        else:
            maps = [(prob_levels(m.lesion), m.kind) for m in predictor.predict_images(xs, batch_size=batch_size)]
        for k, (lv, kd) in zip(ks, maps):
            rows, cols = boxes[k].slices if boxes[k] is not None else (slice(None), slice(None))
            allowed = zone.mask(k, rows, cols)
            levels[k, rows, cols] = np.where(allowed, from_canonical(lv, axes), np.uint8(0))
            kind[k, rows, cols] = np.where(allowed, from_canonical(kd, axes), np.uint8(1))
        if progress is not None:
            progress(ks[-1] + 1, n)
    return VolumeResult(levels, kind, np.asarray(lungs, np.uint8), volume.spacing, tuple(boxes))


def predict_volume(predictor, volume: Volume, window: Window | None = None, *, batch_size: int = 8,
                   keep_types: bool = True, progress: Callable[[int, int], None] | None = None,
                   lungs: np.ndarray | None = None) -> VolumeProbs:
    """The levels (and types) of :func:`segment_volume`, without the lungs.

    ``window`` is a display window and does not change the result (HU reaches the model
    in its card's input window); kept so that display code can pass it.

    Returns:
        :class:`VolumeProbs` with arrays of the volume's shape (D, H, W).
    """
    res = segment_volume(predictor, volume, batch_size=batch_size, progress=progress, lungs=lungs)
    return VolumeProbs(res.levels, res.kind if keep_types else None)
