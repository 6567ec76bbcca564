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
from scipy import ndimage as ndi

from smallcovid.inference.lungair import air_components, leak_outside, walled
from smallcovid.inference.lunggeom import (S2D, ap_span, assign_sides, between, body_mask, border_ids, extend_ap,
                                           fill_holes, hull, lr_axis_of, split_pair, wall_gaps)

AIR_HU = -320.0          # air-like: lung parenchyma (~ -850) and faint ground-glass
WORK_MM = 2.5            # working pixel size: a 300x512x512 volume takes ~1 s on 2 cores
MIN_SIDE = 16            # smaller images carry no resolvable chest -> all-zero mask
FULL_FIELD_BORDER = 0.8  # share of air on the image border above which the field is full
FULL_FIELD_SIDE = 0.9    # ... or the share of air on each of two sides
DISPLAY_FOV_MM = 300.0   # assumed span of a crop's long side (crops hug the lungs)
SCAN_FOV_MM = 350.0      # assumed span of a full field's long side
MEDIAL_KEEP_MM = 10.0    # hull between the lungs further than this from aerated lung is mediastinum
ISLAND_NEAR_MM = 20.0    # islands this close to a lung's main hull join that hull
STRAY_DEPTH_MM = 12.0    # uniform far islands no deeper than this under the body's outline are not lung
EXT_WALL_MM = 5.0        # AP stretch stops at least this far from the body's edge ...
WALL_CAP_MM = 45.0       # ... and, in a full field, at most this far (thick chest walls)
WALL_Q = 25.0            # quantile (%) of hull-to-skin gaps taken as the slice's chest wall
EXT_MAX_MM = 30.0        # longest AP stretch beyond the aerated lung's hull, towards the back
EXT_FRONT_MM = 0.0       # ... and towards the front (consolidation lies where the patient lies on it)


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
        side = _lungs_small(small, (sp[0] * fr, sp[1] * fc), lr_axis, right_first, False, carve=False)
        if not _two_lungs(side):
            side = None
        else:
            # A crop's lungs reach its border, where the full-field reading loses some of them;
            # the crop reading adds little then, but all the outside air of a full field.
            crop = _lungs_small(small, (sp[0] * fr, sp[1] * fc), lr_axis, right_first, True)
            if _two_lungs(crop) and np.count_nonzero(crop) <= CROP_GAIN * np.count_nonzero(side):
                side = crop
            else:
                cropped = False
    if side is None:
        side = _lungs_small(small, (sp[0] * fr, sp[1] * fc), lr_axis, right_first, bool(cropped))
    if auto and not cropped and not _two_lungs(side):  # two lungs found: the common case, no second look
        textured = _lung_textured_air(small, (sp[0] * fr, sp[1] * fc))
        found = 0 if side is None else np.count_nonzero(side)
        if textured and found < LOST_SHARE * textured:
            # Much border air, read as a full field, yet most lung-textured air is not lung:
            # a tight crop whose lungs reach its sides (their air is the border air). Read
            # as a crop, if that finds two lungs not much larger than the textured air (in a
            # full field the crop reading's lungs take in the uniform outside air as well;
            # a field without lung-textured air, e.g. the abdomen, is not tried).
            crop = _lungs_small(small, (sp[0] * fr, sp[1] * fc), lr_axis, right_first, True)
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


def _lungs_small(hu: np.ndarray, sp: tuple[float, float], lr_axis: int | None, right_first: bool,
                 cropped: bool, carve: bool = True) -> np.ndarray | None:
    """The method on the working grid: (Z, h, w) HU, pixel size in mm -> uint8 labels or None.

    ``carve``: in a full field, cut lungs joined to the outside air apart from it
    (:func:`~smallcovid.inference.lungair.leak_outside`); off when a frame with little border air is tried as a full
    field, where a crop's lung reaching its border would be carved instead."""
    z, h, w = hu.shape
    air = hu < AIR_HU
    n_air = int(air.sum())
    if n_air == 0 or n_air > 0.97 * air.size:
        return None                                  # all tissue, or no body to speak of
    lab, n, size, edge, keep, bright, textured, large = air_components(hu, air, sp)
    freed = np.zeros(n + 1, bool)
    if carve and not cropped:
        # A lung joined to the outside air through a gap in the body outline (a cut drain
        # path, a crop pasted into a frame) makes one textured border component: the
        # uniform air reachable from the border is carved off and the rest labelled anew.
        outside = leak_outside(lab, edge & textured & large, bright, sp)
        if outside is not None:
            lab, n, size, edge, keep, bright, textured, large = air_components(hu, air & ~outside, sp)
            freed, touching = walled(lab, n, outside)
            keep &= freed | ~touching
    # Uniform air is judged only where some large air is textured: a drawn phantom's lungs
    # may be uniform, and with nothing to compare them to they are still the lungs.
    has_texture = bool((textured & large).any())
    if cropped and has_texture:
        keep &= ~(edge & large & ~textured)          # a crop's uniform border air is outside air
    if not cropped:
        # Full field: border air is outside the patient, unless it has the texture of lung
        # (a lung cut by the image edge in a tight field of view): outside air is uniform.
        tissue_body = body_mask(air)
        cut_lung = edge & textured
        # Large uniform air inside the body is not lung either: bowel gas, a hollow table
        # top, a pocket under a blanket, the black corners of a crop pasted into a frame.
        if has_texture:
            keep &= textured | ~large
        keep &= ~edge | cut_lung
    ids = np.flatnonzero(keep)
    if ids.size == 0:
        return None
    objs = ndi.find_objects(lab, max_label=n)
    bb = np.array([[objs[i - 1][0].start, objs[i - 1][1].start, objs[i - 1][1].stop,
                    objs[i - 1][2].start, objs[i - 1][2].stop] for i in ids], float)
    comp = dict(id=ids, z=bb[:, 0].astype(int), size=size[ids].astype(float), edge=edge[ids],
                r0=bb[:, 1], r1=bb[:, 2], c0=bb[:, 3], c1=bb[:, 4])
    sub = keep[lab[:, ::2, ::2]]                     # a quarter of the pixels gives the median
    ref_hu = float(np.median(hu[:, ::2, ::2][sub])) if sub.any() else AIR_HU
    airway = np.zeros(n + 1, bool)
    airway[ids[_airway_like(comp, sp[0] * sp[1], ref_hu, hu, lab)]] = True
    keep &= ~airway
    if z > 1:
        keep &= _big_in_3d(keep[lab], lab, n)        # drops bowel gas and stray bubbles
    sel = keep[ids]
    if not sel.any():
        return None
    comp = {k: v[sel] for k, v in comp.items()}
    axis = lr_axis_of(comp, lab, h, w) if lr_axis is None else lr_axis
    body = np.ones_like(air) if cropped else fill_holes(tissue_body | (cut_lung | freed)[lab])
    prof = body.any(axis=2 if axis == 0 else 1)      # (Z, length): body extent along lr
    length = prof.shape[1]
    b_lo = np.argmax(prof, axis=1).astype(float)
    b_hi = length - np.argmax(prof[:, ::-1], axis=1).astype(float)
    side, cut = assign_sides(comp, lab, axis, n, b_lo, b_hi, 100.0 / (sp[0] * sp[1]))
    seg = side[lab]                                  # 1/2 main part, 3 merged pair, 4/5 islands
    if (seg == 3).any():
        pair = seg == 3
        seg[pair] = split_pair(pair, cut, axis, min(sp))[pair]
    k = (1, int(2 * ISLAND_NEAR_MM / sp[0]) | 1, int(2 * ISLAND_NEAR_MM / sp[1]) | 1)
    stray = np.zeros(n + 1, bool)
    if has_texture and (seg >= 4).any():
        # A uniform island far from both lungs is air outside them: the hollow of a table
        # top the body lies on, a pocket under a blanket. In a full field such small pockets
        # lie just under the body's outline (lung lies deeper, behind the chest wall; large
        # uniform air was dropped above); read as a crop, the large ones are dropped here.
        near = ndi.maximum_filter((seg == 1) | (seg == 2), size=k)
        reached = np.zeros(n + 1, bool)
        reached[lab[(seg >= 4) & near]] = True
        stray = (side >= 4) & ~reached & ~textured
        if cropped:
            stray &= large
        else:
            isl = seg >= 4
            depth = ndi.distance_transform_edt(body, sampling=(1e6, sp[0], sp[1]))
            stray &= np.bincount(lab[isl], weights=depth[isl], minlength=n + 1) <= STRAY_DEPTH_MM * np.maximum(size, 1)
        seg[stray[lab]] = 0
    # Airways, unassigned border air and stray pockets (which a hull or the stretch towards
    # the back wall may reach into) are never lung.
    not_lung = airway[lab] | (edge[lab] & (seg == 0))
    not_lung |= stray[lab]
    # Far islands get a hull of their own: one hull over pieces far apart (the front
    # and the back of a lung base) would span the liver dome between them.
    regions = []
    for s in (1, 2):
        main, isl = seg == s, seg == s + 3
        hs = hull(main)
        zs = np.flatnonzero(isl.any(axis=(1, 2)))    # only slices with islands
        if zs.size:
            near = ndi.maximum_filter(hs[zs], size=k)   # separable square: cheap
            hs[zs] = hull(main[zs] | (isl[zs] & near)) | hull(isl[zs] & ~near)
        regions.append(hs)
    mediast = hull((seg == 1) | (seg == 2)) & ~regions[0] & ~regions[1]
    # A lung's hull spans its medial concavity, where the heart lies (the cardiac notch):
    # what lies between the two lungs along lr and far from aerated lung is mediastinum.
    # Medial pleural lesions stay: they lie within MEDIAL_KEEP_MM of aerated lung.
    a1, a2 = (seg == 1) | (seg == 4), (seg == 2) | (seg == 5)
    mid = between(a1, a2, axis)
    for i, a in ((0, a1), (1, a2)):
        cand = mid & regions[i]
        zs = np.flatnonzero(cand.any(axis=(1, 2)))
        if zs.size:
            far = ndi.distance_transform_edt(~a[zs], sampling=(1e6, sp[0], sp[1])) > MEDIAL_KEEP_MM
            cut = cand[zs] & far
            regions[i][zs] &= ~cut
            mediast[zs] |= cut
    # A crop hides the chest wall, so only the fixed minimum applies there.
    # In the canonical orientation (left/right along rows) the back is at high columns, where
    # dependent consolidation lies; an anatomy that contradicts it is stretched both ways.
    front = EXT_FRONT_MM if axis == 0 else EXT_MAX_MM
    wall, cap, *reach = (v / sp[1 - axis] for v in (EXT_WALL_MM, EXT_WALL_MM if cropped else WALL_CAP_MM,
                                                     front, EXT_MAX_MM))
    gaps = tuple(np.fmin(g, cap) for g in wall_gaps(regions[0] | regions[1], body, axis, WALL_Q))
    # The two lungs reach about as far back (both lie on the posterior ribs): a lung whose
    # hull stops short of the other's is stretched to it, however thick its consolidation.
    spans = [ap_span(r, axis) for r in regions]
    for s in (1, 2):
        (lo, hi), (lo_other, hi_other) = spans[s - 1], spans[2 - s]
        short = (lo - lo_other, hi_other - hi)      # how far the other lung reaches beyond, per side
        match = [np.fmax(r, np.nan_to_num(d, nan=0.0)) if r > 0 else r for r, d in zip(reach, short)]
        regions[s - 1] |= extend_ap(seg == s, regions[s - 1], body, axis, s == 1, wall, match, gaps) & ~mediast
    r1, r2 = regions
    ok = body & ~not_lung & ~(r1 & r2)               # inside both: mediastinum
    first, second = (1, 2) if right_first else (2, 1)
    out = np.zeros(seg.shape, np.uint8)
    out[r1 & ok] = first
    out[r2 & ok] = second
    out[(seg == 1) | (seg == 4)] = first             # aerated lung always counts
    out[(seg == 2) | (seg == 5)] = second
    # One working pixel of margin: labels are repeated back in blocks, and a lesion at
    # the lung's edge should rather be inside than half outside.
    grow = ndi.maximum_filter(out, size=(1, 3, 3)) * (ok & (out == 0))
    grow[(grow > 0) & (ndi.minimum_filter(np.where(out > 0, out, 3), size=(1, 3, 3)) != grow)] = 0
    return out + grow.astype(np.uint8)


def _airway_like(c: dict, px_mm2: float, ref_hu: float, hu: np.ndarray, lab: np.ndarray) -> np.ndarray:
    """Trachea, main bronchi, oesophageal air: small, compact, central, darker than lung.

    Central: within the middle half of its slice's inner-air extent on both axes (the
    lungs flank the airway). Darker: its 25 % quantile 80 HU below the median of all
    inner air (lumen ~ -1000 vs parenchyma ~ -850 HU; ~ -1300 vs ~ -1150 from a
    display image); a mean would mix in the wall's partial volume.
    Returns a bool per component.
    """
    hgt, wid = c["r1"] - c["r0"], c["c1"] - c["c0"]
    cand = ((np.maximum(hgt, wid) <= 2.5 * np.minimum(hgt, wid)) & (c["size"] >= 0.45 * hgt * wid)
            & (c["size"] * px_mm2 <= 800.0))          # <= 8 cm^2 (trachea ~ 2-5 cm^2)
    mr, mc = (c["r0"] + c["r1"]) / 2, (c["c0"] + c["c1"]) / 2
    for zi in np.unique(c["z"][cand]):               # only slices holding a candidate
        on = c["z"] == zi
        lo_r, hi_r, lo_c, hi_c = c["r0"][on].min(), c["r1"][on].max(), c["c0"][on].min(), c["c1"][on].max()
        cand &= ~(on & ((np.abs(mr - (lo_r + hi_r) / 2) > (hi_r - lo_r) / 4)
                        | (np.abs(mc - (lo_c + hi_c) / 2) > (hi_c - lo_c) / 4)))
    for k in np.flatnonzero(cand):                   # few; the lumen's core, not its rim
        box = (c["z"][k], slice(int(c["r0"][k]), int(c["r1"][k])), slice(int(c["c0"][k]), int(c["c1"][k])))
        cand[k] = np.percentile(hu[box][lab[box] == c["id"][k]], 25) < ref_hu - 80.0
    return cand


def _big_in_3d(mask: np.ndarray, lab: np.ndarray, n: int) -> np.ndarray:
    """Per 2D component id: True if part of a 3D component >= 10 % of the largest (lungs)."""
    lab3, n3 = ndi.label(mask)
    ok = np.zeros(n + 1, bool)
    if n3 <= 1:
        return ~ok
    size3 = np.bincount(lab3.ravel())
    size3[0] = 0
    ok[lab[(size3 >= 0.1 * size3.max())[lab3]]] = True   # fancy assignment: no sort
    ok[0] = False
    return ok
