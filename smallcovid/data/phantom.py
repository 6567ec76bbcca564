"""A synthetic chest CT slice with COVID-19-like lesions (the app's "Example").

Nothing here comes from a patient: the slice is drawn procedurally from a seed, so the
project may ship it and every run gives the same image. It is drawn to look like the
slices the shipped models were trained on (the COVID-SemiSeg training split: 8-bit
lung-window JPEGs, cropped around the chest, the patient turned 90 degrees so that the
lungs lie one above the other, front at the left, spine at the right):

* **framing**: the chest fills the frame, its wall cut by the image border; a little air
  in the corners. The lungs' box spans the whole image, as in the training crops.
* **anatomy**: a chest wall of fat, muscle and rib sections; two lungs (the patient's
  right at the top); between them the mediastinum with the heart bulging into the lower
  lung, the airways (dark) and the spine at the back (right).
* **lung**: parenchyma with a gentle front-to-back density gradient and fine texture;
  vessels branching from each hilum and tapering, plus vessels cut across (dots).
* **lesions**, peripheral and subpleural as in COVID-19 pneumonia: ground-glass
  opacities (hazy, the vessels still visible through them) and, towards the back,
  dense consolidations (with air bronchograms) inside a ground-glass halo.

Densities are chosen so that the lung window (W 1500 / L -600, as the app and the
models use) shows each tissue at the 8-bit level it has in the training JPEGs
(measured on the 50 slices with their class maps): parenchyma about 45 (p10-p90
30-72), ground-glass about 110 (p10-p90 55-145), consolidation about 175 (100-200),
vessels about 215, chest wall and mediastinum about 215-235. The values are stored in
Hounsfield units through that window, ``HU = level / 255 * 1500 - 1350``: parenchyma
comes out near -1080 HU, darker than real lung (about -850), because the training
JPEGs were exported darker than a W1500/L-600 window; matching the models' training
data matters more here than physical HU. Outside air is -1000 HU, bone +700 HU.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from smallcovid.core.errors import SmallCovidError
from smallcovid.io import Slice

FIELD_OF_VIEW_MM = 300.0  # width of the (cropped, square) field of view; spacing = FOV / size

# 8-bit lung-window levels of the training JPEGs (see the module docstring).
LUNG_LEVEL = 44.0
GGO_LEVEL = 118.0
CONSOLIDATION_LEVEL = 178.0
VESSEL_LEVEL = 215.0
MEDIASTINUM_LEVEL = 224.0
MUSCLE_LEVEL = 232.0
FAT_LEVEL = 205.0
AIR_HU = -1000.0
BONE_HU = 700.0
EXAMPLE_SIZE, EXAMPLE_SEED = 256, 2  # the app's Example (tests/test_phantom.py checks every shipped model on it)


def level_to_hu(level):
    """8-bit lung-window level (array or number) -> HU, the inverse of W 1500 / L -600 (float32 for arrays)."""
    if isinstance(level, np.ndarray):
        return (level.astype(np.float32) / np.float32(255.0) * np.float32(1500.0) - np.float32(1350.0))
    return float(level) / 255.0 * 1500.0 - 1350.0


@dataclass(frozen=True, eq=False)
class Phantom:
    """A synthetic slice and its ground truth.

    Attributes:
        scan: :class:`~smallcovid.io.Slice` in HU, (size, size), spacing in mm.
        mask: (size, size) bool lesion mask (all lesion types).
        types: (size, size) uint8: 0 background, 1 ground-glass, 2 consolidation.
        lungs: (size, size) uint8 lung labels: 0 outside, 1 upper (patient's right), 2 lower (left).
        description: one sentence for the UI saying that it is synthetic.
    """

    scan: Slice
    mask: np.ndarray
    types: np.ndarray
    lungs: np.ndarray
    description: str


def _superellipse(yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, ry: float, rx: float,
                  p: float = 2.0) -> np.ndarray:
    """Normalised distance of a superellipse: < 1 inside (all coordinates as fractions of the side)."""
    return (np.abs((yy - cy) / ry) ** p + np.abs((xx - cx) / rx) ** p) ** (1.0 / p)


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Gaussian-filtered white noise normalised to unit standard deviation."""
    n = ndimage.gaussian_filter(rng.standard_normal(shape), max(sigma, 0.3))
    return (n / (n.std() + 1e-9)).astype(np.float32)


def _soft(dist: np.ndarray, width: float) -> np.ndarray:
    """Weight 1 inside (dist < 1), 0 outside, with a smooth edge ``width`` wide (in distance units)."""
    return (1.0 / (1.0 + np.exp((dist - 1.0) / max(width, 1e-3)))).astype(np.float32)


def _vessel_tree(rng: np.random.Generator, lungs: np.ndarray, hila: list[tuple[float, float, float]],
                 size: int) -> np.ndarray:
    """Branching, tapering vessels from each hilum plus vessels cut across -> (size, size) weight in [0, 1]."""
    radius = np.zeros((size, size), np.float32)  # centre lines, holding the tube radius in pixels
    scale = size / 256.0
    inside = ndimage.binary_erosion(lungs, iterations=max(1, int(3 * scale)))

    def grow(r: float, c: float, angle: float, rad: float, length: int, depth: int) -> None:
        for step in range(length):
            angle += rng.normal(0, 0.05 / np.sqrt(scale))
            r, c = r + np.sin(angle), c + np.cos(angle)
            ri, ci = int(round(r)), int(round(c))
            if not (0 <= ri < size and 0 <= ci < size) or (step > 8 * scale and not inside[ri, ci]):
                return
            radius[ri, ci] = max(radius[ri, ci], rad)
            rad = max(0.45 * scale, rad * 0.982)
            if depth < 3 and step > 8 * scale and rng.random() < 0.035 / scale:  # per mm, not per pixel
                turn = rng.choice([-1, 1]) * rng.uniform(0.25, 0.6)
                grow(r, c, angle + turn, rad * 0.8, int(length * 0.55), depth + 1)

    for hr, hc, direction in hila:
        # Trunks fanning out from the hilum, each leaving the mediastinum at its own point.
        for angle, dc in zip(np.linspace(-1.25, 1.25, 4) + rng.uniform(-0.15, 0.15, 4), np.linspace(-0.12, 0.12, 4)):
            grow(hr * size, (hc + dc) * size, direction + angle, rng.uniform(1.1, 1.7) * scale,
                 int(rng.uniform(0.30, 0.45) * size), 0)
    # Peripheral branches all over the lungs, pointing away from their hilum.
    ys, xs = np.nonzero(inside)
    for i in rng.choice(len(ys), size=min(len(ys), 18), replace=False):
        hr, hc, _ = min(hila, key=lambda h: abs(h[0] * size - ys[i]))
        angle = np.arctan2(ys[i] - hr * size, xs[i] - hc * size) + rng.normal(0, 0.3)
        grow(float(ys[i]), float(xs[i]), angle, rng.uniform(0.6, 1.0) * scale, int(rng.uniform(0.05, 0.12) * size), 2)
    # Vessels cut across: small dots all over the lungs.
    for i in rng.choice(len(ys), size=min(len(ys), int(80 * scale ** 2)), replace=False):
        radius[ys[i], xs[i]] = max(radius[ys[i], xs[i]], rng.uniform(0.5, 1.3) * scale)
    # Tube of the nearest centre line's radius, anti-aliased over one pixel.
    dist, (iy, ix) = ndimage.distance_transform_edt(radius == 0, return_indices=True)
    tubes = np.clip(radius[iy, ix] + 0.5 - dist, 0.0, 1.0)
    # Thin vessels look dimmer (partial volume): full contrast from a radius of 1.5 px up.
    tubes *= np.clip(radius[iy, ix] / (1.5 * scale), 0.7, 1.0)
    return ndimage.gaussian_filter(tubes, 0.4 * scale) * lungs


def _lesion_blob(rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, radius: float,
                 rough: float, size: int) -> np.ndarray:
    """Irregular blob distance (< 1 inside) around (cy, cx) with lobulated, noisy margins."""
    d = np.hypot((yy - cy) / (radius * rng.uniform(0.75, 1.1)), (xx - cx) / (radius * rng.uniform(0.9, 1.35)))
    return d + rough * _smooth_noise(rng, (size, size), 5.0 * size / 256)


def _boundary_point(rng: np.random.Generator, lung: np.ndarray, prefer_back: bool) -> tuple[int, int]:
    """A point on the lung's outer border (subpleural), at the back (right) when asked."""
    edge = lung & ~ndimage.binary_erosion(lung, iterations=2)
    ys, xs = np.nonzero(edge)
    w = np.ones(len(ys))
    if prefer_back:
        w = np.maximum(xs - np.percentile(xs, 55), 0) + 1e-3
    i = rng.choice(len(ys), p=w / w.sum())
    return int(ys[i]), int(xs[i])


def make_phantom(size: int = 256, seed: int = 0) -> Phantom:
    """Draw the phantom.

    Args:
        size: side in pixels (64..1024); spacing is ``FIELD_OF_VIEW_MM / size`` mm.
        seed: random seed for texture, vessels and lesions (same seed, same image).

    Raises:
        SmallCovidError: ``size`` is out of range.
    """
    if not 64 <= int(size) <= 1024:
        raise SmallCovidError(f"phantom size must be between 64 and 1024 pixels, got {size}")
    size = int(size)
    rng = np.random.default_rng(seed)
    yy, xx = (np.mgrid[0:size, 0:size].astype(np.float32) + 0.5) / size
    px = 1.0 / size  # one pixel in fractions of the side

    # --- the chest, cropped: body and wall layers (front = left, back = right)
    body_d = _superellipse(yy, xx, 0.50, 0.50, 0.62, 0.575, 2.6)
    lvl = np.full((size, size), MEDIASTINUM_LEVEL, np.float32)
    fat = (body_d > 0.93) & (body_d < 1.0)
    lvl[fat] = FAT_LEVEL
    # --- lungs: upper (patient's right) and lower (left), the heart bulging into the lower one
    up = _superellipse(yy, xx, 0.275, 0.50, 0.24, 0.46, 2.3) < 1.0
    low = _superellipse(yy, xx, 0.725, 0.51, 0.24, 0.45, 2.3) < 1.0
    heart = _superellipse(yy, xx, 0.545, 0.36, 0.155, 0.22, 2.0) < 1.0
    spine_zone = _superellipse(yy, xx, 0.50, 0.90, 0.10, 0.12, 2.0) < 1.0
    mediastinum = (np.abs(yy - 0.50) < 0.055) | heart | spine_zone
    lungs = np.zeros((size, size), np.uint8)
    lungs[up & ~mediastinum] = 1
    lungs[low & ~mediastinum] = 2
    lungs[(body_d > 0.86)] = 0  # the chest wall
    lung = lungs > 0
    # --- parenchyma: front-to-back density gradient, fine texture
    paren = (LUNG_LEVEL - 6.0 + 14.0 * xx + 7.0 * _smooth_noise(rng, (size, size), 2.2 * size / 256)
             + 5.0 * _smooth_noise(rng, (size, size), 0.6 * size / 256))
    lvl = np.where(lung, paren, lvl)

    # --- lesions: peripheral ground-glass patches, dense consolidation at the back inside a halo
    ggo_w = np.zeros((size, size), np.float32)
    cons_w = np.zeros((size, size), np.float32)
    types = np.zeros((size, size), np.uint8)
    for side in (1, 2):
        this = lungs == side
        n_ggo = int(rng.integers(2, 4))
        for k in range(n_ggo + 1):
            cy, cx = _boundary_point(rng, this, prefer_back=k == n_ggo)
            consolidation = k == n_ggo
            radius = rng.uniform(0.085, 0.12) if consolidation else rng.uniform(0.07, 0.115)
            # Centre moved a little into the lung: the blob still reaches the pleura.
            inward = np.array([0.5 - cy * px, 0.5 - cx * px])
            inward /= np.linalg.norm(inward) + 1e-9
            c = np.array([cy * px, cx * px]) + inward * radius * 0.45
            d = _lesion_blob(rng, yy, xx, c[0], c[1], radius, 0.16, size)
            w = _soft(d, 0.06) * this
            if consolidation:
                core = _soft(d + 0.32, 0.03) * this  # the dense core, about 2/3 of the radius, in a ground-glass halo
                cons_w = np.maximum(cons_w, core)
            ggo_w = np.maximum(ggo_w, w)
    # Patchy haze: denser and fainter parts, fine reticular texture on top.
    haze = GGO_LEVEL + 14.0 * _smooth_noise(rng, (size, size), 4.0 * size / 256) \
        + 9.0 * _smooth_noise(rng, (size, size), 1.2 * size / 256) + 5.0 * _smooth_noise(rng, (size, size), 0.5)
    lvl = np.where(lung, lvl * (1 - ggo_w) + haze * ggo_w, lvl)

    # --- vessels on top of parenchyma and ground glass (visible through the haze)
    hila = [(0.445, 0.62, -np.pi / 2), (0.555, 0.62, np.pi / 2)]  # where the vessels leave the mediastinum
    tubes = _vessel_tree(rng, lung, [(r, c, a) for r, c, a in hila], size)
    vessel = VESSEL_LEVEL + 8.0 * _smooth_noise(rng, (size, size), 1.0)
    lvl = lvl * (1 - tubes) + vessel * tubes

    # --- consolidation: dense, hides the vessels, with a few air bronchograms
    dense = CONSOLIDATION_LEVEL + 10.0 * _smooth_noise(rng, (size, size), 1.2 * size / 256)
    lvl = lvl * (1 - cons_w) + dense * cons_w
    if cons_w.max() > 0:
        bronch = np.zeros((size, size), np.float32)
        ys, xs = np.nonzero(cons_w > 0.9)
        for i in rng.choice(len(ys), size=min(len(ys), 4), replace=False):
            r, c, a = float(ys[i]), float(xs[i]), rng.uniform(0, 2 * np.pi)
            for _ in range(int(0.05 * size)):
                r, c, a = r + np.sin(a), c + np.cos(a), a + rng.normal(0, 0.1)
                if 0 <= int(r) < size and 0 <= int(c) < size and cons_w[int(r), int(c)] > 0.9:
                    bronch[int(r), int(c)] = 1.0
        bronch = np.clip(ndimage.gaussian_filter(bronch, 0.6 * size / 256) * 2.5, 0, 1) * (cons_w > 0.9)
        lvl = lvl * (1 - 0.7 * bronch) + LUNG_LEVEL * 0.7 * bronch

    # --- ground truth: where the drawing is a lesion (consolidation wins over its halo)
    types[(ggo_w >= 0.5) & lung] = 1
    types[(cons_w >= 0.5) & lung] = 2
    mask = types > 0

    # --- mediastinum details: airways (air), aorta, spine (bone), chest wall muscle and ribs
    hu = level_to_hu(lvl)
    airways = ((np.hypot(yy - 0.475, xx - 0.62) < 0.022) | (np.hypot(yy - 0.525, xx - 0.655) < 0.018))
    hu[airways] = AIR_HU
    muscle = (body_d > 0.86) & (body_d <= 0.93)
    hu[muscle] = level_to_hu(MUSCLE_LEVEL)
    vertebra = _superellipse(yy, xx, 0.50, 0.935, 0.075, 0.06, 2.2) < 1.0
    hu[vertebra] = BONE_HU
    for t in np.linspace(0.15, 2 * np.pi - 0.15, 14):
        ry, rx = 0.5 + 0.56 * np.sin(t) * 0.9, 0.5 + 0.53 * np.cos(t) * 0.9
        rib = _superellipse(yy, xx, ry, rx, 0.018, 0.018 * rng.uniform(1.3, 2.2), 2.0) < 1.0
        hu[rib & (body_d > 0.86) & (body_d < 0.98)] = BONE_HU * 0.7
    hu[body_d >= 1.0] = AIR_HU
    # --- scanner noise, then a slight blur (the training slices are resampled JPEGs)
    hu += (1500.0 / 255.0) * 3.0 * rng.standard_normal((size, size)).astype(np.float32)
    hu = ndimage.gaussian_filter(hu, 0.45 * size / 256).astype(np.float32)

    spacing = FIELD_OF_VIEW_MM / size
    scan = Slice(hu, "hu", (spacing, spacing), "synthetic-phantom")
    description = (
        f"Synthetic chest CT slice ({size}x{size} px, {spacing:.2f} mm/px), drawn procedurally like the training "
        "slices (cropped chest, turned 90°): not a patient scan. Its lesions, hazy ground-glass with vessels seen "
        "through it and dense consolidation at the back, are the ground truth."
    )
    return Phantom(scan, mask, types, lungs, description)


def make_example() -> Phantom:
    """The app's Example: :func:`make_phantom` at :data:`EXAMPLE_SIZE` px with :data:`EXAMPLE_SEED`."""
    return make_phantom(EXAMPLE_SIZE, seed=EXAMPLE_SEED)
