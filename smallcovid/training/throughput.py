"""Training throughput: samples per second of real optimiser steps, per precision.

Used by ``python -m smallcovid bench`` to report how fast each model trains on this
machine in fp32 and in bf16 (autocast, the ``--precision bf16`` path of
:mod:`smallcovid.training.fold`), channels-last on CPU as training runs, and in fp32 NCHW
for what channels-last gains; measured in one process so the ratios are not skewed by a
change in machine load between two runs.
"""

from __future__ import annotations

import time

import torch

from smallcovid.data.augment import AugmentConfig, augment_batch
from smallcovid.models import build_model
from smallcovid.models.fuse import uses_channels_last
from smallcovid.training.precision import MixedPrecision

PRECISIONS = ("fp32", "bf16")


def train_samples_per_s(name: str, *, precision: str, image_size: int = 160, batch_size: int = 4,
                        steps: int = 4, warmup: int = 2, device: str | torch.device = "cpu",
                        seed: int = 0, nchw: bool = False) -> float:
    """Samples per second of ``steps`` timed training steps (after ``warmup`` untimed ones).

    Each step augments a batch of ``batch_size`` synthetic ``image_size``² slices
    (blob-shaped lesions, so detection models get real targets), runs the forward pass
    and loss under ``precision``'s autocast, backpropagates and takes an AdamW step —
    the same calls a training fold makes, in its memory format
    (:func:`~smallcovid.models.fuse.uses_channels_last`; ``nchw=True`` forces NCHW,
    to measure what channels-last gains).

    Raises:
        ValueError: ``precision`` is not one of :data:`PRECISIONS`, or a count is < 1.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    if min(image_size, batch_size, steps) < 1 or warmup < 0:
        raise ValueError(f"image_size, batch_size and steps must be >= 1 and warmup >= 0, "
                         f"got {image_size}, {batch_size}, {steps}, {warmup}")
    dev = torch.device(device)
    torch.manual_seed(seed)
    kw = {"image_size": image_size} if name == "mask-rcnn" else {}
    model = build_model(name, **kw).to(dev).train()
    amp = MixedPrecision(dev, "bf16" if precision == "bf16" else "auto")
    channels_last = uses_channels_last(model, dev) and not nchw
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    g = torch.Generator().manual_seed(seed)
    images, masks, types = _synthetic_batch(batch_size, image_size, g)

    def step() -> None:
        x, m, t = augment_batch(images, masks, types, AugmentConfig(), g)
        x = x.to(dev)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with amp.autocast():
            loss = model.loss(x, m.to(dev), t.to(dev))
        amp.backward_and_step(loss, opt)

    for _ in range(warmup):
        step()
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    return steps * batch_size / (time.perf_counter() - t0)


def _synthetic_batch(n: int, size: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``n`` noisy slices in [0, 1] with one elliptic lesion each: images and masks
    (n, 1, size, size) float32, type maps (n, size, size) int64 (1 = ground glass)."""
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    images, masks = [], []
    for _ in range(n):
        cy, cx = (torch.rand(2, generator=g) * 0.5 + 0.25) * size
        r = float(torch.rand(1, generator=g)) * size / 8 + size / 16
        blob = (((yy - cy) / r) ** 2 + ((xx - cx) / (1.4 * r)) ** 2 <= 1).float()
        images.append(0.3 + 0.1 * torch.rand(size, size, generator=g) + 0.4 * blob)
        masks.append(blob)
    img = torch.stack(images)[:, None]
    msk = torch.stack(masks)[:, None]
    return img, msk, msk[:, 0].long()
