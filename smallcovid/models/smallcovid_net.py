"""SmallCovid-Net: a SegNet-style encoder-decoder with U-Net skip connections.

The paper's network: an encoder of conv blocks followed by max-pooling whose
indices are kept; a decoder that unpools with those indices (so boundaries land
back on the exact pixels that won the pooling, as in SegNet) and then
concatenates the encoder features of the same level (as in U-Net) before its
conv block. Every conv has ``filters`` (24) channels, BatchNorm and ReLU. Two
1x1 heads give the lesion logit and the three lesion-type logits.

Speed: ``stem_stride`` adds an initial strided conv so that all blocks run at
1/stem_stride of the input resolution, and the logits are bilinearly upsampled
back at the end. At 256x256 a 24-channel 3x3 conv at full resolution costs
~340 MMAC, so stride 2 cuts compute about 4x; lesions are blobs tens of pixels
wide, so the lost boundary detail is small next to the labelling noise. A
quick check on covid-semiseg (40 train / 10 validation slices at 256 px, 30
epochs of Adam, one seed, 2 CPU threads) gave pooled Dice at p >= 0.5 of 0.649
(stride 1, 312 s), 0.648 (stride 2, 72 s) and 0.624 (stride 4, 32 s), hence
the default of 2. Decoder blocks have one conv by default (``decoder_convs``),
and at inference BatchNorm is folded into the convs and the layout is
channels-last (:mod:`smallcovid.models.fuse`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from smallcovid.core.errors import SmallCovidError
from smallcovid.core.vocab import NUM_TYPES
from smallcovid.models.tta import InferenceOptions
from smallcovid.models.base import SegmentationModel


@dataclass(frozen=True)
class SmallCovidNetConfig(InferenceOptions):
    """Architecture of SmallCovid-Net (JSON-serialisable via ``dataclasses.asdict``).

    Attributes:
        filters: channels of every conv (the paper: 24).
        depth: number of pooling / unpooling levels.
        convs_per_block: 3x3 convs per encoder block (and per decoder block unless
            ``decoder_convs`` is set).
        stem_stride: 1 reproduces the paper's full-resolution layout; 2 (default)
            puts a stride-2 conv in front and upsamples the logits at the end,
            ~3-4x faster on CPU for a small loss of boundary detail; 4 is
            faster still but coarse.
        skip_connections: concatenate encoder features after unpooling (the
            paper's improvement over SegNet); False gives a plain small SegNet.
        decoder_convs: 3x3 convs per decoder block; None means ``convs_per_block``
            (the paper's layout). Default 1: each decoder block's first conv
            reads the 2f-channel concatenation and already mixes skip and
            unpooled features; a second conv adds ~20% of the MACs
            (SmallCovid-Net at 192 px, fused, 2 CPU threads: 14.6 -> 11.0 ms).
        tta: test-time augmentation (:mod:`smallcovid.models.tta`), inference only; "none" by default.
    """

    filters: int = 24
    depth: int = 4
    convs_per_block: int = 2
    stem_stride: int = 2
    skip_connections: bool = True
    decoder_convs: int | None = 1
    # Deep supervision: this many 1x1 lesion heads on the decoder's coarser outputs (the
    # ones before the last block), trained with the main loss at weights 1/2, 1/4, ...
    # Used in training only; 0 (default) adds nothing, and older weights load unchanged.
    deep_supervision: int = 0
    # Weight of a soft Dice term on the two lesion types (ground-glass, consolidation) added
    # to the type cross-entropy, which background pixels dominate. Training only; 0 (default)
    # adds nothing, and older weights load unchanged.
    type_dice: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.type_dice, bool) or not isinstance(self.type_dice, (int, float)) or \
                not 0.0 <= float(self.type_dice) <= 10.0:
            raise SmallCovidError(f"smallcovid-net type_dice must be a number from 0 to 10, got {self.type_dice!r}")
        if not isinstance(self.deep_supervision, int) or not 0 <= self.deep_supervision < self.depth:
            raise SmallCovidError(f"smallcovid-net deep_supervision must be an integer from 0 to depth - 1 "
                                  f"({self.depth - 1}), got {self.deep_supervision!r}")
        if self.decoder_convs is not None and (not isinstance(self.decoder_convs, int) or self.decoder_convs < 1):
            raise SmallCovidError(
                f"smallcovid-net decoder_convs must be an integer >= 1 or null, got {self.decoder_convs!r}"
            )
        for field, value, low in (
            ("filters", self.filters, 1),
            ("depth", self.depth, 1),
            ("convs_per_block", self.convs_per_block, 1),
        ):
            if not isinstance(value, int) or value < low:
                raise SmallCovidError(
                    f"smallcovid-net {field} must be an integer >= {low}, got {value!r}"
                )
        if self.stem_stride not in (1, 2, 4):
            raise SmallCovidError(
                f"smallcovid-net stem_stride must be 1, 2 or 4, got {self.stem_stride!r}"
            )


def _conv_bn_relu(in_ch: int, out_ch: int, kernel: int = 3, stride: int = 1) -> nn.Sequential:
    # bias=False: BatchNorm right after makes a conv bias redundant.
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, kernel, stride=stride, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(inplace=True),
    )


def _block(in_ch: int, out_ch: int, n: int) -> nn.Sequential:
    return nn.Sequential(*[_conv_bn_relu(in_ch if i == 0 else out_ch, out_ch) for i in range(n)])


class SmallCovidNet(SegmentationModel):
    """SmallCovid-Net; see the module docstring for the layout.

    Shapes: images (N, 1, H, W) with H, W multiples of :meth:`size_multiple` ->
    lesion logits (N, 1, H, W) and type logits (N, 3, H, W).
    """

    name = "smallcovid-net"

    def __init__(self, config: SmallCovidNetConfig) -> None:
        super().__init__()
        self.config = config
        f, n, s = config.filters, config.convs_per_block, config.stem_stride
        # Stride-s conv with a kernel wide enough to see every input pixel
        # (3x3 for s<=2, 7x7 for s=4); output size is ceil(H / s).
        self.stem = _conv_bn_relu(1, f, kernel=max(3, 2 * s - 1), stride=s)
        self.encoder = nn.ModuleList(_block(f, f, n) for _ in range(config.depth))
        self.pool = nn.MaxPool2d(2, stride=2, return_indices=True)
        self.bottleneck = _block(f, f, n)
        self.unpool = nn.MaxUnpool2d(2, stride=2)
        dec_in = 2 * f if config.skip_connections else f
        n_dec = n if config.decoder_convs is None else config.decoder_convs
        self.decoder = nn.ModuleList(_block(dec_in, f, n_dec) for _ in range(config.depth))
        self.lesion_head = nn.Conv2d(f, 1, 1)
        self.type_head = nn.Conv2d(f, NUM_TYPES, 1)
        if config.deep_supervision:
            self.aux_heads = nn.ModuleList(nn.Conv2d(f, 1, 1) for _ in range(config.deep_supervision))

    def logits(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, 1, H, W) -> lesion logits (N, 1, H, W), type logits (N, 3, H, W)."""
        return self._decode(images)[:2]

    def loss(self, images: torch.Tensor, lesion_mask: torch.Tensor, lesion_types: torch.Tensor) -> torch.Tensor:
        """The dense loss, plus with ``deep_supervision`` the lesion term (BCE + soft Dice) of each
        auxiliary head upsampled to the mask's size, weighted 1/2, 1/4, ... from the finest."""
        from smallcovid.models.losses import dense_loss, lesion_loss

        lesion, types, aux = self._decode(images, keep=self.config.deep_supervision)
        total = dense_loss(lesion, types, lesion_mask, lesion_types, type_dice=float(self.config.type_dice))
        for i, feats in enumerate(aux):
            logit = F.interpolate(self.aux_heads[i](feats), size=lesion_mask.shape[-2:], mode="bilinear",
                                  align_corners=False)
            total = total + 0.5 ** (i + 1) * lesion_loss(logit, lesion_mask)
        return total

    def _decode(self, images: torch.Tensor, keep: int = 0):
        """Lesion and type logits, and the outputs of the ``keep`` decoder blocks before the
        last (finest first) for the auxiliary heads."""
        x = self.stem(images)
        skips: list[tuple[torch.Tensor, torch.Tensor]] = []
        for block in self.encoder:
            x = block(x)
            pooled, indices = self.pool(x)
            skips.append((x, indices))
            x = pooled
        x = self.bottleneck(x)
        outs: list[torch.Tensor] = []
        for block, (skip, indices) in zip(self.decoder, reversed(skips)):
            # output_size restores odd sizes that max-pooling floored.
            x = self.unpool(x, indices, output_size=skip.shape[-2:])
            if self.config.skip_connections:
                x = torch.cat([x, skip], dim=1)
            x = block(x)
            outs.append(x)
        lesion, types = self.lesion_head(x), self.type_head(x)
        if self.config.stem_stride > 1:
            # Upsampling 4 logit channels is far cheaper than running convs at full size.
            size = images.shape[-2:]
            lesion = F.interpolate(lesion, size=size, mode="bilinear", align_corners=False)
            types = F.interpolate(types, size=size, mode="bilinear", align_corners=False)
        aux = outs[-1 - keep:-1][::-1] if keep else []
        return lesion, types, aux

    def size_multiple(self) -> int:
        return self.config.stem_stride * 2**self.config.depth


DESCRIPTION = "SegNet-style encoder-decoder with pooling indices and U-Net skips, 24 filters (the paper's model)"


def build(*, config: SmallCovidNetConfig) -> SmallCovidNet:
    return SmallCovidNet(config)
