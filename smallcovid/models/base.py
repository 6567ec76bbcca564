"""The one interface every segmentation model implements.

Tensors:
    images       (N, 1, H, W) float32 in [0, 1] (lung-windowed CT).
    lesion_mask  (N, 1, H, W) float32 in {0, 1}: any lesion.
    lesion_types (N, H, W)    int64 in {0, 1, 2}: background, ground-glass, consolidation
                              (ids and names: :mod:`smallcovid.core.vocab`).

Outputs of :meth:`SegmentationModel.predict` (no gradients, eval mode):
    lesion_prob  (N, 1, H, W) float32 in [0, 1]
    type_prob    (N, 3, H, W) float32, softmax over {bg, GGO, consolidation}.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from smallcovid.models.tta import predict_views


@dataclass(frozen=True)
class Prediction:
    """Probability maps for a batch.

    Attributes:
        lesion_prob: (N, 1, H, W) lesion probability in [0, 1].
        type_prob: (N, 3, H, W) per-pixel probabilities of bg / GGO / consolidation.
    """

    lesion_prob: torch.Tensor
    type_prob: torch.Tensor


class SegmentationModel(nn.Module):
    """Base class: subclasses set ``name`` and ``config`` and implement the hooks.

    Dense (semantic) models implement :meth:`logits`; the base class provides
    ``loss`` (BCE + soft Dice on the lesion mask, cross-entropy on lesion types)
    and ``predict``. Instance models (Mask R-CNN) override ``loss`` and ``predict``.
    """

    name: ClassVar[str] = ""
    # Inference on CPU in channels-last layout (see smallcovid.models.fuse); False where it does not pay.
    channels_last_inference: ClassVar[bool] = True
    # ``loss`` takes lesion masks of probabilities (soft labels); False: 0/1 masks only.
    soft_targets: ClassVar[bool] = True
    config: Any

    def logits(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw scores: lesion logits (N, 1, H, W) and type logits (N, 3, H, W)."""
        raise NotImplementedError

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.logits(images)

    def loss(
        self, images: torch.Tensor, lesion_mask: torch.Tensor, lesion_types: torch.Tensor
    ) -> torch.Tensor:
        """Scalar training loss for a batch (see module docstring for shapes)."""
        from smallcovid.models.losses import dense_loss

        lesion_logits, type_logits = self.logits(images)
        return dense_loss(lesion_logits, type_logits, lesion_mask, lesion_types)

    @torch.no_grad()
    def predict(self, images: torch.Tensor, *, tta: str | None = None) -> Prediction:
        """Probabilities for a batch, computed in eval mode (the caller's mode is restored).

        Args:
            images: (N, 1, H, W) in [0, 1].
            tta: test-time augmentation (:data:`smallcovid.models.tta.TTA_MODES`); None: the
                config's ``tta``. The probabilities are averaged over that many passes.
        """
        mode = getattr(self.config, "tta", "none") if tta is None else tta
        return predict_views(self._predict_once, images, mode)

    def _predict_once(self, images: torch.Tensor) -> Prediction:
        """One forward pass of :meth:`predict` (no test-time augmentation)."""
        # Eval mode so BatchNorm uses running statistics even if the caller is
        # mid-training; restoring the mode keeps a training loop unaffected.
        was_training = self.training
        self.eval()
        try:
            lesion_logits, type_logits = self.logits(images)
        finally:
            self.train(was_training)
        return Prediction(
            lesion_prob=torch.sigmoid(lesion_logits.float()),
            type_prob=torch.softmax(type_logits.float(), dim=1),
        )

    def config_dict(self) -> dict[str, Any]:
        """The JSON-serialisable config that rebuilds this architecture."""
        return dataclasses.asdict(self.config)

    def size_multiple(self) -> int:
        """Input H and W are padded to a multiple of this before ``logits``."""
        return 1


def num_parameters(model: nn.Module) -> int:
    """Number of parameters (trainable or not) in ``model``."""
    return sum(p.numel() for p in model.parameters())


def pad_to_multiple(
    images: torch.Tensor, multiple: int, value: float = 0.0
) -> tuple[torch.Tensor, tuple[slice, slice]]:
    """Pad (..., H, W) at the bottom and right so H and W are multiples of ``multiple``.

    Zero is the default fill because lung-windowed air is black, so the padding
    looks like the air around the body rather than like tissue.

    Args:
        images: (..., H, W) tensor, typically (N, 1, H, W).
        multiple: the model's :meth:`SegmentationModel.size_multiple`.
        value: fill value.

    Returns:
        ``(padded, crop)``: ``padded`` has shape (..., H', W') with H' >= H and
        W' >= W; ``out[..., crop[0], crop[1]]`` cuts any (..., H', W') output back
        to (..., H, W).
    """
    if multiple < 1:
        raise ValueError(f"multiple must be >= 1, got {multiple}")
    height, width = images.shape[-2:]
    pad_h = (-height) % multiple
    pad_w = (-width) % multiple
    crop = (slice(0, height), slice(0, width))
    if pad_h == 0 and pad_w == 0:
        return images, crop
    return F.pad(images, (0, pad_w, 0, pad_h), value=value), crop
