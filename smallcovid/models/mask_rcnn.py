"""Mask R-CNN baseline (torchvision) behind the dense-model interface.

Training: every 8-connected lesion region of at least ``min_instance_pixels``
pixels becomes one instance (box = its extent, mask = the region, label = its
majority lesion type: 1 GGO, 2 consolidation). Inference: instances scoring at
least ``score_threshold`` are merged per pixel into the same probability maps
the dense models give (see :meth:`MaskRCNNModel.predict`).

Kept small for CPU training and a small weights file: a ResNet trunk that stops
after ``layer3`` by default (layer4 of ResNet-18 alone holds 8.4 M of its 11 M
parameters and its stride-32 maps are too coarse for lesions in 256 px images),
a 128-channel FPN, a 256-wide box head and a 128-channel mask head. The image
transform keeps images at ``image_size`` instead of torchvision's default 800.
The trunk takes the single gray channel directly (no 3-channel replication)
and uses trainable BatchNorm, since it trains from scratch (torchvision's
FrozenBatchNorm would be an identity with no pretrained statistics).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torchvision
from torch import nn
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.detection.rpn import AnchorGenerator
from torchvision.ops import MultiScaleRoIAlign

from smallcovid.core.errors import SmallCovidError
from smallcovid.core.vocab import NUM_TYPES
from smallcovid.models.base import Prediction, SegmentationModel
from smallcovid.models.instances import lesion_instances
from smallcovid.models.tta import InferenceOptions

_BACKBONES = ("resnet18", "resnet34", "resnet50")


MERGES = ("score_x_mask", "mask")


@dataclass(frozen=True)
class MaskRCNNConfig(InferenceOptions):
    """Architecture and post-processing of the Mask R-CNN (JSON-serialisable).

    Attributes:
        backbone: ResNet trunk: "resnet18", "resnet34" or "resnet50".
        image_size: the detector's internal size (torchvision ``min_size`` and
            ``max_size``); inputs of this size are not resized.
        score_threshold: instances scoring below this are dropped.
        detections_per_img: at most this many instances per image.
        min_instance_pixels: smaller lesion regions are not used as training instances.
        returned_layers: ResNet stages feeding the FPN (1 = stride 4 ... 4 = stride 32).
        anchor_sizes: anchor sizes in pixels per FPN level (one tuple per returned
            layer plus one for the extra max-pooled level), same length each.
        fpn_channels: channels of the FPN, RPN head and RoI features.
        representation_size: width of the two-layer box head.
        mask_head_channels: channels of the four-conv mask head.
        merge: how instances become the lesion probability: ``"score_x_mask"`` (each
            instance's detection score x its mask probability) or ``"mask"`` (the mask
            probability of instances scoring at least ``merge_min_score``, so that the
            probability says how likely a pixel is lesion, as the dense models' does,
            rather than how likely an instance exists). Inference only: the same weights
            serve either; ``scripts/compare_mask_rcnn_merge.py`` measures both on a run's folds.
        merge_min_score: instances below this score are left out by ``merge="mask"``.
        tta: test-time augmentation (:mod:`smallcovid.models.tta`), inference only; "none" by default.
    """

    backbone: str = "resnet18"
    image_size: int = 256
    score_threshold: float = 0.05
    detections_per_img: int = 50
    min_instance_pixels: int = 4
    returned_layers: tuple[int, ...] = (1, 2, 3)
    anchor_sizes: tuple[tuple[int, ...], ...] = ((8, 16), (16, 32), (32, 64), (64, 128))
    fpn_channels: int = 128
    representation_size: int = 256
    mask_head_channels: int = 128
    merge: str = "score_x_mask"
    merge_min_score: float = 0.3

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.merge not in MERGES:
            raise SmallCovidError(f"mask-rcnn merge must be one of {', '.join(MERGES)}, got {self.merge!r}")
        if not 0.0 <= self.merge_min_score <= 1.0:
            raise SmallCovidError(f"mask-rcnn merge_min_score must be in [0, 1], got {self.merge_min_score!r}")
        # JSON gives lists back; store tuples so configs compare and hash equal.
        object.__setattr__(self, "returned_layers", tuple(self.returned_layers))
        object.__setattr__(self, "anchor_sizes", tuple(tuple(a) for a in self.anchor_sizes))
        if self.backbone not in _BACKBONES:
            raise SmallCovidError(
                f"mask-rcnn backbone must be one of {', '.join(_BACKBONES)}, got {self.backbone!r}"
            )
        layers = self.returned_layers
        if not layers or list(layers) != sorted(set(layers)) or not set(layers) <= {1, 2, 3, 4}:
            raise SmallCovidError(
                f"mask-rcnn returned_layers must be increasing values in 1..4, got {list(layers)}"
            )
        widths = {len(a) for a in self.anchor_sizes}
        if len(self.anchor_sizes) != len(layers) + 1 or len(widths) != 1:
            raise SmallCovidError(
                f"mask-rcnn anchor_sizes needs {len(layers) + 1} tuples of equal length "
                f"(one per returned layer plus one), got {len(self.anchor_sizes)}"
            )
        if not 0.0 <= self.score_threshold <= 1.0:
            raise SmallCovidError(
                f"mask-rcnn score_threshold must be in [0, 1], got {self.score_threshold!r}"
            )
        for field in (
            "image_size",
            "detections_per_img",
            "fpn_channels",
            "representation_size",
            "mask_head_channels",
        ):
            if int(getattr(self, field)) < 1:
                raise SmallCovidError(f"mask-rcnn {field} must be >= 1, got {getattr(self, field)!r}")


def _backbone(config: MaskRCNNConfig) -> BackboneWithFPN:
    trunk = getattr(torchvision.models, config.backbone)(weights=None, norm_layer=nn.BatchNorm2d)
    # One input channel: CT is gray, and this avoids copying every image 3 times.
    trunk.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    stage2 = trunk.inplanes // 8  # layer1 width: 64 for basic blocks, 256 for bottlenecks
    # IntermediateLayerGetter (inside BackboneWithFPN) drops every module after
    # the last returned layer, so unused layer4 weights are never created/saved.
    return BackboneWithFPN(
        trunk,
        return_layers={f"layer{k}": str(i) for i, k in enumerate(config.returned_layers)},
        in_channels_list=[stage2 * 2 ** (k - 1) for k in config.returned_layers],
        out_channels=config.fpn_channels,
    )


class MaskRCNNModel(SegmentationModel):
    """Mask R-CNN with the dense-model ``loss`` / ``predict`` interface.

    ``logits`` (and so ``forward``) raises NotImplementedError: an instance
    detector has no per-pixel logits; use :meth:`loss` and :meth:`predict`.
    Both work whatever mode (train/eval) the caller left the model in.
    """

    name = "mask-rcnn"
    # Images per forward pass at inference: the box head pools 1000 proposals per image, so a
    # batch of 8 needs ~0.7 GB on a CPU; 2 at a time keep it to a fraction at the same speed.
    infer_batch = 2
    channels_last_inference = False  # RoIAlign copies channels-last features back
    soft_targets = False  # instances are cut from 0/1 masks

    def __init__(self, config: MaskRCNNConfig) -> None:
        super().__init__()
        self.config = config
        ch, mask_ch = config.fpn_channels, config.mask_head_channels
        levels = [str(i) for i in range(len(config.returned_layers))]
        anchors = AnchorGenerator(config.anchor_sizes, ((0.5, 1.0, 2.0),) * len(config.anchor_sizes))
        num_classes = NUM_TYPES  # 0 background, 1 GGO, 2 consolidation
        self.net = MaskRCNN(
            _backbone(config),
            min_size=config.image_size,
            max_size=config.image_size,
            # Inputs are lung-windowed gray in [0, 1]; centre them roughly on 0.
            image_mean=[0.5],
            image_std=[0.25],
            rpn_anchor_generator=anchors,
            # Few lesions per slice: fewer proposals keep CPU time down.
            rpn_pre_nms_top_n_train=1000,
            rpn_post_nms_top_n_train=500,
            rpn_pre_nms_top_n_test=500,
            rpn_post_nms_top_n_test=300,
            box_roi_pool=MultiScaleRoIAlign(levels, output_size=7, sampling_ratio=2),
            box_head=TwoMLPHead(ch * 7 * 7, config.representation_size),
            box_predictor=FastRCNNPredictor(config.representation_size, num_classes),
            box_score_thresh=config.score_threshold,
            box_detections_per_img=config.detections_per_img,
            box_batch_size_per_image=128,
            mask_roi_pool=MultiScaleRoIAlign(levels, output_size=14, sampling_ratio=2),
            mask_head=MaskRCNNHeads(ch, (mask_ch,) * 4, dilation=1),
            mask_predictor=MaskRCNNPredictor(mask_ch, mask_ch, num_classes),
        )

    def logits(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Not available for an instance model; raises NotImplementedError."""
        raise NotImplementedError("mask-rcnn has no dense logits; use loss() and predict()")

    def _targets(
        self, lesion_mask: torch.Tensor, lesion_types: torch.Tensor
    ) -> list[dict[str, torch.Tensor]]:
        """torchvision targets (boxes, masks, labels) per image; see :func:`lesion_instances`."""
        device = lesion_mask.device
        masks = lesion_mask[:, 0].detach().cpu().numpy()
        types = lesion_types.detach().cpu().numpy()
        targets = []
        for mask, kinds in zip(masks, types):
            boxes, inst, labels = lesion_instances(mask, kinds, self.config.min_instance_pixels)
            targets.append(
                {
                    "boxes": torch.from_numpy(boxes).to(device),
                    "masks": torch.from_numpy(inst).to(device),
                    "labels": torch.from_numpy(labels).to(device),
                }
            )
        return targets

    def loss(
        self, images: torch.Tensor, lesion_mask: torch.Tensor, lesion_types: torch.Tensor
    ) -> torch.Tensor:
        """Sum of torchvision's RPN, box and mask losses for a batch.

        Args:
            images: (N, 1, H, W) in [0, 1]; lesion_mask: (N, 1, H, W) in {0, 1};
            lesion_types: (N, H, W) in {0, 1, 2}. Images without lesions are fine.
        """
        was_training = self.training
        # torchvision only returns losses in train mode. Called on an eval-mode
        # model (e.g. a validation loss), keep BatchNorm on its running stats so
        # that computing the loss does not change the model.
        self.net.train()
        if not was_training:
            for module in self.net.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()
        try:
            losses = self.net(list(images.float()), self._targets(lesion_mask, lesion_types))
        finally:
            self.train(was_training)
        return sum(losses.values())

    @torch.no_grad()
    def _predict_once(self, images: torch.Tensor) -> Prediction:
        """Merge detected instances into dense probability maps (one pass of ``predict``).

        For each type c (1 GGO, 2 consolidation), p_c = per-pixel max over the kept
        instances labelled c of score x mask probability, or of the mask probability
        alone with ``merge="mask"`` (0 where there is none).
        The types are exclusive, so lesion_prob = min(1, p1 + p2): torchvision
        scores each class separately, and a region whose type is uncertain comes
        back as a GGO and a consolidation detection with about half the
        foreground score each; taking the max of those would halve its lesion
        probability. Then
        type_prob = [1 - lesion_prob, lesion_prob * p1 / (p1 + p2), lesion_prob * p2 / (p1 + p2)],
        which sums to 1 (where p1 = p2 = 0 the lesion probability is 0 too).

        Args:
            images: (N, 1, H, W) in [0, 1].

        Returns:
            Prediction with lesion_prob (N, 1, H, W) and type_prob (N, 3, H, W).
        """
        was_training = self.training
        self.eval()
        try:
            outputs = self.net(list(images.float()))
        finally:
            self.train(was_training)
        n, _, height, width = images.shape
        per_type = images.new_zeros((n, 2, height, width), dtype=torch.float32)
        for i, out in enumerate(outputs):
            if self.config.merge == "mask":
                keep = out["scores"] >= max(self.config.score_threshold, self.config.merge_min_score)
                weighted = out["masks"][keep, 0]  # (k, H, W)
            else:
                keep = out["scores"] >= self.config.score_threshold
                weighted = out["scores"][keep, None, None] * out["masks"][keep, 0]  # (k, H, W)
            labels = out["labels"][keep]
            for c in (1, 2):
                if (labels == c).any():
                    per_type[i, c - 1] = weighted[labels == c].amax(dim=0)
        lesion = per_type.sum(dim=1, keepdim=True).clamp(0.0, 1.0)
        share = per_type / per_type.sum(dim=1, keepdim=True).clamp_min(1e-12)
        type_prob = torch.cat([1.0 - lesion, lesion * share], dim=1)
        return Prediction(lesion_prob=lesion, type_prob=type_prob)

    def size_multiple(self) -> int:
        # torchvision's transform resizes and pads internally; any size works.
        return 1


DESCRIPTION = "Mask R-CNN (torchvision) with a ResNet-18 FPN; lesion regions as instances"


def build(*, config: MaskRCNNConfig) -> MaskRCNNModel:
    return MaskRCNNModel(config)
