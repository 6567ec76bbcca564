"""Bring 8-bit slices shown in another display window into the labeled slices' window.

Slices exported as 8-bit images carry whatever display window their source used. The
COVID-SemiSeg unlabeled pool mixes the training slices' lung window (soft tissue near
white) with a wider one (soft tissue mid-grey, parenchyma near black): in that one a
model trained on the labeled slices reads the mediastinum and chest wall as ground-glass,
and the lung finder finds no lung at all. Both windows are linear in HU, so a linear map
that moves an image's two anatomical levels — aerated lung and soft tissue, the modes of
its histogram — onto the training slices' puts it back into their window.

Only images clearly outside that window are mapped: their 99th percentile lies well
below every reference image's (nothing reaches white) *and* their soft tissue is below
every labeled slice's (so a crop of lung with consolidation in view, near white, is not
taken for a grey mediastinum). A slice in the training window is left exactly as it is
(all 50 labeled slices, the 481 unlabeled ones in their window); so is most of a window only
a little wider, whose bone and tissue still reach near white (W2000/L-500 against the
training W1500/L-600: 11 of 50 whole-field frames mapped). A crop with nothing denser than
ground-glass in view has a wide window's histogram and is mapped.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from smallcovid.core.errors import SmallCovidError

_BINS = 100
#: Re-windowed only when the 99th percentile lies this far below the lowest reference one ...
MARGIN = 0.10
#: ... and the soft-tissue level this far below the reference's (0.845 - 0.12 = 0.725: the
#: lowest soft-tissue level of the 50 labeled slices).
TISSUE_GAP = 0.12


@dataclass(frozen=True)
class WindowLevels:
    """A reference window: median lung and soft-tissue levels, the lowest 99th percentile (all in [0, 1])."""

    lung: float
    tissue: float
    p99_min: float


#: The 50 labeled COVID-SemiSeg training slices' window (:func:`reference_levels` of their
#: model inputs at 192 px; ``tests/test_rewindow.py`` recomputes it where the data is present).
TRAINING_WINDOW = WindowLevels(lung=0.175, tissue=0.845, p99_min=0.946)


#: What reports and the app say of a re-windowed image.
REWINDOW_NOTE = ("This image looks exported in a wider display window than the training slices (soft tissue "
                 "grey instead of near white); it is segmented (and shown in the app) mapped linearly onto their lung "
                 "window. For exact HU, upload the DICOM or NIfTI.")


def _mode(values: np.ndarray, lo: int, hi: int) -> int:
    """The histogram bin (of :data:`_BINS` over [0, 1]) in ``[lo, hi)`` holding most ``values``."""
    h, _ = np.histogram(values, bins=_BINS, range=(0.0, 1.0))
    h = np.convolve(h.astype(np.float64), np.ones(5) / 5, mode="same")  # a 5 % smoothing: modes, not noise
    part = h[lo:max(lo + 1, hi)]
    best = np.flatnonzero(part >= part.max() * (1 - 1e-9))  # a flat top (one grey level, smoothed): its middle
    return int(round(best.mean())) + lo


def _otsu(values: np.ndarray) -> int:
    """Otsu's split of ``values`` in [0, 1] into a dark and a bright class: the first bright bin."""
    h, _ = np.histogram(values, bins=_BINS, range=(0.0, 1.0))
    p = h / max(1, h.sum())
    w = np.cumsum(p)
    mu = np.cumsum(p * np.arange(_BINS))
    between = ((mu[-1] * w - mu) ** 2 / np.maximum(w * (1 - w), 1e-12))[:-1]
    best = np.flatnonzero(between >= between.max() * (1 - 1e-9))  # a flat top (empty bins): its middle
    return int(round(best.mean())) + 1


def levels(image: np.ndarray) -> tuple[float, float]:
    """(aerated lung, soft tissue) levels of one image (any shape; 2D for the lung rule below).

    The image's pixels split into dark (air, lung) and bright (tissue, bone) by Otsu's
    threshold. Soft tissue is the bright part's histogram mode; aerated lung the dark
    part's mode above 0.02 (outside air is often exactly black), over the dark pixels the
    body encloses: in a wide window the air around a whole-body field of view is as grey as
    the lungs, and far larger. Where the enclosed dark pixels are under 2 % of the image (a
    crop whose lungs run to its edges), all dark pixels count.
    """
    x = np.asarray(image, np.float32)
    split = _otsu(x)
    tissue = _mode(x, split, _BINS)
    dark = x < split / _BINS
    values = x[dark]
    if x.ndim == 2:
        labels, _ = ndi.label(dark)
        edge = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
        inside = dark & ~np.isin(labels, edge[edge > 0])
        if inside.sum() >= 0.02 * x.size:
            values = x[inside]
    lung = _mode(values, 2, split)
    return (lung + 0.5) / _BINS, (tissue + 0.5) / _BINS


def reference_levels(images) -> WindowLevels:
    """The window of a reference set ((N, ...) array or tensor in [0, 1], e.g. the labeled training slices).

    Raises:
        SmallCovidError: an empty set.
    """
    if len(images) == 0:
        raise SmallCovidError("a reference window needs at least one image")
    arr = np.asarray(images, np.float32).reshape(len(images), -1)
    lv = np.array([levels(x) for x in arr])
    p99 = np.percentile(arr, 99, axis=1)
    return WindowLevels(float(np.median(lv[:, 0])), float(np.median(lv[:, 1])), float(p99.min()))


def rewindow_image(image: np.ndarray, ref: WindowLevels = TRAINING_WINDOW) -> tuple[np.ndarray, bool]:
    """One (H, W) float image in [0, 1] in ``ref``'s window: ``(image, mapped)``.

    ``mapped`` is False (and the image returned as given) unless the image is clearly in a
    wider window (see the module docstring); then lung and tissue levels go linearly onto
    ``ref``'s and the result is clipped to [0, 1], float32.
    """
    if float(np.percentile(image, 99)) >= ref.p99_min - MARGIN:
        return image, False
    lung, tissue = levels(image)
    if tissue >= ref.tissue - TISSUE_GAP:
        return image, False
    gain = (ref.tissue - ref.lung) / max(tissue - lung, 0.05)
    out = (np.asarray(image, np.float32) - np.float32(lung)) * np.float32(gain) + np.float32(ref.lung)
    return np.clip(out, 0.0, 1.0).astype(np.float32, copy=False), True


def rewindow(images, ref: WindowLevels = TRAINING_WINDOW):
    """A batch ((N, 1, H, W) tensor in [0, 1]) in ``ref``'s window: ``(images, mapped)``.

    Returns the images (those clearly in a wider window mapped, the others unchanged) and
    an (N,) bool tensor saying which were mapped.
    """
    import torch

    out, mapped = images.clone(), torch.zeros(len(images), dtype=torch.bool)
    for i in range(len(images)):
        x, m = rewindow_image(images[i, 0].numpy(), ref)
        if m:
            out[i, 0] = torch.from_numpy(x)
            mapped[i] = True
    return out, mapped
