"""Test-time augmentation: a model's probabilities averaged over flipped and turned views.

Every model trains on random flips and 90° turns, so it has seen each slice in all eight
orientations of the square's symmetry group (D4). At inference each view is predicted, turned
back, and the probability maps are averaged: ``"flip"`` uses the slice and its left-right
mirror (2 passes), ``"d4"`` all eight orientations (8 passes). Inference only: the weights do
not change, and the cost is that many forward passes.

The mode is a field of every model's config (:class:`InferenceOptions`), so it travels with
the weights in the card, and the out-of-fold figures, threshold and calibration of a card
are computed under it; ``SegmentationModel.predict(images, tta=...)`` overrides it per call.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from smallcovid.core.errors import SmallCovidError
from smallcovid.core.vocab import TTA_MODES

#: Test-time augmentation modes and the views each averages: (mirror left-right, quarter turns).
TTA_VIEWS: dict[str, tuple[tuple[bool, int], ...]] = {
    "none": ((False, 0),),
    "flip": ((False, 0), (True, 0)),
    "d4": tuple((mirror, turns) for mirror in (False, True) for turns in range(4)),
}


def check_tta(mode: object) -> str:
    """``mode`` if it is a test-time augmentation mode; else SmallCovidError naming the valid ones."""
    if mode not in TTA_VIEWS:
        raise SmallCovidError(f"tta must be one of {', '.join(TTA_MODES)}, got {mode!r}")
    return str(mode)


@dataclass(frozen=True)
class InferenceOptions:
    """Config fields every architecture shares (a base of each model's config dataclass).

    Attributes:
        tta: test-time augmentation, one of :data:`TTA_MODES` ("none": one pass).
    """

    # Keyword-only: a subclass's own fields keep their positions.
    tta: str = field(default="none", kw_only=True)

    def __post_init__(self) -> None:
        check_tta(self.tta)


def _view(x: torch.Tensor, mirror: bool, turns: int) -> torch.Tensor:
    if mirror:
        x = torch.flip(x, dims=(-1,))
    return torch.rot90(x, turns, dims=(-2, -1)) if turns else x


def _unview(x: torch.Tensor, mirror: bool, turns: int) -> torch.Tensor:
    if turns:
        x = torch.rot90(x, -turns, dims=(-2, -1))
    return torch.flip(x, dims=(-1,)) if mirror else x


def predict_views(predict_once: Callable[[torch.Tensor], Any], images: torch.Tensor, mode: str) -> Any:
    """``predict_once`` averaged over the views of ``mode``.

    Args:
        predict_once: one forward pass, (N, 1, H, W) -> Prediction with (N, 1, H, W) lesion and
            (N, 3, H, W) type probabilities.
        images: (N, 1, H, W); H and W may differ (a quarter turn swaps them, the maps are turned
            back).
        mode: one of :data:`TTA_MODES`.

    Returns:
        A Prediction (``predict_once``'s type) of the same shapes: the mean lesion probability
        and the mean type probabilities (which still sum to 1 per pixel).
    """
    views = TTA_VIEWS[check_tta(mode)]
    if len(views) == 1:
        return predict_once(images)
    lesion = types = pred = None
    for mirror, turns in views:  # one view at a time: memory of a single pass
        pred = predict_once(_view(images, mirror, turns).contiguous())
        pl, pt = _unview(pred.lesion_prob.float(), mirror, turns), _unview(pred.type_prob.float(), mirror, turns)
        lesion, types = (pl, pt) if lesion is None else (lesion + pl, types + pt)
    return type(pred)(lesion_prob=lesion / len(views), type_prob=types / len(views))
