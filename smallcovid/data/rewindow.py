"""Bring 8-bit slices shown in another display window into the labeled slices' window.

Slices exported as 8-bit images carry whatever display window their source used. The
COVID-SemiSeg unlabeled pool mixes the labeled set's lung window (soft tissue near
white) with a wider one (soft tissue mid-grey, parenchyma near black), in which a model
trained on the labeled set reads the mediastinum and chest wall as ground-glass. Both are
linear in HU, so a linear map that moves an image's two anatomical levels — aerated lung
and soft tissue, the modes of its histogram — onto the labeled set's puts it back into
the labeled window. Only images clearly outside that window are mapped: their 99th
percentile lies well below every reference image's (the brightest tissue never reaches
white), so a slice already in the labeled window is left exactly as it is; so is one
whose window is only somewhat wider (W2000/L-500 against the labeled W1500/L-600 on the
synthetic phantom), whose bone and tissue still reach near white.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from smallcovid.core.errors import SmallCovidError

_BINS = 100
#: An image is re-windowed when its 99th percentile lies this far below the lowest reference one.
MARGIN = 0.15


@dataclass(frozen=True)
class WindowLevels:
    """The reference window: median lung and soft-tissue levels, the lowest 99th percentile (all in [0, 1])."""

    lung: float
    tissue: float
    p99_min: float


def levels(image: torch.Tensor) -> tuple[float, float]:
    """(aerated lung, soft tissue) levels of one image (any shape, values in [0, 1]).

    Soft tissue is the histogram's mode above 0.25; aerated lung the mode between 0.02
    (the air outside the body, often exactly black) and 0.15 below the tissue level.
    """
    h = torch.histc(image.float().flatten(), bins=_BINS, min=0.0, max=1.0)
    h = F.avg_pool1d(h[None, None], 5, 1, 2)[0, 0]  # a 5 % smoothing: the modes, not the noise
    tissue = int(torch.argmax(h[25:])) + 25
    lung = int(torch.argmax(h[2:max(3, tissue - 15)])) + 2
    return (lung + 0.5) / _BINS, (tissue + 0.5) / _BINS


def reference_levels(images: torch.Tensor) -> WindowLevels:
    """The window of a reference set ((N, 1, H, W) in [0, 1], e.g. the labeled training slices).

    Raises:
        SmallCovidError: an empty set.
    """
    if len(images) == 0:
        raise SmallCovidError("a reference window needs at least one image")
    lv = torch.tensor([levels(x) for x in images])
    p99 = torch.quantile(images.flatten(1).float(), 0.99, dim=1)
    return WindowLevels(float(lv[:, 0].median()), float(lv[:, 1].median()), float(p99.min()))


def rewindow(images: torch.Tensor, ref: WindowLevels) -> tuple[torch.Tensor, torch.Tensor]:
    """``images`` ((N, 1, H, W) in [0, 1]) in the window of ``ref``.

    Returns:
        (images, mapped): the images, those outside the reference window mapped linearly
        (lung and tissue levels onto ``ref``'s, clipped to [0, 1]), and an (N,) bool tensor
        saying which were mapped. The others are returned unchanged.
    """
    out = images.clone()
    p99 = torch.quantile(images.flatten(1).float(), 0.99, dim=1)
    mapped = p99 < ref.p99_min - MARGIN
    for i in torch.nonzero(mapped).flatten().tolist():
        lung, tissue = levels(images[i])
        gain = (ref.tissue - ref.lung) / max(tissue - lung, 0.05)
        out[i] = ((images[i] - lung) * gain + ref.lung).clamp(0.0, 1.0)
    return out, mapped
