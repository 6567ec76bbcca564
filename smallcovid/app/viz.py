"""Overlays (RGB uint8 arrays) for the app and reports; the plotly figures are in :mod:`smallcovid.app.figures`.

Images are (H, W) uint8 display images (see :func:`smallcovid.data.preprocess.display_uint8`);
masks are (H, W) bool; type maps are (H, W) uint8 with 0 background, 1 ground-glass,
2 consolidation. Every overlay is (H, W, 3) uint8 at the image's own size, so panels
of the same scan line up pixel for pixel.
"""

from __future__ import annotations

from io import BytesIO
from typing import Mapping, Sequence

import numpy as np
from scipy import ndimage

from smallcovid.core.errors import SmallCovidError

LESION_RGB = (255, 64, 32)  # binary lesion
TYPE_RGB = {1: (255, 210, 0), 2: (230, 30, 120)}  # ground-glass yellow, consolidation magenta
TRUTH_RGB = (0, 230, 255)  # outline of the ground truth
AGREE_RGB = (40, 200, 80)  # every model votes lesion
# Disagreement colours from "one model" (blue) over violet and pink to "all but one" (orange).
_DISAGREE_RAMP = np.array([[59, 130, 246], [168, 85, 247], [236, 72, 153], [249, 115, 22]], dtype=np.float32)


def _ramp(k: int, n: int) -> np.ndarray:
    """Colour of "k of n models vote lesion" for 0 < k < n (piecewise-linear along the ramp)."""
    t = 0.0 if n <= 2 else (k - 1) / (n - 2)
    x = t * (len(_DISAGREE_RAMP) - 1)
    i = min(int(x), len(_DISAGREE_RAMP) - 2)
    return (1 - (x - i)) * _DISAGREE_RAMP[i] + (x - i) * _DISAGREE_RAMP[i + 1]


def _check_image(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 2 or image.dtype != np.uint8:
        raise SmallCovidError(f"overlay needs a (H, W) uint8 display image, got {image.dtype} {image.shape}")
    return image


def _check_same(image: np.ndarray, arr: np.ndarray, what: str) -> np.ndarray:
    arr = np.asarray(arr)
    if arr.shape != image.shape:
        raise SmallCovidError(f"{what} is {arr.shape[::-1]} (width x height) but the image is {image.shape[::-1]}")
    return arr


def _blend(rgb: np.ndarray, where: np.ndarray, colour: Sequence[float], opacity: float) -> None:
    """In place: rgb[where] = (1 - opacity) * rgb + opacity * colour."""
    col = np.asarray(colour, dtype=np.float32)
    rgb[where] = (1.0 - opacity) * rgb[where] + opacity * col


def outline(mask: np.ndarray) -> np.ndarray:
    """(H, W) bool -> (H, W) bool: the mask's one-pixel inner border."""
    mask = np.asarray(mask, dtype=bool)
    return mask & ~ndimage.binary_erosion(mask)


def overlay(
    image: np.ndarray,
    mask: np.ndarray | None = None,
    types: np.ndarray | None = None,
    opacity: float = 0.45,
    truth: np.ndarray | None = None,
) -> np.ndarray:
    """Colour lesions over a gray display image.

    Args:
        image: (H, W) uint8 display image.
        mask: (H, W) bool lesion mask, drawn in :data:`LESION_RGB` (ignored when ``types`` is given).
        types: (H, W) uint8 type map, drawn in :data:`TYPE_RGB` (ground-glass, consolidation).
        opacity: 0 (image only) .. 1 (solid colour).
        truth: optional (H, W) bool ground truth, drawn as a cyan outline.

    Returns:
        (H, W, 3) uint8.
    """
    image = _check_image(image)
    if not 0.0 <= float(opacity) <= 1.0:
        raise SmallCovidError(f"opacity must be between 0 and 1, got {opacity}")
    rgb = np.repeat(image[..., None], 3, axis=2).astype(np.float32)
    if types is not None:
        types = _check_same(image, types, "the lesion-type map")
        for kind, colour in TYPE_RGB.items():
            _blend(rgb, types == kind, colour, opacity)
    elif mask is not None:
        _blend(rgb, _check_same(image, mask, "the mask").astype(bool), LESION_RGB, opacity)
    if truth is not None:
        rgb[outline(_check_same(image, truth, "the ground-truth mask"))] = TRUTH_RGB
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def vote_count(masks: Sequence[np.ndarray]) -> np.ndarray:
    """Number of models voting lesion per pixel: list of (H, W) bool -> (H, W) uint8."""
    if not masks:
        raise SmallCovidError("the disagreement map needs at least one model's mask")
    shape = np.shape(masks[0])
    for m in masks:
        if np.shape(m) != shape:
            raise SmallCovidError(f"all masks must have the same size; got {np.shape(m)} and {shape}")
    return np.sum([np.asarray(m, dtype=bool) for m in masks], axis=0).astype(np.uint8)


def disagreement_overlay(image: np.ndarray, masks: Sequence[np.ndarray], opacity: float = 0.6) -> np.ndarray:
    """Where models disagree: colour by the number of lesion votes.

    Pixels voted lesion by k of n models: k = n (all agree) -> green; 0 < k < n ->
    a blue (k = 1) over violet and pink to orange (k = n - 1) ramp; k = 0 -> the gray image.

    Returns:
        (H, W, 3) uint8.
    """
    image = _check_image(image)
    votes = vote_count(masks)
    _check_same(image, votes, "the model masks")
    n = len(masks)
    rgb = np.repeat(image[..., None], 3, axis=2).astype(np.float32)
    _blend(rgb, votes == n, AGREE_RGB, opacity)
    for k in range(1, n):
        _blend(rgb, votes == k, _ramp(k, n), opacity)
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def disagreement_legend(n_models: int) -> list[tuple[str, str]]:
    """(label, CSS hex colour) pairs explaining :func:`disagreement_overlay` for ``n_models``."""
    items = []
    for k in range(1, n_models):
        col = _ramp(k, n_models)
        items.append((f"{k} of {n_models}", "#%02x%02x%02x" % tuple(int(round(v)) for v in col)))
    items.append((f"all {n_models}", "#%02x%02x%02x" % AGREE_RGB))
    return items


def png_bytes(array: np.ndarray) -> bytes:
    """Encode a (H, W) uint8, (H, W) bool (-> 0/255) or (H, W, 3) uint8 array as PNG bytes."""
    from PIL import Image

    arr = np.asarray(array)
    if arr.dtype == bool:
        arr = arr.astype(np.uint8) * 255
    if arr.dtype != np.uint8 or not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] in (3, 4))):
        raise SmallCovidError(f"png_bytes needs a uint8 (H, W) or (H, W, 3) array, got {arr.dtype} {arr.shape}")
    buf = BytesIO()
    Image.fromarray(np.ascontiguousarray(arr)).save(buf, format="PNG")
    return buf.getvalue()
