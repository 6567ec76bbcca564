"""Frame a scan like the training slices before a model sees it.

The models were trained on 8-bit lung-window slices cropped tightly around the
lungs: on the 50 training slices the lung mask's bounding box (lung_masks_display)
spans the whole image (median 1.00 of the height and of the width, minimum 0.91
and 0.96; ``scripts/measure_fov.py``). A scanner slice has a full field of view
(air, table, body) in which the lungs fill perhaps half of each side; resized to
the model's input as a whole, lesions come out smaller than any the model saw
(mean Dice 0.11 lower for SmallCovid-Net on the training slices in 512x512 frames).

So, per input:

1. lungs are found once (:func:`lungs_for`: HU path for HU scans, display path for
   8-bit and other intensities);
2. the crop box is the bounding box of the *aerated* lung (:func:`aerated_lung`:
   lung labels below -320 HU; the labels themselves reach into the chest wall, their
   box is ~1.02-1.04x the training crop in a full frame, up to 1.29x) grown by
   :data:`FRAME_MARGIN` of its size on each side (:func:`crop_box`; the training
   framing is a margin of 0, and 0.02 already costs 0.02 Dice), clipped to the image;
3. the model runs on the crop and its maps are pasted back at the input's size,
   zeros (background) outside the crop (:func:`~smallcovid.inference.cropmaps.paste_maps`).

No crop (the whole image, unchanged) when no lungs are found, when they are
tiny (< :data:`MIN_LUNG_FRACTION` of the frame) or when the box would cover
:data:`FULL_COVER` or more of the frame: an already-cropped input such as a
training JPEG gives exactly the same maps as before framing existed.

A volume gets one box per slice by default (:func:`volume_boxes`; slices without
usable lungs fall back to the union box): the training slices were cropped one by
one (unlabeled volumes of the same release: crop sizes follow the lungs slice by
slice), and on such volumes per-slice boxes reproduce the models' masks on the
crops (Dice 0.998-1.0 against them) where one union box does not (0.91-0.93).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from smallcovid.data.preprocess import input_window, to_model_input
from smallcovid.inference.cropmaps import gate_maps, paste_maps, predict_crops
from smallcovid.inference.lesionzone import grown_lungs
from smallcovid.inference.lungs import AIR_HU, lung_masks_display, lung_masks_hu
from smallcovid.io import Slice, Volume
from smallcovid.io.orient import CANONICAL, from_canonical, in_plane, to_canonical, transposes

log = logging.getLogger(__name__)

#: Margin per side as a fraction of the lung box's size along that axis (training framing: 0).
FRAME_MARGIN = 0.0
#: :data:`~smallcovid.inference.lungs.AIR_HU` as a lung-window (W1500/L-600) intensity in [0, 1].
AIR_LEVEL = (AIR_HU + 1350.0) / 1500.0
#: A box covering at least this share of the frame's area means "already cropped": no crop.
FULL_COVER = 0.80
#: Lungs smaller than this share of the frame are not trusted for framing.
MIN_LUNG_FRACTION = 0.01
#: Smallest crop side in pixels.
MIN_CROP = 16
FRAMINGS = ("union", "slice")


@dataclass(frozen=True)
class Box:
    """A crop: rows ``r0:r1`` and columns ``c0:c1`` (end exclusive) of an (H, W) image."""

    r0: int
    r1: int
    c0: int
    c1: int

    @property
    def slices(self) -> tuple[slice, slice]:
        """``(rows, cols)`` for indexing an (H, W) array (or ``[..., rows, cols]``)."""
        return slice(self.r0, self.r1), slice(self.c0, self.c1)

    @property
    def shape(self) -> tuple[int, int]:
        """(height, width) of the crop in pixels."""
        return self.r1 - self.r0, self.c1 - self.c0

    def to_list(self) -> list[int]:
        """``[r0, r1, c0, c1]`` as plain ints (for JSON reports)."""
        return [int(self.r0), int(self.r1), int(self.c0), int(self.c1)]


def _display_hu(x01: np.ndarray) -> np.ndarray:
    """[0, 1] lung-window intensities -> approximate HU via 8-bit grey levels (as lung_masks_display)."""
    img8 = np.rint(np.clip(x01, 0.0, 1.0) * 255.0).astype(np.uint8)
    return img8.astype(np.float32) * np.float32(1500.0 / 255.0) - np.float32(1350.0)


def lungs_for(scan: Slice | Volume) -> np.ndarray:
    """Lung labels of a slice or volume: (H, W) or (D, H, W) uint8, 0 bg / 1 right / 2 left.

    HU scans go through :func:`~smallcovid.inference.lungs.lung_masks_hu` with their
    in-plane spacing (mm) when known; ``"display"`` and ``"raw"`` scans through the display
    path (their [0, 1] model intensities read as 8-bit lung-window grey levels,
    :func:`~smallcovid.inference.lungs.lung_masks_display`). A volume is segmented as one
    3D stack (bowel gas and stray bubbles drop out across slices).

    Raises:
        ValueError: ``scan`` is neither a Slice nor a Volume.
    """
    if not isinstance(scan, (Slice, Volume)):
        raise ValueError(f"lungs_for needs a Slice or a Volume, got {type(scan).__name__}")
    # Found in the canonical orientation (views, no copies), so that the same anatomy gives
    # the same labels whatever the file's layout; the lung finder reads the left/right axis
    # from the anatomy, so a header that contradicts it cannot merge the lungs.
    axes = scan.axes
    spacing = scan.spacing if isinstance(scan, Slice) or scan.spacing is None else scan.spacing[1:]
    if spacing is not None and transposes(axes):
        spacing = (spacing[1], spacing[0])
    if isinstance(scan, Slice):
        if scan.units == "hu":
            lab = lung_masks_hu(to_canonical(scan.pixels, axes), spacing)
        else:
            x = to_canonical(to_model_input(scan), axes)
            if spacing is None:
                lab = lung_masks_display(np.rint(x * 255.0).astype(np.uint8))
            else:
                lab = lung_masks_hu(_display_hu(x), spacing)
    elif scan.units == "hu":
        lab = lung_masks_hu(to_canonical(scan.voxels, axes), spacing)
    else:
        hu = np.empty(scan.voxels.shape, np.float32)
        for k in range(len(scan)):
            hu[k] = _display_hu(to_model_input(scan.slice(k)))
        lab = lung_masks_hu(to_canonical(hu, axes), spacing)
    return lab if in_plane(axes) in (None, CANONICAL) else np.ascontiguousarray(from_canonical(lab, axes))


def aerated_lung(scan: Slice, lungs: np.ndarray) -> np.ndarray:
    """Lung pixels of a slice that are air-like (< -320 HU, or that HU's lung-window level): (H, W) bool.

    The lung labels are generous on purpose (hulls, a stretch towards the back wall, one
    working pixel of margin) and reach past the lungs into the chest wall; the training
    crops end where the aerated lung ends. Framing uses this mask's bounding box.
    """
    if scan.units == "hu":
        return (np.asarray(lungs) != 0) & (scan.pixels < AIR_HU)
    return (np.asarray(lungs) != 0) & (to_model_input(scan) < AIR_LEVEL)


def _box(rows: np.ndarray, cols: np.ndarray, count: int, margin: float | None) -> Box | None:
    """The crop for a mask given its row / column occupancy (bool (H,), (W,)) and pixel count."""
    margin = FRAME_MARGIN if margin is None else float(margin)
    if not (np.isfinite(margin) and margin >= 0):
        raise ValueError(f"margin must be a finite number >= 0, got {margin!r}")
    h, w = rows.size, cols.size
    rows, cols = np.flatnonzero(rows), np.flatnonzero(cols)
    if rows.size == 0 or count < MIN_LUNG_FRACTION * h * w:
        return None
    r0, r1, c0, c1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    pr, pc = int(np.ceil(margin * (r1 - r0))), int(np.ceil(margin * (c1 - c0)))
    r0, r1, c0, c1 = max(0, r0 - pr), min(h, r1 + pr), max(0, c0 - pc), min(w, c1 + pc)
    r0, r1 = _at_least(r0, r1, h)
    c0, c1 = _at_least(c0, c1, w)
    if (r1 - r0) * (c1 - c0) >= FULL_COVER * h * w:
        return None
    return Box(r0, r1, c0, c1)


def crop_box(mask: np.ndarray, margin: float | None = None) -> Box | None:
    """The framing crop for a lung mask (H, W), or for the union over the slices of (D, H, W).

    Args:
        mask: lung mask (nonzero = lung), normally :func:`aerated_lung`.
        margin: added on each side, as a fraction of the mask box's height (rows) and
            width (columns); >= 0; None: :data:`FRAME_MARGIN`.

    Returns:
        The box clipped to the image, or None (use the whole image) when the mask is empty,
        covers less than :data:`MIN_LUNG_FRACTION` of the frame (its projection over the
        slices, for a volume), or the box covers :data:`FULL_COVER` of the frame or more.

    Raises:
        ValueError: ``mask`` is not 2D or 3D, or ``margin`` is negative or not finite.
    """
    mask = np.asarray(mask)
    if mask.ndim not in (2, 3):
        raise ValueError(f"mask must be (H, W) or (D, H, W), got shape {mask.shape}")
    flat = mask != 0
    flat = flat.any(axis=0) if flat.ndim == 3 else flat
    return _box(flat.any(axis=1), flat.any(axis=0), int(np.count_nonzero(flat)), margin)


def slice_box(scan: Slice, lungs: np.ndarray) -> Box | None:
    """The crop :func:`segment_slice` uses: :func:`crop_box` of the slice's :func:`aerated_lung`
    (its main parts, :func:`main_parts`); None for a slice already framed like the training
    slices (its whole aerated lung spans the image)."""
    return crop_box(framing_mask(aerated_lung(scan, lungs)))


#: Aerated-lung pieces smaller than this share of the largest piece do not widen the crop.
MAIN_PART_SHARE = 0.05


def framing_mask(aerated: np.ndarray) -> np.ndarray:
    """The (H, W) aerated lung a slice's crop is taken from: as it is when it already spans
    the image (a slice framed like the training slices stays whole), else its
    :func:`main_parts`."""
    return aerated if crop_box(aerated) is None else main_parts(aerated)


def main_parts(mask: np.ndarray) -> np.ndarray:
    """(H, W) or (D, H, W) bool: per slice, the connected pieces of ``mask`` at least
    :data:`MAIN_PART_SHARE` of that slice's largest piece.

    The lung labels are generous and may take in a pocket of air under a blanket, beside
    an arm or in a hollow table top; such a pocket far from the lungs would widen the crop
    and shrink the lungs as the model sees them. Labelled at full resolution within the
    mask's bounding box, so that flips and turns of the image give the same pieces.
    """
    m = np.asarray(mask, bool)
    vol = m[None] if m.ndim == 2 else m
    out = vol.copy()
    for k in range(len(vol)):
        rows, cols = np.flatnonzero(vol[k].any(axis=1)), np.flatnonzero(vol[k].any(axis=0))
        if rows.size == 0:
            continue
        box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
        lab, n = ndi.label(vol[k][box])
        if n <= 1:
            continue
        size = np.bincount(lab.ravel())
        size[0] = 0
        keep = size >= MAIN_PART_SHARE * size.max()
        keep[0] = False
        out[k][box] = keep[lab]
    return out.reshape(m.shape)


def _at_least(a: int, b: int, n: int) -> tuple[int, int]:
    """``a:b`` grown around its middle to at least :data:`MIN_CROP` pixels, within ``0:n``."""
    size = min(n, MIN_CROP)
    if b - a >= size:
        return a, b
    a = min(max(0, (a + b) // 2 - size // 2), n - size)
    return a, a + size


def volume_boxes(volume: Volume, lungs: np.ndarray, framing: str = "slice",
                 margin: float | None = None) -> list[Box | None]:
    """One crop box per slice of ``volume``, from its (D, H, W) lung labels.

    ``"slice"`` (default): each slice gets the box of its own aerated lung, as the training
    slices were cropped; slices without usable lungs get the union box. ``"union"``: every
    slice gets the box of the aerated lung over the whole volume (no crop when the largest
    slice's aerated lung is below :data:`MIN_LUNG_FRACTION`). The aerated lung is computed
    16 slices at a time (no full-size temporaries).

    Raises:
        ValueError: unknown ``framing``, or ``lungs`` not of the volume's shape.
    """
    if framing not in FRAMINGS:
        raise ValueError(f"framing must be one of {', '.join(FRAMINGS)}, got {framing!r}")
    lungs = np.asarray(lungs)
    if lungs.shape != volume.voxels.shape:
        raise ValueError(f"lungs has shape {lungs.shape} but the volume {volume.voxels.shape}")
    d, h, w = lungs.shape
    rows, cols, counts = np.zeros((d, h), bool), np.zeros((d, w), bool), np.zeros(d, np.int64)
    for k0 in range(0, d, 16):
        k1 = min(k0 + 16, d)
        if volume.units == "hu":
            m = (lungs[k0:k1] != 0) & (volume.voxels[k0:k1] < AIR_HU)
        else:
            m = np.stack([aerated_lung(volume.slice(k), lungs[k]) for k in range(k0, k1)])
        m = np.stack([framing_mask(mj) for mj in m])
        rows[k0:k1], cols[k0:k1] = m.any(axis=2), m.any(axis=1)
        counts[k0:k1] = np.count_nonzero(m, axis=(1, 2))
    union = _box(rows.any(axis=0), cols.any(axis=0), int(counts.max(initial=0)), margin)
    if framing == "union":
        return [union] * d
    out = []
    for k in range(d):
        box = _box(rows[k], cols[k], int(counts[k]), margin) if counts[k] else None
        out.append(box if box is not None else union)
    return out


def segment_slice(predictor, scan: Slice) -> tuple[object, np.ndarray]:
    """Lesion maps and lung labels of one slice, framed like the training slices.

    Args:
        predictor: a Predictor or fold ensemble (``predict_images``, ``card``).
        scan: the slice; HU is windowed in the model's :func:`input_window`, never a
            display window.

    Returns:
        ``(maps, lungs)``: :class:`~smallcovid.inference.predictor.ProbMaps` at the slice's
        (H, W) and the (H, W) uint8 lung labels (0 bg, 1 right, 2 left).
    """
    if not isinstance(scan, Slice):
        raise ValueError(f"segment_slice needs a Slice, got {type(scan).__name__}")
    lungs = lungs_for(scan)
    box = slice_box(scan, lungs)
    log.debug("%s: %s", scan.source, "whole slice" if box is None else f"crop {box.to_list()} of {scan.shape}")
    x = to_model_input(scan, input_window(getattr(predictor, "card", None)))
    maps = predict_crops(predictor, [x if box is None else x[box.slices]], scan.axes)[0]
    maps = paste_maps(maps, box, scan.shape)
    return gate_maps(maps, grown_lungs(lungs, scan.spacing)), lungs
