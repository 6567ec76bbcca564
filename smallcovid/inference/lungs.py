"""Classical lung masks for chest CT: threshold, components, per-slice hulls.

Labels: 0 background, 1 right lung, 2 left lung, uint8 of the input's shape.

Method, per slice on a ~2.5 mm working grid (strided sampling; the labels are
repeated back to the input grid, so edges are blocky at that scale):
 1. air-like pixels (< -320 HU) -> 2D components; < 0.5 cm^2 is noise. Outside air is
    told from lung by texture: lung holds vessel edges and ground-glass (``smallcovid.inference.lungair``),
    the air around a body, bowel gas, a hollow table or the air under a blanket is
    uniform. In a full field of view, border air is outside the patient unless it is
    textured (a lung cut by a tight field of view), and large uniform air is dropped.
    A frame with little border air (a crop, or a body running past the image edges) is
    read as a full field first and as a crop only when that finds two lungs and adds
    at most :data:`CROP_GAIN` of lung; one with much border air where the full-field
    reading finds no two lungs and labels under a quarter of the lung-textured air is
    read again as a crop;
 2. airways (small, compact, central components darker than the lung) dropped;
    in a volume, components outside the big 3D air components (bowel gas) too;
 3. the two largest components apart along the left/right axis are the lungs; one
    component spanning the body is two merged lungs, cut at its waist; smaller
    islands (air bronchograms, pockets between consolidations) join their side;
 4. why hulls: thresholding finds aerated lung but misses exactly what this
    project segments - consolidation, dense ground-glass and effusion are
    tissue-dense. Each lung's convex hull (islands within 20 mm join it, far ones
    get their own) puts back lesions at the lung border and in its concavities -
    except the medial one, which holds the heart: hull between the two lungs along
    the left/right axis and over 10 mm from aerated lung is mediastinum;
 5. dependent consolidation lies between the aerated lung and the back wall,
    outside any hull: lines lateral to the lung's medial edge are stretched along
    the antero-posterior axis towards the back, by at most 30 mm and up to the
    slice's chest-wall thickness (lunggeom);
 6. pixels inside both lungs' regions, or in the hull of both lungs together but
    in neither lung's own, are mediastinum; airways and outside air are dropped;
    aerated lung always counts; one working pixel of margin. No holes remain.

The mask errs on the generous side (lesions first): on the 50 labelled crops it
holds ~97.8 % of the lesion pixels; on scanner-like frames of them (four seeded
draws of :mod:`smallcovid.data.scanner`) 97.9-98.2 %, with the lungs covering at
most 59 % of any frame.

Side convention: along the left/right axis ``lr_axis`` (1 = columns, a standard
axial view; 0 = rows, e.g. the project's 90-degree-rotated training crops;
None = the axis along which the two largest air components lie apart, else the
one across the waist of a merged pair, else the longer image side), the lung at
smaller indices is labelled 1 (patient's right in the radiological display)
when ``right_first`` is True, else 2. On rotated data the anatomical side
depends on the rotation: the project's training crops put the patient's right
at the top and the back at the right (descending aorta beside the spine and
the heart towards the bottom, checked on two slices), so the defaults give 1 =
right lung there too; for other orientations only consistency is guaranteed.

All-zero masks (no error) come back for inputs with no recognisable chest: all
air, all tissue, no air inside the body, smaller than 16 pixels a side, Z = 0.
"""

from __future__ import annotations

import numpy as np

from smallcovid.inference.lungair import air_components
from smallcovid.inference.lunggeom import border_ids
from smallcovid.inference.lunggrid import AIR_HU, lungs_small

WORK_MM = 2.5            # working pixel size: a 300x512x512 volume takes ~1 s on 2 cores
MIN_SIDE = 16            # smaller images carry no resolvable chest -> all-zero mask
FULL_FIELD_BORDER = 0.8  # share of air on the image border above which the field is full
FULL_FIELD_SIDE = 0.9    # ... or the share of air on each of two sides
DISPLAY_FOV_MM = 300.0   # assumed span of a crop's long side (crops hug the lungs)
SCAN_FOV_MM = 350.0      # assumed span of a full field's long side


def _check_image(x: np.ndarray, name: str, ndims: tuple[int, ...]) -> np.ndarray:
    """``x`` as an array if its ndim is in ``ndims`` and its dtype real numeric, else ValueError."""
    x = np.asarray(x)
    if x.ndim not in ndims:
        raise ValueError(f"{name} must have ndim in {ndims}, got ndim={x.ndim} (shape {x.shape})")
    if x.dtype == bool or not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)):
        raise ValueError(f"{name} must be a real numeric array, got dtype={x.dtype}")
    return x


def lung_masks_hu(hu: np.ndarray, spacing_mm: tuple[float, float] | None = None, *,
                  lr_axis: int | None = None, right_first: bool = True,
                  cropped: bool | None = None) -> np.ndarray:
    """Lung labels for a slice (H, W) or a volume (Z, H, W) in Hounsfield units.

    Args:
        hu: HU values, any integer or float dtype; NaN counts as tissue.
        spacing_mm: in-plane (row, col) pixel size in mm; None assumes the long side
            spans 350 mm (full field) or 300 mm (``cropped``).
        lr_axis, right_first: the side convention (module docstring).
        cropped: True for a crop inside the body (air on the image border may be
            lung), False for a full field of view (air on the border is outside the
            patient); None: full field if >= 80 % of the border pixels are air, or
            >= 90 % of each of two sides (a table can cover the others).

    Returns:
        (H, W) or (Z, H, W) uint8: 0 background, 1 right lung, 2 left lung.

    Raises:
        ValueError: ndim not 2 or 3, a non-numeric or bool dtype, a bad ``lr_axis``
            or ``spacing_mm``.
    """
    hu = _check_image(hu, "hu", (2, 3))
    if lr_axis not in (None, 0, 1):
        raise ValueError(f"lr_axis must be None, 0 or 1, got {lr_axis!r}")
    vol = hu[None] if hu.ndim == 2 else hu
    z, h, w = vol.shape
    if spacing_mm is not None:
        sp = tuple(float(s) for s in np.ravel(spacing_mm))
        if len(sp) != 2 or not all(np.isfinite(sp)) or min(sp) <= 0:
            raise ValueError(f"spacing_mm must be two positive finite numbers, got {spacing_mm!r}")
    zeros = np.zeros(hu.shape, np.uint8)
    if min(h, w) < MIN_SIDE or z == 0:
        return zeros
    auto = cropped is None
    if auto:
        cropped = not _full_field(vol)
    if spacing_mm is None:
        sp = ((DISPLAY_FOV_MM if cropped else SCAN_FOV_MM) / max(h, w),) * 2
    # Strided sampling (block centres) costs ~10x less than block means, and the
    # -320 HU threshold sits ~500 HU from both lung and soft tissue: noise is harmless.
    fr, fc = (max(1, int(round(WORK_MM / s))) for s in sp)
    small = vol[:, fr // 2::fr, fc // 2::fc].astype(np.float32)
    side = None
    if auto and cropped:
        # Little air on the border: a crop of the chest, or a body running past the image
        # edges (a tight field of view). In the latter the lungs lie inside the body, away
        # from the border: if two such lungs are found, the border air is outside the patient.
        side = lungs_small(small, (sp[0] * fr, sp[1] * fc), lr_axis, right_first, False, carve=False)
        if not _two_lungs(side):
            side = None
        else:
            # A crop's lungs reach its border, where the full-field reading loses some of them;
            # the crop reading adds little then, but all the outside air of a full field.
            crop = lungs_small(small, (sp[0] * fr, sp[1] * fc), lr_axis, right_first, True)
            if _two_lungs(crop) and np.count_nonzero(crop) <= CROP_GAIN * np.count_nonzero(side):
                side = crop
            else:
                cropped = False
    if side is None:
        side = lungs_small(small, (sp[0] * fr, sp[1] * fc), lr_axis, right_first, bool(cropped))
    if auto and not cropped and not _two_lungs(side):  # two lungs found: the common case, no second look
        textured = _lung_textured_air(small, (sp[0] * fr, sp[1] * fc))
        found = 0 if side is None else np.count_nonzero(side)
        if textured and found < LOST_SHARE * textured:
            # Much border air, read as a full field, yet most lung-textured air is not lung:
            # a tight crop whose lungs reach its sides (their air is the border air). Read
            # as a crop, if that finds two lungs not much larger than the textured air (in a
            # full field the crop reading's lungs take in the uniform outside air as well;
            # a field without lung-textured air, e.g. the abdomen, is not tried).
            crop = lungs_small(small, (sp[0] * fr, sp[1] * fc), lr_axis, right_first, True)
            if _two_lungs(crop) and np.count_nonzero(crop) <= CROP_TEXTURE_GAIN * textured:
                side = crop
    if side is None:
        return zeros
    # Block replication; the last block absorbs the remainder so the shape is exact.
    nr, nc = side.shape[1:]
    out = np.repeat(side, np.r_[np.full(nr - 1, fr), h - fr * (nr - 1)], axis=1)
    out = np.repeat(out, np.r_[np.full(nc - 1, fc), w - fc * (nc - 1)], axis=2)
    return out.reshape(hu.shape)


#: Each lung must hold this share of the working grid for a full-field reading of a frame
#: with little border air to be trusted (a crop's lungs touch its border and vanish there).
TWO_LUNGS_SHARE = 0.01
#: ... and the crop reading is kept when its lungs are at most this much larger.
CROP_GAIN = 1.5
#: A frame read as a full field whose lungs hold less than this share of its lung-textured
#: air is read again as a crop, kept when its lungs are at most CROP_TEXTURE_GAIN times
#: that air (hulls add the dense lesions).
LOST_SHARE = 0.25
CROP_TEXTURE_GAIN = 2.0


def _two_lungs(side: np.ndarray | None) -> bool:
    """Whether labels on the working grid hold two lungs of at least :data:`TWO_LUNGS_SHARE` each."""
    if side is None:
        return False
    counts = np.bincount(side.ravel(), minlength=3)
    return bool(min(counts[1], counts[2]) >= TWO_LUNGS_SHARE * side.size)


def _lung_textured_air(hu: np.ndarray, sp: tuple[float, float]) -> int:
    """Pixels of (Z, h, w) HU on the working grid in large air components with lung texture."""
    air = hu < AIR_HU
    if not air.any():
        return 0
    lab, _, _, _, _, _, textured, large = air_components(hu, air, sp)
    return int(np.count_nonzero((textured & large)[lab]))


def _full_field(vol: np.ndarray) -> bool:
    """Whether (Z, h, w) HU shows the whole body in air: most of the border is air, or at
    least two whole sides are (a scanner table may fill the third and fourth)."""
    sides = (vol[:, 0], vol[:, -1], vol[:, :, 0], vol[:, :, -1])
    air_sides = sum(float(np.mean(s < AIR_HU)) >= FULL_FIELD_SIDE for s in sides)
    return float(np.mean(border_ids(vol) < AIR_HU)) >= FULL_FIELD_BORDER or air_sides >= 2


def lung_masks_display(img8: np.ndarray, *, lr_axis: int | None = None, right_first: bool = True,
                       cropped: bool | None = None) -> np.ndarray:
    """Lung labels for an 8-bit lung-window display image (H, W), window W1500/L-600.

    Grey levels map back to approximate HU (img / 255 * 1500 - 1350) for
    :func:`lung_masks_hu` with the pixel size unknown (so a crop's long side is
    assumed to span ~300 mm). Returns (H, W) uint8: 0 background, 1 right, 2 left.
    """
    img8 = _check_image(img8, "img8", (2,))
    if img8.dtype != np.uint8:
        raise ValueError(f"img8 must be uint8 (0..255 display grey levels), got dtype={img8.dtype}")
    hu = img8.astype(np.float32) * (1500.0 / 255.0) - 1350.0
    return lung_masks_hu(hu, None, lr_axis=lr_axis, right_first=right_first, cropped=cropped)
