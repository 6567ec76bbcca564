"""Training-time augmentation on square tensors (flips, 90-degree turns, scale, zoom-out and intensity jitter).

Everything draws from an explicit ``torch.Generator`` so that an epoch's
augmentation is a pure function of (seed, fold, epoch): a resumed run sees the
same batches as an uninterrupted one.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class AugmentConfig:
    """Augmentation strengths; ``enabled=False`` turns all of it off."""

    enabled: bool = True
    flip: bool = True
    rot90: bool = True
    scale: float = 0.15  # zoom factor drawn from [1 - scale, 1 + scale]
    gain: float = 0.1  # intensity multiplied by [1 - gain, 1 + gain]
    bias: float = 0.05  # intensity shifted by [-bias, +bias]
    gamma: float = 0.2  # gamma drawn from [1 - gamma, 1 + gamma]
    # Zoom-out: with probability 1/2 an image is shrunk and placed at a random spot on a
    # canvas of its own background value (its minimum), the padding taking a share drawn
    # from [0, zoom_out] of each side; 0 (default) = off, and no random numbers are drawn,
    # so runs without it stay bit-identical. Teaches framings other than the tight crops.
    zoom_out: float = 0.0
    # Multi-scale: zoom drawn from [zoom_lo, zoom_hi] instead of 1 +- scale (None: off).
    zoom_range: tuple[float, float] | None = None
    # Lesion copy-paste: with this probability an image gets the lesions of another image of
    # the batch (random flip and shift), pasted only where it shows lung parenchyma (0 = off,
    # and no random numbers are drawn, so runs without it stay bit-identical).
    copy_paste: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.zoom_out < 1.0:
            raise ValueError(f"zoom_out must be a padding share in [0, 1), got {self.zoom_out!r}")
        if not 0.0 <= self.copy_paste <= 1.0:
            raise ValueError(f"copy_paste must be a probability in [0, 1], got {self.copy_paste!r}")
        if self.zoom_range is not None and not 0.1 <= self.zoom_range[0] <= self.zoom_range[1] <= 4.0:
            raise ValueError(f"zoom_range must be (low, high) with 0.1 <= low <= high <= 4, got {self.zoom_range!r}")


def _uniform(g: torch.Generator, n: int, lo: float, hi: float) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=g)


def augment_batch(
    images: torch.Tensor,
    masks: torch.Tensor,
    types: torch.Tensor,
    cfg: AugmentConfig,
    g: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Augment a batch on the CPU.

    Args:
        images: (N, 1, S, S) float in [0, 1].
        masks: (N, 1, S, S) float {0, 1}.
        types: (N, S, S) int64 (0/1/2, or -100 where unlabeled).
        cfg: strengths.
        g: random generator (CPU).

    Returns:
        The augmented (images, masks, types), same shapes and dtypes.
    """
    if not cfg.enabled:
        return images, masks, types
    n = images.shape[0]
    images, masks, types = images.clone(), masks.clone(), types.clone()
    for i in range(n):
        if cfg.flip and torch.rand(1, generator=g).item() < 0.5:
            images[i], masks[i], types[i] = images[i].flip(-1), masks[i].flip(-1), types[i].flip(-1)
        if cfg.flip and torch.rand(1, generator=g).item() < 0.5:
            images[i], masks[i], types[i] = images[i].flip(-2), masks[i].flip(-2), types[i].flip(-2)
        if cfg.rot90:
            k = int(torch.randint(0, 4, (1,), generator=g).item())
            if k:
                images[i] = torch.rot90(images[i], k, (-2, -1))
                masks[i] = torch.rot90(masks[i], k, (-2, -1))
                types[i] = torch.rot90(types[i], k, (-2, -1))
    if cfg.copy_paste > 0 and n > 1:
        images, masks, types = _copy_paste(images, masks, types, cfg.copy_paste, g)
    if cfg.zoom_range is not None or cfg.scale > 0:
        lo, hi = cfg.zoom_range if cfg.zoom_range is not None else (1 - cfg.scale, 1 + cfg.scale)
        zoom = _uniform(g, n, lo, hi)
        theta = torch.zeros(n, 2, 3)
        theta[:, 0, 0] = 1 / zoom
        theta[:, 1, 1] = 1 / zoom
        grid = F.affine_grid(theta, list(images.shape), align_corners=False)
        images = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        masks = F.grid_sample(masks, grid, mode="nearest", padding_mode="zeros", align_corners=False)
        # Types go through float for grid_sample; -100 (unlabeled) survives nearest sampling.
        t = F.grid_sample(types[:, None].float(), grid, mode="nearest", padding_mode="zeros", align_corners=False)
        types = t[:, 0].round().long()
    if cfg.zoom_out > 0:
        images, masks, types = _zoom_out(images, masks, types, cfg.zoom_out, g)
    gain = _uniform(g, n, 1 - cfg.gain, 1 + cfg.gain).view(n, 1, 1, 1)
    bias = _uniform(g, n, -cfg.bias, cfg.bias).view(n, 1, 1, 1)
    gamma = _uniform(g, n, 1 - cfg.gamma, 1 + cfg.gamma).view(n, 1, 1, 1)
    images = (images.clamp(0, 1) ** gamma * gain + bias).clamp(0, 1)
    return images, masks, types


#: Lung parenchyma in the [0, 1] lung window of the training slices: between these levels
#: (about -1250 and -800 HU; the slices' parenchyma sits near 0.17, the air outside the body
#: near 0, tissue above 0.6), so lesions are pasted onto aerated lung only.
PARENCHYMA_LEVELS = (0.06, 0.37)


def _copy_paste(images: torch.Tensor, masks: torch.Tensor, types: torch.Tensor, p: float,
                g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Paste another image's lesions into some images, only over lung parenchyma.

    Per image, five random numbers are drawn whatever the outcome (apply, donor, flip, two
    shifts). The donor's lesion pixels, flipped and shifted, land where the recipient is
    within :data:`PARENCHYMA_LEVELS` (aerated lung, so never on the chest wall, mediastinum
    or the air outside the body); the recipient's mask and types take the pasted
    pixels' labels. Images without a donor lesion are left alone.
    """
    n, _, h, w = images.shape
    out_i, out_m, out_t = images.clone(), masks.clone(), types.clone()
    for i in range(n):
        apply, donor, flip, dr, dc = torch.rand(5, generator=g).tolist()
        j = (i + 1 + int(donor * (n - 1))) % n  # any other image of the batch
        if apply >= p or j == i or not bool(masks[j].any()):
            continue
        src_i, src_m, src_t = images[j], masks[j], types[j]
        if flip < 0.5:
            src_i, src_m, src_t = src_i.flip(-1), src_m.flip(-1), src_t.flip(-1)
        sr, sc = int((dr - 0.5) * h * 0.3), int((dc - 0.5) * w * 0.3)  # shift up to 15 % of a side
        src_i = torch.roll(src_i, (sr, sc), (-2, -1))
        src_m = torch.roll(src_m, (sr, sc), (-2, -1))
        src_t = torch.roll(src_t, (sr, sc), (-2, -1))
        lo, hi = PARENCHYMA_LEVELS
        where = (src_m[0] > 0) & (images[i, 0] > lo) & (images[i, 0] < hi) & (src_t >= 0)
        if not bool(where.any()):
            continue
        out_i[i, 0][where] = src_i[0][where]
        out_m[i, 0][where] = 1.0
        out_t[i][where] = src_t[where]
    return out_i, out_m, out_t


def _zoom_out(images: torch.Tensor, masks: torch.Tensor, types: torch.Tensor, max_pad: float,
              g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Shrink some images into a canvas of their background value (see ``AugmentConfig.zoom_out``).

    Four random numbers per image are drawn whether or not it is zoomed out (so the
    stream does not depend on the outcomes). Images are resized bilinearly with
    antialiasing, masks and types with nearest neighbour (types keep -100, unlabeled);
    the padding is background (0) in masks and types.
    """
    n, _, h, w = images.shape
    images, masks, types = images.clone(), masks.clone(), types.clone()
    for i in range(n):
        apply, pad, fr, fc = torch.rand(4, generator=g).tolist()
        pad *= max_pad
        sh, sw = max(1, round(h * (1 - pad))), max(1, round(w * (1 - pad)))
        if apply >= 0.5 or (sh, sw) == (h, w):
            continue
        r0, c0 = int(fr * (h - sh + 1)), int(fc * (w - sw + 1))
        r0, c0 = min(r0, h - sh), min(c0, w - sw)
        small = F.interpolate(images[i : i + 1], size=(sh, sw), mode="bilinear", align_corners=False, antialias=True)
        small_m = F.interpolate(masks[i : i + 1], size=(sh, sw), mode="nearest")
        small_t = F.interpolate(types[i : i + 1, None].float(), size=(sh, sw), mode="nearest")[:, 0].round().long()
        images[i] = images[i].amin()
        images[i, :, r0 : r0 + sh, c0 : c0 + sw] = small[0]
        masks[i] = 0
        masks[i, :, r0 : r0 + sh, c0 : c0 + sw] = small_m[0]
        types[i] = 0
        types[i, r0 : r0 + sh, c0 : c0 + sw] = small_t[0]
    return images, masks, types
