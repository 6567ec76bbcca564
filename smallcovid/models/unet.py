"""U-Net baseline from segmentation_models_pytorch.

One ``smp.Unet`` with four output channels: channel 0 is the lesion logit,
channels 1-3 the bg / GGO / consolidation logits. Sharing one decoder keeps the
two tasks consistent and costs nothing extra. Encoder weights are never
downloaded (``encoder_weights=None``): the model trains from scratch on gray CT.
"""

from __future__ import annotations

from dataclasses import dataclass

import segmentation_models_pytorch as smp
import torch

from smallcovid.core.errors import SmallCovidError
from smallcovid.core.vocab import NUM_TYPES
from smallcovid.models.tta import InferenceOptions
from smallcovid.models.base import SegmentationModel


@dataclass(frozen=True)
class UNetConfig(InferenceOptions):
    """Architecture of the U-Net (JSON-serialisable via ``dataclasses.asdict``).

    Attributes:
        encoder: any segmentation_models_pytorch encoder name (e.g. "resnet18").
        decoder_channels: channels of the 5 decoder stages, deepest first; a
            list (as read back from JSON) is accepted and stored as a tuple.
        tta: test-time augmentation (:mod:`smallcovid.models.tta`), inference only; "none" by default.
    """

    encoder: str = "resnet18"
    decoder_channels: tuple[int, ...] = (256, 128, 64, 32, 16)

    def __post_init__(self) -> None:
        super().__post_init__()
        # Frozen dataclass: normalise via object.__setattr__ so JSON lists compare
        # equal to the tuples of a freshly built config.
        object.__setattr__(self, "decoder_channels", tuple(self.decoder_channels))
        if len(self.decoder_channels) != 5 or not all(
            isinstance(c, int) and c > 0 for c in self.decoder_channels
        ):
            raise SmallCovidError(
                f"unet decoder_channels must be 5 positive integers, got {list(self.decoder_channels)}"
            )
        if self.encoder not in smp.encoders.get_encoder_names():
            raise SmallCovidError(
                f"unet encoder {self.encoder!r} is not a segmentation_models_pytorch encoder"
            )


class UNet(SegmentationModel):
    """U-Net; images (N, 1, H, W), H and W multiples of 32 -> logits (N, 1, H, W), (N, 3, H, W)."""

    name = "unet"

    def __init__(self, config: UNetConfig) -> None:
        super().__init__()
        self.config = config
        self.net = smp.Unet(
            encoder_name=config.encoder,
            encoder_weights=None,
            in_channels=1,
            classes=1 + NUM_TYPES,
            decoder_channels=config.decoder_channels,
        )

    def logits(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, 1, H, W) -> lesion logits (N, 1, H, W), type logits (N, 3, H, W)."""
        out = self.net(images)
        return out[:, :1], out[:, 1:]

    def size_multiple(self) -> int:
        return 32


DESCRIPTION = "U-Net (segmentation_models_pytorch) with a ResNet-18 encoder"


def build(*, config: UNetConfig) -> UNet:
    return UNet(config)
