"""Inference-only speed-ups: Conv+BatchNorm folding and channels-last memory layout.

Small networks such as SmallCovid-Net (24 channels) are memory-bound on CPUs:
each BatchNorm is a full extra pass over the feature map. Folding BN into the
preceding conv removes that pass; the channels-last (NHWC) layout lets oneDNN
run its direct convolutions without reordering every activation. Measured on the
2-core CPU (batch 1, trained weights; see docs/benchmark.md): SmallCovid-Net
at 192 px 23.2 -> 14.6 ms per forward pass, SegNet at 160 px 34.3 -> 24.3 ms,
U-Net at 160 px 51.2 -> 48.5 ms; probabilities change by < 1e-6.

Only for eval: the folded conv uses the running statistics, so a fused model
must never be trained again.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from smallcovid.models.base import SegmentationModel


def _fold_children(module: nn.Module) -> int:
    """Fold BN into the conv right before it: in Sequentials and as convN/bnN attributes."""
    folded = 0
    for child in module.children():
        folded += _fold_children(child)
    if isinstance(module, nn.Sequential):
        items = list(module._modules.items())
        for (name_a, a), (name_b, b) in zip(items, items[1:]):
            if type(a) is nn.Conv2d and type(b) is nn.BatchNorm2d and b.track_running_stats:
                module._modules[name_a] = fuse_conv_bn_eval(a, b)
                module._modules[name_b] = nn.Identity()
                folded += 1
    # torchvision ResNet blocks (also smp's encoders) keep conv1/bn1, conv2/bn2, ...
    # as attributes applied in that order in forward().
    for i in (1, 2, 3):
        conv, bn = getattr(module, f"conv{i}", None), getattr(module, f"bn{i}", None)
        if type(conv) is nn.Conv2d and type(bn) is nn.BatchNorm2d and bn.track_running_stats:
            setattr(module, f"conv{i}", fuse_conv_bn_eval(conv, bn))
            setattr(module, f"bn{i}", nn.Identity())
            folded += 1
    return folded


def uses_channels_last(model: SegmentationModel, device: torch.device) -> bool:
    """Whether ``model`` runs channels-last on ``device``: in :func:`optimize_for_inference`, and in
    training (fp32 and bf16 alike). Dense models on CPU do (oneDNN's fast path: 17-27 % less
    time per fp32 training step than NCHW on an AMD EPYC, one thread; ``python -m smallcovid
    bench`` measures it); Mask R-CNN stays NCHW (RoIAlign copies channels-last features back),
    and CUDA keeps NCHW."""
    return device.type == "cpu" and model.channels_last_inference


def optimize_for_inference(model: SegmentationModel, device: torch.device) -> SegmentationModel:
    """Fold BatchNorm into convs and, on CPU, switch dense models to channels-last.

    Modifies ``model`` in place (and returns it) and leaves it in eval mode.
    Mask R-CNN keeps the default layout: torchvision's RoIAlign would copy
    channels-last features back anyway.

    Args:
        model: a trained model; it must not be trained afterwards.
        device: where it will run.
    """
    model.eval()
    _fold_children(model)
    if uses_channels_last(model, device):
        model.to(memory_format=torch.channels_last)
    return model
