"""Training losses shared by the dense models (built on segmentation_models_pytorch)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from segmentation_models_pytorch.losses import DiceLoss

_DICE = DiceLoss(mode="binary", from_logits=True)


def dense_loss(
    lesion_logits: torch.Tensor,
    type_logits: torch.Tensor,
    lesion_mask: torch.Tensor,
    lesion_types: torch.Tensor,
    type_weight: float = 0.5,
) -> torch.Tensor:
    """BCE + soft Dice on the binary lesion mask plus weighted cross-entropy on types.

    Args:
        lesion_logits: (N, 1, H, W) raw scores.
        type_logits: (N, 3, H, W) raw scores for bg / GGO / consolidation.
        lesion_mask: (N, 1, H, W) float in {0, 1}, or probabilities in [0, 1] (soft labels).
        lesion_types: (N, H, W) int64 in {0, 1, 2}, -100 where no type is known (ignored).
        type_weight: weight of the lesion-type term.
    """
    if bool((lesion_types != -100).any()):
        ce = F.cross_entropy(type_logits.float(), lesion_types)
    else:  # every pixel ignored (e.g. a teacher unsure everywhere): the mean over none would be NaN
        ce = type_logits.float().sum() * 0.0
    return lesion_loss(lesion_logits, lesion_mask) + type_weight * ce


def lesion_loss(lesion_logits: torch.Tensor, lesion_mask: torch.Tensor) -> torch.Tensor:
    """BCE + soft Dice of (N, 1, H, W) lesion logits against the (N, 1, H, W) {0, 1} mask."""
    lesion_logits = lesion_logits.float()
    return F.binary_cross_entropy_with_logits(lesion_logits, lesion_mask) + _DICE(lesion_logits, lesion_mask)
