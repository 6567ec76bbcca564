"""Scanner-like frames and volumes built around labelled crops: tests and measurement only.

The labelled slices are 8-bit lung-window crops of the body. A scanner slice is not: the
field of view is a square of 0.5-1.0 mm pixels in which the body may fit or run past one
to four edges (a tight reconstruction field cuts the arms and flanks), arms lie beside
the chest, a table lies under the back, blankets over the front, and noise varies. This
module rebuilds such a frame around a crop, seeded and randomised over those factors, with
the crop's lesion mask carried along as ground truth, so that the lung finder and the
framing can be measured on the cases that break them rather than on one construction.

Frames are built in the training orientation (:data:`smallcovid.io.orient.CANONICAL`: the
patient's right at the top, the back at the right, so the table is on the right and arms
above and below); :meth:`ScannerFrame.slice` returns them in that or the standard DICOM
orientation. Intensities: crop grey levels map to HU as ``level / 255 * 1500 - 1350``
(the inverse lung window, as :func:`smallcovid.data.phantom.level_to_hu`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage as ndi

from smallcovid.data.phantom import level_to_hu
from smallcovid.data.scannerprops import FAT, MUSCLE, add_arms, add_blanket, add_table
from smallcovid.io import Slice, Volume
from smallcovid.io.orient import from_canonical

AIR = -1000.0
WALL_HU = -60.0  # chest wall as the lung-window crops show it (levels ~ 220)
EDGE_SHARES = (0.3, 0.25, 0.2, 0.15, 0.1)  # how often a frame's body touches 0, 1, 2, 3, 4 edges
STANDARD = ("P", "L")  # a standard axial DICOM's (row, column) directions


@dataclass(frozen=True, eq=False)
class ScannerFrame:
    """One scanner-like frame in the training orientation.

    Attributes:
        hu: (N, N) float32 Hounsfield units.
        lesion: (N, N) bool ground-truth lesion; ``classes``: (N, N) uint8 0/1/2.
        spacing: pixel size in mm (square pixels).
        place: rows and columns of the frame holding the (resized) crop.
        edges: image edges (0-4) the body touches.
        extras: what else is in the frame, e.g. ``("arms", "table", "blanket")``.
        chest: (N, N) bool the patient's chest (no arms, table or blanket): lungs never
            lie outside it.
    """

    hu: np.ndarray
    lesion: np.ndarray
    classes: np.ndarray
    spacing: float
    place: tuple[slice, slice]
    edges: int
    extras: tuple[str, ...] = field(default=())
    chest: np.ndarray | None = None

    def slice(self, orientation: str = "canonical", name: str = "frame") -> Slice:
        """The frame as an HU :class:`Slice`: ``"canonical"`` (as built) or ``"standard"``
        (a standard axial DICOM's layout: the transpose, with ``axes`` saying so)."""
        if orientation == "canonical":
            return Slice(self.hu, "hu", (self.spacing, self.spacing), name, ("L", "P"))
        if orientation == "standard":
            return Slice(np.ascontiguousarray(from_canonical(self.hu, STANDARD)), "hu",
                         (self.spacing, self.spacing), name, STANDARD)
        raise ValueError(f"orientation must be 'canonical' or 'standard', got {orientation!r}")


def crop_hu(img8: np.ndarray) -> np.ndarray:
    """An 8-bit lung-window crop as float32 HU."""
    return level_to_hu(np.asarray(img8, np.uint8))


def outside_air(hu: np.ndarray) -> np.ndarray:
    """(h, w) bool: the crop's air outside the body (its corners), as opposed to lung.

    Air components touching the crop's border whose pixels mostly lie near that border
    (median distance below 6 % of the short side): corner wedges, not a lung cut by the crop.
    """
    air = hu < -500
    lab, n = ndi.label(air)
    out = np.zeros_like(air)
    if n == 0:
        return out
    edge_ids = np.unique(np.concatenate([lab[0], lab[-1], lab[:, 0], lab[:, -1]]))
    inner = np.zeros_like(air)
    inner[1:-1, 1:-1] = True
    dist = ndi.distance_transform_edt(inner)
    for i in edge_ids[edge_ids > 0]:
        comp = lab == i
        if np.median(dist[comp]) < 0.06 * min(hu.shape):
            out |= comp
    return out


def _offset(rng: np.random.Generator, size: int, extent: int, wall: float) -> int:
    """Where a crop of ``extent`` px starts along one axis: at least ``wall`` (+ 4 px) from
    either edge when the frame has room."""
    # The wall stays in the frame on every side when there is room: a field of view cuts the
    # flanks and arms, not the lungs. Crossing a side is the extension's job.
    room = int(min(wall + 4, max(4, (size - extent) / 2)))
    lo, hi = room, size - extent - room
    return int(rng.integers(lo, max(lo, hi) + 1))


def _resize(a: np.ndarray, shape: tuple[int, int], order: int) -> np.ndarray:
    zoom = (shape[0] / a.shape[0], shape[1] / a.shape[1])
    return ndi.zoom(a, zoom, order=order, mode="nearest", grid_mode=True)[: shape[0], : shape[1]]


def _shadow(inside: np.ndarray, top: int, left: int, n: int) -> np.ndarray:
    """(n, n) bool: frame pixels outside the crop whose nearest crop pixel is ``inside``."""
    h, w = inside.shape
    rr = np.clip(np.arange(n) - top, 0, h - 1)
    cc = np.clip(np.arange(n) - left, 0, w - 1)
    out = inside[np.ix_(rr, cc)].copy()
    out[top:top + h, left:left + w] = False
    return out


def _superellipse(n: int, centre: tuple[float, float], radii: tuple[float, float, float, float],
                  power: float) -> np.ndarray:
    """(n, n) bool superellipse with radii (up, down, left, right) around ``centre``."""
    rr, cc = np.mgrid[:n, :n].astype(np.float32)
    dr, dc = rr - centre[0], cc - centre[1]
    a = np.where(dr < 0, radii[0], radii[1])
    b = np.where(dc < 0, radii[2], radii[3])
    return np.abs(dr / a) ** power + np.abs(dc / b) ** power <= 1.0


def scanner_frame(img8: np.ndarray, mask: np.ndarray, classes: np.ndarray | None = None, *,
                  seed: int = 0, size: int = 512, edges: int | None = None, fill_corners: bool = False,
                  noise_hu: float | None = None, spacing_mm: float | None = None) -> ScannerFrame:
    """Build one scanner-like frame around a crop (module docstring).

    Args:
        img8: (h, w) uint8 lung-window crop in the training orientation.
        mask: (h, w) lesion mask (nonzero = lesion); ``classes``: (h, w) 0/1/2 or None.
        seed: the random draw (same seed, same frame).
        size: frame side in pixels.
        edges: how many edges the body should touch (0-4); None draws it (:data:`EDGE_SHARES`).
        fill_corners: turn the crop's outside air into chest wall (volumes shrink the crop).
        noise_hu, spacing_mm: fix the noise (0-40 HU) or pixel size (0.5-1.0 mm) instead of drawing.

    Raises:
        ValueError: arrays of different shapes, or a crop too large for ``size`` even at 1 mm.
    """
    img8 = np.asarray(img8)
    if img8.ndim != 2 or np.shape(mask) != img8.shape or (classes is not None and np.shape(classes) != img8.shape):
        raise ValueError(f"img8, mask and classes must be (h, w) of one shape, got {img8.shape}, "
                         f"{np.shape(mask)}, {None if classes is None else np.shape(classes)}")
    rng = np.random.default_rng(seed)
    touch = int(rng.choice(5, p=EDGE_SHARES)) if edges is None else int(edges)
    if not 0 <= touch <= 4:
        raise ValueError(f"edges must be 0-4, got {edges!r}")
    h, w = img8.shape
    px_mm = rng.uniform(0.6, 0.8)  # the crop's own pixel size
    wall_mm = rng.uniform(8.0, 20.0)  # chest wall beyond the crop's edge, where the crop cut it
    # The crop (the lungs) must fit the frame, and cover at most 60 % of it: scanners frame the
    # chest, so the lungs take up to about half of the image even when the flanks are cut.
    lo = max((max(h, w) * px_mm + 2 * wall_mm) / (size - 8), px_mm * float(np.sqrt(h * w / 0.6)) / size)
    s = float(spacing_mm) if spacing_mm is not None else float(np.clip(rng.uniform(0.5, 1.0), lo, max(lo, 1.0)))
    if max(h, w) * px_mm / s > size - 8:
        raise ValueError(f"a {w}x{h} crop does not fit a {size}-pixel frame at {s:.2f} mm")
    hf, wf = max(8, int(round(h * px_mm / s))), max(8, int(round(w * px_mm / s)))
    hu_c = crop_hu(img8)
    out_air = outside_air(hu_c)
    if fill_corners:
        hu_c = np.where(out_air, WALL_HU, hu_c)
        out_air = np.zeros_like(out_air)
    crop = _resize(hu_c, (hf, wf), 1).astype(np.float32)
    les = _resize((np.asarray(mask) != 0).astype(np.uint8), (hf, wf), 0) > 0
    cls = _resize(np.asarray(classes, np.uint8), (hf, wf), 0) if classes is not None else les.astype(np.uint8)
    body_c = ~(_resize(out_air.astype(np.uint8), (hf, wf), 0) > 0)

    # Which edges the body crosses: drawn sides, each reached by the body's extension. The
    # wall beyond a side that is not crossed stays inside the frame when there is room.
    sides = rng.permutation(4)[:touch]  # 0 top, 1 bottom, 2 left (front), 3 right (back)
    wall = wall_mm / s
    top = _offset(rng, size, hf, wall)
    left = _offset(rng, size, wf, wall)
    gaps = [top, size - top - hf, left, size - left - wf]  # crop edge to frame edge, px
    radii = []
    for k in range(4):
        half = (hf if k < 2 else wf) / 2
        if k in sides:
            ext = gaps[k] + rng.uniform(5, 60) / s       # past the frame's edge
        else:
            ext = min(gaps[k] - 2.0, wall + rng.uniform(0.0, 25.0) / s)
        radii.append(half + max(ext, 1.0))
    centre = (top + hf / 2, left + wf / 2)
    ext = _superellipse(size, centre, tuple(radii), float(rng.uniform(2.2, 4.0)))
    ext = ndi.binary_opening(ext, iterations=2)
    # At least the drawn wall beyond every edge the crop cut, so that the lungs stay closed.
    rim = np.zeros((size, size), bool)
    w_px = int(np.ceil(wall))
    rim[max(0, top - w_px):top + hf + w_px, max(0, left - w_px):left + wf + w_px] = True
    # A closed outline for the shadow: a single air pixel on the crop's edge would cut a line
    # of air through the extension, an opening into the lungs that no real chest has.
    solid = ndi.binary_closing(np.pad(body_c, 6, mode="edge"), iterations=6)[6:-6, 6:-6] | body_c
    ext = (ext | rim) & _shadow(solid, top, left, size)
    body = ext.copy()
    body[top:top + hf, left:left + wf] |= body_c
    depth = ndi.distance_transform_edt(np.pad(body, 1))[1:-1, 1:-1] * s  # mm inside the skin

    hu = np.full((size, size), AIR, np.float32)
    # The extension: skin, subcutaneous fat, then muscle, by depth below the body's outline.
    fat_mm = rng.uniform(4.0, 25.0)
    hu[ext] = np.where(depth[ext] < 1.5, MUSCLE, np.where(depth[ext] < fat_mm, FAT, MUSCLE))
    place = (slice(top, top + hf), slice(left, left + wf))
    region = hu[place]
    hu[place] = np.where(body_c, crop, region)
    extras = []
    chest = body.copy()
    if rng.random() < 0.4:
        extras.append("arms")
        add_arms(hu, body, rng, s)
    if rng.random() < 0.6 and 3 not in sides:
        extras.append("table")
        add_table(hu, body, rng, s)
    if rng.random() < 0.35 and 2 not in sides:
        extras.append("blanket")
        add_blanket(hu, body, rng, s)
    noise = float(rng.uniform(0.0, 40.0)) if noise_hu is None else float(noise_hu)
    if noise > 0:
        hu += rng.normal(0.0, noise, hu.shape).astype(np.float32)
    lesion = np.zeros((size, size), bool)
    lesion[place] = les
    classes_f = np.zeros((size, size), np.uint8)
    classes_f[place] = np.where(les, np.maximum(cls, 1), 0)
    full = np.zeros((size, size), bool)
    full |= body
    touched = int(full[0].any()) + int(full[-1].any()) + int(full[:, 0].any()) + int(full[:, -1].any())
    return ScannerFrame(hu, lesion, classes_f, s, place, touched, tuple(extras), chest)


def scanner_volume(img8: np.ndarray, mask: np.ndarray, classes: np.ndarray | None = None, *,
                   slices: int = 24, thickness_mm: float | None = None, seed: int = 0,
                   size: int = 512) -> tuple[Volume, np.ndarray, list[ScannerFrame]]:
    """A continuous volume around one crop: the lungs grow and shrink slowly from slice to slice.

    Every slice shares the frame's draw (pixel size, body, extras, noise level); slice ``k``
    holds the crop scaled by a smooth profile of its height (small at the apex and base of
    the slab drawn). Slices are ``thickness_mm`` apart (0.6-5 mm drawn when None).

    Returns:
        ``(volume, lesion, frames)``: an HU :class:`Volume` (D, N, N) in the training
        orientation (affine with ``("L", "P")`` in-plane), the (D, N, N) bool ground truth,
        and each slice's :class:`ScannerFrame`.
    """
    rng = np.random.default_rng(seed)
    t = float(thickness_mm) if thickness_mm is not None else float(rng.uniform(0.6, 5.0))
    height = 250.0  # mm of lung, apex to base
    z0 = rng.uniform(0.0, max(0.0, height - slices * t))
    img8 = np.asarray(img8)
    mask = np.asarray(mask) != 0
    frames = []
    base_seed = int(rng.integers(2**31))
    for k in range(slices):
        z = (z0 + (k + 0.5) * t) / height
        q = 0.45 + 0.55 * np.sin(np.pi * np.clip(z, 0.02, 0.98)) ** 0.6  # apex and base: small lungs
        im, m, c = _shrunk(img8, mask, classes, q)
        frames.append(scanner_frame(im, m, c, seed=base_seed, size=size, fill_corners=True))
    hu = np.stack([f.hu for f in frames])
    s = frames[0].spacing
    affine = np.diag([-s, -s, t, 1.0])  # rows towards the left, columns towards the back
    vol = Volume(hu, "hu", (t, s, s), affine, "scanner-volume")
    return vol, np.stack([f.lesion for f in frames]), frames


def _shrunk(img8, mask, classes, q: float):
    """The crop's content scaled by ``q`` (<= 1) about its centre, chest wall around it."""
    h, w = img8.shape
    nh, nw = max(8, int(round(h * q))), max(8, int(round(w * q)))
    hu = crop_hu(img8)
    hu = np.where(outside_air(hu), WALL_HU, hu)
    wall = np.uint8(round((WALL_HU + 1350.0) / 1500.0 * 255.0))
    out = np.full((h, w), wall, np.uint8)
    m_out = np.zeros((h, w), bool)
    c_out = np.zeros((h, w), np.uint8)
    r0, c0 = (h - nh) // 2, (w - nw) // 2
    lv = np.clip((hu + 1350.0) / 1500.0 * 255.0, 0, 255)
    out[r0:r0 + nh, c0:c0 + nw] = np.rint(_resize(lv, (nh, nw), 1)).astype(np.uint8)
    m_out[r0:r0 + nh, c0:c0 + nw] = _resize(mask.astype(np.uint8), (nh, nw), 0) > 0
    if classes is not None:
        c_out[r0:r0 + nh, c0:c0 + nw] = _resize(np.asarray(classes, np.uint8), (nh, nw), 0)
    return out, m_out, (c_out if classes is not None else None)
