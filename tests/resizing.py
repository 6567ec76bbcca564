"""Resizing helpers that only the tests use (moved out of ``smallcovid.data.preprocess``).

The package resizes inside :class:`smallcovid.inference.predictor.Predictor` (torch
``F.interpolate``) and in ``smallcovid.training`` (to_tensors); these NumPy helpers
remain here for tests that need an image, mask or probability map at another size.
All arrays are (H, W) or (C, H, W); ``size`` is (h, w).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from smallcovid.core.errors import SmallCovidError


def _check_size(size: tuple[int, int]) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in size)
    except (TypeError, ValueError):
        raise SmallCovidError(f"size must be (height, width), got {size!r}") from None
    if h < 1 or w < 1:
        raise SmallCovidError(f"size must be positive, got {h}x{w}")
    return h, w


def _interpolate(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(C, H, W) float -> (C, h, w) float32, bilinear, antialiased when shrinking."""
    h, w = size
    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))[None]
    shrink = h < x.shape[-2] or w < x.shape[-1]
    with torch.no_grad():
        out = F.interpolate(t, size=(h, w), mode="bilinear", align_corners=False, antialias=shrink)
    return out[0].numpy()


def resize_image(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H, W) image -> (h, w) float32, bilinear (antialiased when shrinking). ``size`` is (h, w)."""
    size = _check_size(size)
    x = np.asarray(x)
    if x.ndim != 2:
        raise SmallCovidError(f"resize_image needs a (H, W) array, got shape {x.shape}")
    if x.shape == size:
        return x.astype(np.float32, copy=True)
    return _interpolate(x[None], size)[0]


def resize_mask(m: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H, W) mask or label map -> (h, w), nearest neighbour, same dtype and values.

    Uses pixel centres (like ``nearest-exact``): output pixel i takes input row
    floor((i + 0.5) * H / h).
    """
    h, w = _check_size(size)
    m = np.asarray(m)
    if m.ndim != 2:
        raise SmallCovidError(f"resize_mask needs a (H, W) array, got shape {m.shape}")
    rows = np.minimum(((np.arange(h) + 0.5) * m.shape[0] / h).astype(np.int64), m.shape[0] - 1)
    cols = np.minimum(((np.arange(w) + 0.5) * m.shape[1] / w).astype(np.int64), m.shape[1] - 1)
    return m[rows[:, None], cols[None, :]]


def resize_prob(p: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(C, H, W) or (H, W) probabilities -> (C, h, w) or (h, w) float32 in [0, 1], bilinear.

    Used to map model outputs back to the input's own size.
    """
    size = _check_size(size)
    p = np.asarray(p)
    if p.ndim not in (2, 3):
        raise SmallCovidError(f"resize_prob needs a (C, H, W) or (H, W) array, got shape {p.shape}")
    out = _interpolate(p if p.ndim == 3 else p[None], size)
    out = np.clip(out, 0.0, 1.0)
    return out if p.ndim == 3 else out[0]
