"""Training losses shared by the dense models (built on segmentation_models_pytorch)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from segmentation_models_pytorch.losses import DiceLoss

_DICE = DiceLoss(mode="binary", from_logits=True)
# Ground-glass and consolidation only (background would dominate), pooled over the batch;
# pixels of unknown type (-100) count for neither.
_TYPE_DICE = DiceLoss(mode="multiclass", classes=[1, 2], from_logits=True, ignore_index=-100)


def dense_loss(
    lesion_logits: torch.Tensor,
    type_logits: torch.Tensor,
    lesion_mask: torch.Tensor,
    lesion_types: torch.Tensor,
    type_weight: float = 0.5,
    type_dice: float = 0.0,
) -> torch.Tensor:
    """BCE + soft Dice on the binary lesion mask plus weighted cross-entropy on types
    (and, with ``type_dice``, a soft Dice term on the two lesion types).

    Args:
        lesion_logits: (N, 1, H, W) raw scores.
        type_logits: (N, 3, H, W) raw scores for bg / GGO / consolidation.
        lesion_mask: (N, 1, H, W) float in {0, 1}, or probabilities in [0, 1] (soft labels).
        lesion_types: (N, H, W) int64 in {0, 1, 2}, -100 where no type is known (ignored).
        type_weight: weight of the lesion-type term.
        type_dice: weight of the soft Dice of ground-glass and consolidation (mean over the two,
            from the type head's softmax); 0 adds nothing.
    """
    if bool((lesion_types != -100).any()):
        ce = F.cross_entropy(type_logits.float(), lesion_types)
    else:  # every pixel ignored (e.g. a teacher unsure everywhere): the mean over none would be NaN
        ce = type_logits.float().sum() * 0.0
    total = lesion_loss(lesion_logits, lesion_mask) + type_weight * ce
    if type_dice:
        total = total + type_dice * _TYPE_DICE(type_logits.float(), lesion_types)
    return total


def lesion_loss(lesion_logits: torch.Tensor, lesion_mask: torch.Tensor) -> torch.Tensor:
    """BCE + soft Dice of (N, 1, H, W) lesion logits against the (N, 1, H, W) {0, 1} mask."""
    lesion_logits = lesion_logits.float()
    return F.binary_cross_entropy_with_logits(lesion_logits, lesion_mask) + _DICE(lesion_logits, lesion_mask)
