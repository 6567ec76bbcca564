"""A synthetic, CT-like chest slice with COVID-like lesions (the app's "Example").

Nothing here comes from a patient: the slice is drawn procedurally in Hounsfield
units (HU) from a seed, so the project may ship it and every run gives the same
image. Anatomy (approximate HU): air -1000, body soft tissue +40 with a
subcutaneous fat ring -100, two lungs -850 with vessels (+30) branching in them,
heart +40, spine +700. Lesions are irregular blobs inside the lungs: ground-glass
opacities (about -500 HU, type 1) and consolidations (about 0 HU, type 2).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from smallcovid.core.errors import SmallCovidError
from smallcovid.io import Slice

FIELD_OF_VIEW_MM = 360.0  # width of the square field of view; spacing = FOV / size

# (centre row, centre col) as fractions of the image, radius as a fraction, type (1 GGO, 2 consolidation)
_LESIONS = (
    (0.40, 0.30, 0.070, 1),
    (0.62, 0.25, 0.055, 1),
    (0.55, 0.72, 0.080, 1),
    (0.70, 0.66, 0.045, 2),
    (0.35, 0.74, 0.035, 2),
)
_LESION_HU = {1: -500.0, 2: 0.0}


@dataclass(frozen=True, eq=False)
class Phantom:
    """A synthetic slice and its ground truth.

    Attributes:
        scan: :class:`~smallcovid.io.Slice` in HU, (size, size), spacing in mm.
        mask: (size, size) bool lesion mask (all lesion types).
        types: (size, size) uint8: 0 background, 1 ground-glass, 2 consolidation.
        description: one sentence for the UI saying that it is synthetic.
    """

    scan: Slice
    mask: np.ndarray
    types: np.ndarray
    description: str


def _ellipse(rr: np.ndarray, cc: np.ndarray, r0: float, c0: float, a: float, b: float) -> np.ndarray:
    """Boolean ellipse centred at (r0, c0) with semi-axes a (rows) and b (cols), all in pixels."""
    return ((rr - r0) / a) ** 2 + ((cc - c0) / b) ** 2 <= 1.0


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Gaussian-filtered white noise normalised to unit standard deviation."""
    n = ndimage.gaussian_filter(rng.standard_normal(shape), sigma)
    return n / (n.std() + 1e-9)


def _vessels(rng: np.random.Generator, lungs: np.ndarray, size: int) -> np.ndarray:
    """Thin branching tubes from each hilum into the lungs -> (size, size) float in [0, 1]."""
    canvas = np.zeros((size, size), np.float32)
    for hilum_c in (0.40, 0.60):
        for _ in range(9):
            angle = rng.uniform(0, 2 * np.pi)
            r, c = 0.50 * size, hilum_c * size
            width = rng.uniform(0.9, 1.6) * size / 256
            for _ in range(int(0.32 * size)):
                angle += rng.normal(0, 0.08)
                r, c = r + np.sin(angle), c + np.cos(angle)
                ri, ci = int(r), int(c)
                if not (0 <= ri < size and 0 <= ci < size):
                    break
                canvas[ri, ci] = max(canvas[ri, ci], width)
                width *= 0.992
    tubes = ndimage.gaussian_filter(canvas, 1.0 * size / 256)
    tubes = np.clip(tubes / (tubes.max() + 1e-9) * 3.0, 0, 1)
    return tubes * lungs


def make_phantom(size: int = 256, seed: int = 0) -> Phantom:
    """Draw the phantom.

    Args:
        size: side in pixels (64..1024); spacing is ``FIELD_OF_VIEW_MM / size`` mm.
        seed: random seed for texture, vessels and lesion outlines (same seed, same image).

    Raises:
        SmallCovidError: ``size`` is out of range.
    """
    if not 64 <= int(size) <= 1024:
        raise SmallCovidError(f"phantom size must be between 64 and 1024 pixels, got {size}")
    size = int(size)
    rng = np.random.default_rng(seed)
    rr, cc = np.mgrid[0:size, 0:size].astype(np.float32)
    s = float(size)

    hu = np.full((size, size), -1000.0, np.float32)
    body = _ellipse(rr, cc, 0.52 * s, 0.50 * s, 0.34 * s, 0.45 * s)
    inner = _ellipse(rr, cc, 0.52 * s, 0.50 * s, 0.31 * s, 0.42 * s)
    hu[body] = -100.0  # subcutaneous fat
    hu[inner] = 40.0  # muscle / soft tissue
    left = _ellipse(rr, cc, 0.50 * s, 0.29 * s, 0.24 * s, 0.15 * s)
    right = _ellipse(rr, cc, 0.50 * s, 0.71 * s, 0.24 * s, 0.15 * s)
    heart = _ellipse(rr, cc, 0.58 * s, 0.47 * s, 0.12 * s, 0.11 * s)
    lungs = (left | right) & ~heart
    hu[lungs] = -850.0
    hu[heart] = 40.0
    spine = _ellipse(rr, cc, 0.80 * s, 0.50 * s, 0.05 * s, 0.05 * s)
    hu[spine] = 700.0
    hu += np.where(lungs, 25.0, 8.0) * _smooth_noise(rng, (size, size), 1.5 * s / 256)
    hu = np.where(lungs, hu + 880.0 * _vessels(rng, lungs, size), hu)

    types = np.zeros((size, size), np.uint8)
    for r0, c0, rad, kind in _LESIONS:
        wobble = 0.35 * _smooth_noise(rng, (size, size), 6.0 * s / 256)
        dist = np.hypot(rr - r0 * s, cc - c0 * s) / (rad * s)
        blob = (dist + wobble <= 1.0) & lungs
        types[blob] = np.maximum(types[blob], kind)
    mask = types > 0
    for kind, level in _LESION_HU.items():
        region = types == kind
        # Soft edges: blend the lesion density in over about a pixel.
        weight = ndimage.gaussian_filter(region.astype(np.float32), 0.8 * s / 256)
        hu = np.where(lungs, hu * (1 - weight) + (level + 20.0 * rng.standard_normal((size, size))) * weight, hu)
    hu += 6.0 * rng.standard_normal((size, size)).astype(np.float32)  # scanner noise
    spacing = FIELD_OF_VIEW_MM / size
    scan = Slice(hu.astype(np.float32), "hu", (spacing, spacing), "synthetic-phantom")
    description = (
        f"Synthetic CT-like phantom ({size}x{size} px, {spacing:.2f} mm/px), drawn procedurally: "
        "not a patient scan; its lesions (ground-glass about -500 HU, consolidation about 0 HU) "
        "are the ground truth."
    )
    return Phantom(scan, mask, types, description)
