"""Step 1-6 of the lung method (:mod:`smallcovid.inference.lungs`) on the working grid.

:func:`lungs_small` labels (Z, h, w) HU sampled at about 2.5 mm; :mod:`smallcovid.inference.lungs`
chooses how a frame is read (full field or crop), samples it and repeats the labels back to
the input grid. The constants are the method's, in HU and mm.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from smallcovid.inference.lungair import air_components, leak_outside, walled
from smallcovid.inference.lunggeom import (ap_span, assign_sides, between, body_mask, extend_ap,
                                           fill_holes, hull, lr_axis_of, split_pair, wall_gaps)

AIR_HU = -320.0          # air-like: lung parenchyma (~ -850) and faint ground-glass
MEDIAL_KEEP_MM = 10.0    # hull between the lungs further than this from aerated lung is mediastinum
ISLAND_NEAR_MM = 20.0    # islands this close to a lung's main hull join that hull
STRAY_DEPTH_MM = 12.0    # uniform far islands no deeper than this under the body's outline are not lung
EXT_WALL_MM = 5.0        # AP stretch stops at least this far from the body's edge ...
WALL_CAP_MM = 45.0       # ... and, in a full field, at most this far (thick chest walls)
WALL_Q = 25.0            # quantile (%) of hull-to-skin gaps taken as the slice's chest wall
EXT_MAX_MM = 30.0        # longest AP stretch beyond the aerated lung's hull, towards the back
EXT_FRONT_MM = 0.0       # ... and towards the front (consolidation lies where the patient lies on it)


def lungs_small(hu: np.ndarray, sp: tuple[float, float], lr_axis: int | None, right_first: bool,
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
