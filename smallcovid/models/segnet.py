"""SegNet (Badrinarayanan et al., 2017): VGG16 encoder, decoder unpooling with indices.

Encoder: the 13 conv layers of VGG16 in 5 blocks (2-2-3-3-3), each conv with
BatchNorm and ReLU, each block ending in 2x2 max-pooling that keeps its indices.
Decoder: the mirror image; each block starts with max-unpooling using the
indices of the matching encoder block (no skip features are copied, which is
what distinguishes SegNet from U-Net), and its last conv reduces the channels
to those of the next-shallower level. Two 1x1 heads give lesion and type logits.

``width`` scales VGG's 64..512 channels; 0.25 (16..128 channels, ~1.8 M
parameters) keeps CPU training practical while keeping the topology.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from smallcovid.core.errors import SmallCovidError
from smallcovid.core.vocab import NUM_TYPES
from smallcovid.models.tta import InferenceOptions
from smallcovid.models.base import SegmentationModel

# (output channels at width 1.0, number of 3x3 convs) per VGG16 block.
_VGG16_BLOCKS = ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))


@dataclass(frozen=True)
class SegNetConfig(InferenceOptions):
    """Architecture of SegNet (JSON-serialisable via ``dataclasses.asdict``).

    Attributes:
        width: multiplier on VGG16's channel counts (1.0 = the original 64..512).
        tta: test-time augmentation (:mod:`smallcovid.models.tta`), inference only; "none" by default.
    """

    width: float = 0.25

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.width, (int, float)) or not 0 < self.width <= 4:
            raise SmallCovidError(f"segnet width must be a number in (0, 4], got {self.width!r}")


def _conv_bn_relu(in_ch: int, out_ch: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(inplace=True),
    )


class SegNet(SegmentationModel):
    """SegNet with a VGG16-topology encoder.

    Shapes: images (N, 1, H, W) with H, W multiples of 32 -> lesion logits
    (N, 1, H, W) and type logits (N, 3, H, W).
    """

    name = "segnet"

    def __init__(self, config: SegNetConfig) -> None:
        super().__init__()
        self.config = config
        channels = [max(1, round(c * config.width)) for c, _ in _VGG16_BLOCKS]
        counts = [n for _, n in _VGG16_BLOCKS]

        self.encoder = nn.ModuleList()
        in_ch = 1
        for out_ch, n in zip(channels, counts):
            self.encoder.append(
                nn.Sequential(*[_conv_bn_relu(in_ch if i == 0 else out_ch, out_ch) for i in range(n)])
            )
            in_ch = out_ch

        # Decoder block k mirrors encoder block k: n convs at its width, the last
        # one stepping down to the width of block k-1 (block 0 keeps its width).
        self.decoder = nn.ModuleList()
        for k in reversed(range(len(channels))):
            ch, n = channels[k], counts[k]
            out_last = channels[k - 1] if k > 0 else ch
            layers = [_conv_bn_relu(ch, ch) for _ in range(n - 1)] + [_conv_bn_relu(ch, out_last)]
            self.decoder.append(nn.Sequential(*layers))

        self.pool = nn.MaxPool2d(2, stride=2, return_indices=True)
        self.unpool = nn.MaxUnpool2d(2, stride=2)
        self.lesion_head = nn.Conv2d(channels[0], 1, 1)
        self.type_head = nn.Conv2d(channels[0], NUM_TYPES, 1)

    def logits(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, 1, H, W) -> lesion logits (N, 1, H, W), type logits (N, 3, H, W)."""
        x = images
        saved: list[tuple[torch.Tensor, torch.Size]] = []
        for block in self.encoder:
            x = block(x)
            size = x.shape[-2:]
            x, indices = self.pool(x)
            saved.append((indices, size))
        for block, (indices, size) in zip(self.decoder, reversed(saved)):
            x = block(self.unpool(x, indices, output_size=size))
        return self.lesion_head(x), self.type_head(x)

    def size_multiple(self) -> int:
        return 32


DESCRIPTION = "SegNet: VGG16 encoder (13 convs), decoder unpools with the encoder's pooling indices"


def build(*, config: SegNetConfig) -> SegNet:
    return SegNet(config)
