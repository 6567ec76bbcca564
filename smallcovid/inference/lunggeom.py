"""Per-slice geometry for :mod:`smallcovid.inference.lungs`.

The mask functions take (Z, h, w) arrays (a stack of 2D slices on the working
grid), treat each slice on its own and are vectorised over slices. The side
functions read a component table: a dict of equal-length arrays per 2D air
component - id (label), z (slice), size (pixels), edge (touches the border),
r0/r1 and c0/c1 (bounding box rows and columns, end exclusive).
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy import ndimage as ndi

S2D = np.zeros((3, 3, 3), bool)
S2D[1] = ndi.generate_binary_structure(2, 1)        # 4-connectivity within a slice only
_ANGLES = np.linspace(0.0, np.pi, 24, endpoint=False) + np.pi / 48   # never exactly vertical


def border_ids(lab: np.ndarray) -> np.ndarray:
    """Labels found on the in-plane border of any slice of (Z, h, w) ``lab`` (with 0)."""
    return np.concatenate([lab[:, 0].ravel(), lab[:, -1].ravel(), lab[:, :, 0].ravel(), lab[:, :, -1].ravel()])


def fill_holes(m: np.ndarray) -> np.ndarray:
    """Per-slice hole filling of (Z, h, w) bool: background not connected to the border."""
    bg, n = ndi.label(~m, structure=S2D)
    outside = np.zeros(n + 1, bool)
    outside[border_ids(bg)] = True
    outside[0] = False
    return ~outside[bg]


def body_mask(air: np.ndarray) -> np.ndarray:
    """Full field: per slice the largest tissue component with its holes filled (Z, h, w) bool.

    The largest component is the patient; a table, a cable or an arm apart from the
    chest drops out, and the lungs (holes of the body) come back with the filling.
    """
    tis, n = ndi.label(~air, structure=S2D)
    if n == 0:
        return np.zeros_like(air)
    size = np.bincount(tis.ravel())
    size[0] = 0
    zs = np.array([o[0].start if o is not None else 0 for o in ndi.find_objects(tis)])
    best = np.zeros(air.shape[0], np.int64)
    order = np.argsort(size[1:], kind="stable")      # ascending: the largest per slice is written last
    best[zs[order]] = order + 1
    keep = np.zeros(n + 1, bool)
    keep[best[best > 0]] = True
    return fill_holes(keep[tis])


def _ends(m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """First and last True index along the last axis (0 and -1 + len where none)."""
    n = m.shape[-1]
    return np.argmax(m, axis=-1), n - 1 - np.argmax(m[..., ::-1], axis=-1)


def hull(mask: np.ndarray) -> np.ndarray:
    """Per-slice convex hull of (Z, h, w) bool, as a 24-direction circumscribed polygon.

    Each row's two extreme pixels give the support values max/min(x cos t + r sin t)
    per direction t; each hull row is then the interval of x that all directions
    allow. The polygon exceeds the true hull by < 0.9 % of the shape's radius
    (1 / cos(pi / 24) - 1). Empty slices give empty hulls.
    """
    h, w = mask.shape[1:]
    rows = mask.any(axis=2)                          # (Z, h)
    if not rows.any():
        return np.zeros_like(mask)
    x0, x1 = (e.astype(np.float32)[..., None] for e in _ends(mask))
    cos, sin = np.cos(_ANGLES).astype(np.float32), np.sin(_ANGLES).astype(np.float32)
    r = np.arange(h, dtype=np.float32)
    base = r[None, :, None] * sin                    # (1, h, K)
    s_hi = np.where(rows[..., None], base + np.maximum(x0 * cos, x1 * cos), -np.inf).max(axis=1)
    s_lo = np.where(rows[..., None], base + np.minimum(x0 * cos, x1 * cos), np.inf).min(axis=1)
    a, b = (s_hi[:, None] - base) / cos, (s_lo[:, None] - base) / cos   # (Z, h, K) x bounds
    upper = np.where(cos > 0, a, b).min(axis=2)      # which bound is upper depends on sign(cos)
    lower = np.where(cos > 0, b, a).max(axis=2)
    r_first, r_last = _ends(rows)
    row_ok = (r >= r_first[:, None]) & (r <= r_last[:, None]) & rows.any(axis=1)[:, None]
    x = np.arange(w, dtype=np.float32)
    return (x >= lower[..., None] - 1e-3) & (x <= upper[..., None] + 1e-3) & row_ok[..., None]


def between(low: np.ndarray, high: np.ndarray, axis: int) -> np.ndarray:
    """Pixels between two lungs along the left/right axis, (Z, h, w) bool.

    On each antero-posterior line (fixed position along the other axis) holding both
    ``low`` (the lung at low indices along ``axis``) and ``high``: the pixels after the
    last of ``low`` and before the first of ``high``.
    """
    t = (lambda a: a) if axis == 0 else (lambda a: a.swapaxes(1, 2))
    lo, hi = t(low).swapaxes(1, 2), t(high).swapaxes(1, 2)   # (Z, A, L): lines along lr
    both = lo.any(axis=2) & hi.any(axis=2)
    _, lo_end = _ends(lo)
    hi_start, _ = _ends(hi)
    li = np.arange(lo.shape[2])[None, None, :]
    out = (li > lo_end[..., None]) & (li < hi_start[..., None]) & both[..., None]
    return t(out.swapaxes(1, 2))


def ap_span(m: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Per slice, the first and last antero-posterior index of (Z, h, w) ``m``, each (Z, 1)
    float; NaN where the slice holds none. ``axis`` is the left/right axis."""
    prof = m.any(axis=1 + axis)                      # (Z, AP)
    first, last = (e.astype(float)[:, None] for e in _ends(prof))
    none = ~prof.any(axis=1)[:, None]
    return np.where(none, np.nan, first), np.where(none, np.nan, last)


def wall_gaps(lungs: np.ndarray, body: np.ndarray, axis: int, q: float) -> tuple[np.ndarray, np.ndarray]:
    """Per slice, the chest wall's thickness in front of and behind the lungs, in pixels.

    The ``q`` % quantile over the lr lines of the gaps between (Z, h, w) ``lungs``
    (both lungs' regions) and the body's edge along AP, each (Z, 1); NaN without
    lung. Both lungs pooled: a normal lung tells the wall beside a diseased one.
    """
    t = (lambda a: a) if axis == 0 else (lambda a: a.swapaxes(1, 2))
    lungs, body = t(lungs), t(body)
    valid = lungs.any(axis=2)
    (hf, hl), (bf, bl) = _ends(lungs), _ends(body)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)   # slices without lung: all-NaN
        return (np.nanpercentile(np.where(valid, hf - bf, np.nan), q, axis=1)[:, None],
                np.nanpercentile(np.where(valid, bl - hl, np.nan), q, axis=1)[:, None])


def extend_ap(m: np.ndarray, hull_m: np.ndarray, body: np.ndarray, axis: int, low_side: bool,
              wall: float, reach: tuple[float, float], gaps: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Dependent consolidation: stretch one lung's hull along the antero-posterior axis.

    Args:
        m, hull_m, body: (Z, h, w) bool aerated lung, its hull, the body interior.
        axis: the left/right axis (0 rows, 1 cols); AP is the other one.
        low_side: the lung lies at low indices along ``axis``.
        wall, reach: pixels along AP: the least chest wall kept; the longest stretch towards
            low and towards high AP indices (front and back in the canonical orientation),
            each a number or per slice (Z, 1).
        gaps: (front, back) chest wall per slice from :func:`wall_gaps`, (Z, 1) each.

    On lines across the chest lateral to the lung's usual medial edge (its 25 % most
    lateral quantile over the AP positions) the lung fills the thorax from the front
    to the back wall, so dense lesions lie between the aerated hull and the wall.
    Lines with more tissue than the slice's chest wall (at least ``wall``) between
    hull and body edge are stretched by at most ``reach``. Returns the added region.
    """
    t = (lambda a: a) if axis == 0 else (lambda a: a.swapaxes(1, 2))
    m, hull_m, body = t(m), t(hull_m), t(body)      # (Z, L, A): lr lines x AP positions
    ln, an = m.shape[1], m.shape[2]
    col = m.any(axis=1)                              # (Z, A)
    if not col.any():
        return t(np.zeros_like(m))
    first, last = _ends(m.swapaxes(1, 2))            # per AP position, along lr
    med = np.where(col, (last if low_side else first).astype(float), np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)   # slices without lung: all-NaN
        limit = np.nanpercentile(med, 25 if low_side else 75, axis=1)
    li = np.arange(ln)[None, :]
    valid = hull_m.any(axis=2)
    line_ok = ((li <= limit[:, None]) if low_side else (li >= limit[:, None])) & valid
    w_lo, w_hi = (np.fmax(np.nan_to_num(g, nan=an), wall) for g in gaps)
    (hf, hl), (bf, bl) = _ends(hull_m), _ends(body)
    lo = np.minimum(hf, np.maximum(bf + w_lo, hf - reach[0]))
    hi = np.maximum(hl, np.minimum(bl - w_hi, hl + reach[1]))
    a = np.arange(an)[None, None, :]
    return t((a >= lo[..., None]) & (a <= hi[..., None]) & line_ok[..., None] & body)


def _apart(lo: np.ndarray, hi: np.ndarray, a: int, b: int) -> float:
    """Distance between the centres of boxes a and b along one axis, in mean box extents."""
    return abs((lo[a] + hi[a]) - (lo[b] + hi[b])) / max(1.0, (hi[a] - lo[a]) + (hi[b] - lo[b]))


def lr_axis_of(c: dict, lab: np.ndarray, h: int, w: int) -> int:
    """The left/right axis (0 rows, 1 cols) from component table ``c`` (see lungs.py)."""
    score = np.zeros(2)
    for zi in np.unique(c["z"]):
        on = np.flatnonzero(c["z"] == zi)
        if on.size < 2:
            continue
        a, b = on[np.argsort(-c["size"][on])[:2]]
        if c["size"][b] >= 0.1 * c["size"][a]:
            score += [_apart(c["r0"], c["r1"], a, b), _apart(c["c0"], c["c1"], a, b)]
    if score.max() > 0.5:
        return int(np.argmax(score))
    # One component per slice: merged lungs have a waist (the mediastinum) across lr.
    a = int(np.argmax(c["size"]))
    m = lab[c["z"][a], int(c["r0"][a]):int(c["r1"][a]), int(c["c0"][a]):int(c["c1"][a])] == c["id"][a]
    waist = []
    for prof in (m.sum(axis=1), m.sum(axis=0)):      # profile along rows (axis 0), cols (axis 1)
        t = len(prof) // 3
        waist.append(prof[t:len(prof) - t].min() / max(1, prof.max()) if t else 1.0)
    if min(waist) < 0.5:
        return int(np.argmin(waist))
    return 0 if h > w else 1                          # the chest is wider left-right


def assign_sides(c: dict, lab: np.ndarray, axis: int, n: int, b_lo: np.ndarray, b_hi: np.ndarray,
                 min_lung: float) -> tuple[np.ndarray, np.ndarray]:
    """Lookup 2D component id -> 0 none, 1/2 lung at low/high index, 3 merged pair, 4/5 island.

    Per slice the largest component A (>= ``min_lung`` pixels) and the largest one
    lying apart from it along ``axis`` (B, >= 5 % of A) are the lungs, cut midway
    between their facing edges (or in the middle of their overlap along ``axis``);
    other components join the side of their centre
    (border-touching ones only if >= 5 % of A: corner air of a crop is no lung).
    Without B, an A spanning >= 55 % of the body is a merged pair, cut at its
    narrowest point in its middle third (``cut[z]``, per pixel); otherwise A is one
    lung on the side of the body centre where it lies.
    """
    lo, hi = (c["r0"], c["r1"]) if axis == 0 else (c["c0"], c["c1"])
    mid = (lo + hi) / 2
    side = np.zeros(n + 1, np.uint8)
    cut = np.full(lab.shape[0], np.nan)
    for zi in np.unique(c["z"]):
        on = np.flatnonzero(c["z"] == zi)
        on = on[np.argsort(-c["size"][on], kind="stable")]
        a = on[0]
        if c["size"][a] < min_lung:
            continue
        on = on[~c["edge"][on] | (c["size"][on] >= 0.05 * c["size"][a])]
        apart = [b for b in on[1:] if _apart(lo, hi, a, b) >= 0.5 and c["size"][b] >= 0.05 * c["size"][a]]
        if apart:
            b = apart[0]
            cz = (min(hi[a], hi[b]) + max(lo[a], lo[b])) / 2
        elif hi[a] - lo[a] >= 0.55 * (b_hi[zi] - b_lo[zi]):
            prof = (lab[zi] == c["id"][a]).sum(axis=1 - axis)[int(lo[a]):int(hi[a])]
            t = len(prof) // 3
            cz = lo[a] + t + int(np.argmin(prof[t:len(prof) - t])) + 0.5
        elif mid[a] < (b_lo[zi] + b_hi[zi]) / 2:
            cz = hi[a] + 0.5                          # one lung, on the low side
        else:
            cz = lo[a] - 0.5
        for k in on:
            side[c["id"][k]] = 4 if mid[k] < cz else 5
        side[c["id"][a]] = 1 if mid[a] < cz else 2
        if apart:
            side[c["id"][b]] = 1 if mid[b] < cz else 2
        if not apart and lo[a] < cz < hi[a]:        # separate lungs are never cut
            side[c["id"][a]] = 3
            cut[zi] = cz
    return side, cut


SPLIT_MAX_MM = 10.0  # a bridge between two lungs (bronchi, a junction line) up to 2x this wide
SPLIT_PART = 0.1     # each part of a split holds at least this share of the larger one


def split_pair(pair: np.ndarray, cut: np.ndarray, axis: int, px_mm: float) -> np.ndarray:
    """Two merged lungs apart: (Z, h, w) bool ``pair`` -> uint8 1 (low side along ``axis``) / 2.

    Per slice the pair is eroded step by step (up to :data:`SPLIT_MAX_MM`) until it falls
    into two parts that lie on either side of the waist ``cut[z]`` (a position along
    ``axis``, from :func:`assign_sides`); each pixel then goes to the nearer part, so a
    bronchus or junction line that joined them is shared along its own course. A pair
    that does not fall apart is cut straight at the waist.
    """
    out = np.zeros(pair.shape, np.uint8)
    length = pair.shape[1 + axis]
    coord = np.arange(length, dtype=float) + 0.5
    coord = coord[:, None] if axis == 0 else coord[None, :]
    for z in np.flatnonzero(pair.any(axis=(1, 2))):
        m = pair[z]
        out[z] = np.where(coord < cut[z], 1, 2) * m
        er = m
        for _ in range(max(1, int(SPLIT_MAX_MM / px_mm))):
            er = ndi.binary_erosion(er)
            lab, k = ndi.label(er)
            if k == 0:
                break
            if k < 2:
                continue
            size = np.bincount(lab.ravel())
            size[0] = 0
            a, b = np.argsort(-size)[:2]
            if size[b] < SPLIT_PART * size[a]:
                continue
            pos = [float(np.nonzero(lab == i)[axis].mean()) + 0.5 for i in (a, b)]
            if (pos[0] - cut[z]) * (pos[1] - cut[z]) >= 0:
                continue
            cores = np.where(lab == a, 1, 0) + np.where(lab == b, 2, 0)
            near = ndi.distance_transform_edt(cores == 0, return_distances=False, return_indices=True)
            part = cores[tuple(near)]
            low = 1 if pos[0] < pos[1] else 2
            out[z] = np.where(part == low, 1, 2) * m
            break
    return out
