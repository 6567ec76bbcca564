"""A fold's slices as tensors at the model's input size, and the validation score on them.

Training and checkpoint selection both work at the model's square input size S; the
out-of-fold evaluation in :mod:`smallcovid.training.cvsummary` works at each image's
own size instead.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from smallcovid.data.dataset import UNKNOWN_TYPE, LabeledSet
from smallcovid.models import SegmentationModel

Tensors = tuple[torch.Tensor, torch.Tensor, torch.Tensor]
"""(images (N,1,S,S) float in [0, 1], masks (N,1,S,S) float 0/1, types (N,S,S) int64)."""

# Checkpoints are chosen on the best Dice over a threshold grid, not at one fixed
# threshold: a model whose probabilities are still timid (Mask R-CNN's score x mask
# early on) would otherwise score 0 at 0.8 and keep its first epoch.
SELECTION_THRESHOLDS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)


def to_tensors(data: LabeledSet, size: int) -> Tensors:
    """Resize a labeled set once, to ``size`` x ``size`` (see :data:`Tensors` for the shapes).

    Images are resized bilinearly with antialiasing; masks and types with nearest
    neighbour, so labels stay labels. A slice without type labels gets
    ``UNKNOWN_TYPE`` inside its lesion and 0 (background) outside.
    """
    imgs, masks, types = [], [], []
    for s in data.samples:
        x = torch.from_numpy(s.image)[None, None]
        imgs.append(F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)[0])
        m = torch.from_numpy(s.mask.astype("float32"))[None, None]
        masks.append(F.interpolate(m, size=(size, size), mode="nearest")[0])
        if s.types is None:
            t = torch.full((size, size), UNKNOWN_TYPE, dtype=torch.long)
            t[masks[-1][0] == 0] = 0
        else:
            tt = torch.from_numpy(s.types.astype("float32"))[None, None]
            t = F.interpolate(tt, size=(size, size), mode="nearest")[0, 0].long()
        types.append(t)
    return torch.stack(imgs), torch.stack(masks), torch.stack(types)


@torch.no_grad()
def validate(model: SegmentationModel, val_t: Tensors, threshold: float, device: torch.device) -> dict[str, float]:
    """Score ``model`` on a validation fold at the model's input size.

    Returns ``val_loss`` (BCE + soft Dice of the lesion probability), ``val_dice``
    (mean per-slice Dice at ``threshold``; a slice with no lesion and no prediction
    counts as 1) and ``val_dice_best`` (the best mean Dice over :data:`SELECTION_THRESHOLDS`).
    Leaves the model in eval mode.
    """
    model.eval()
    images, masks, _ = val_t
    # Batches of 4 bound peak memory on large validation folds.
    probs = torch.cat([model.predict(images[i:i + 4].to(device)).lesion_prob.float().cpu()
                       for i in range(0, len(images), 4)])
    bce = F.binary_cross_entropy(probs.clamp(1e-6, 1 - 1e-6), masks)
    inter = (probs * masks).sum((1, 2, 3))
    soft = 1 - ((2 * inter + 1) / (probs.sum((1, 2, 3)) + masks.sum((1, 2, 3)) + 1)).mean()

    def mean_dice(t: float) -> float:
        pred = probs >= t
        tp = (pred & (masks > 0)).sum((1, 2, 3)).float()
        denom = pred.sum((1, 2, 3)).float() + masks.sum((1, 2, 3))
        return float(torch.where(denom > 0, 2 * tp / denom.clamp(min=1), torch.ones_like(denom)).mean())

    sweep = [mean_dice(t) for t in SELECTION_THRESHOLDS]
    return {"val_loss": float(bce + soft), "val_dice": mean_dice(threshold), "val_dice_best": max(sweep)}
