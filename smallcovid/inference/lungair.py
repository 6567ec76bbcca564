"""Air components of a chest on the lung finder's working grid: texture and leaks.

Helpers of :mod:`smallcovid.inference.lungs` (arrays are (Z, h, w) stacks of 2D slices;
per-component tables are indexed by component id, 0 being tissue). Lung is told from the
air around a body by texture: vessel edges and ground-glass make some of lung's pixels
brighter than its median, while outside air, bowel gas, a hollow table or the air under a
blanket are uniform.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from smallcovid.inference.lunggeom import S2D, border_ids

UNIFORM_MAX_MM2 = 400.0  # uniform air components at least this large (4 cm^2) are not lung
TEXTURE_HU = 150.0     # lung: partial-volume vessel edges and ground-glass this far above its median
TEXTURE_FLOOR_HU = -850.0  # ... and above this (outside air: -1000 HU plus noise)
TEXTURE_CEIL_HU = -400.0   # ... and below this (vessel edges and ground-glass, not fabric)
TEXTURE_SHARE = 0.01   # ... in at least this share of its pixels; uniform air + 40 HU noise: ~1e-4


def air_components(hu: np.ndarray, air: np.ndarray, sp: tuple[float, float]) -> tuple:
    """2D components of ``air`` (ids unique over slices) and their per-id tables:
    ``(lab, n, size, edge, keep, bright, textured, large)``; keep: at least 0.5 cm^2,
    large: at least :data:`UNIFORM_MAX_MM2`, bright / textured: :func:`_bright`, :func:`_textured`."""
    lab, n = ndi.label(air, structure=S2D)
    size = np.bincount(lab.ravel(), minlength=n + 1)
    edge = np.zeros(n + 1, bool)
    edge[border_ids(lab)] = True
    edge[0] = False
    keep = size >= max(2.0, 50.0 / (sp[0] * sp[1]))  # >= 0.5 cm^2
    keep[0] = False
    bright = _bright(hu, lab, n)
    return (lab, n, size, edge, keep, bright, _textured(bright, lab, n, size),
            size * sp[0] * sp[1] >= UNIFORM_MAX_MM2)


def _bright(hu: np.ndarray, lab: np.ndarray, n: int) -> np.ndarray:
    """(Z, h, w) bool: the texture pixels of each air component ``lab`` (1..n): inner pixels
    (4 neighbours in the same component: the rim of outside air along the skin holds
    partial-volume values that are not texture) :data:`TEXTURE_HU` above the component's
    median, between :data:`TEXTURE_FLOOR_HU` and :data:`TEXTURE_CEIL_HU`."""
    inner = lab.copy()
    for ax, d in ((1, 1), (1, -1), (2, 1), (2, -1)):
        inner[np.roll(lab, d, axis=ax) != lab] = 0
    ids = inner.ravel()
    on = np.flatnonzero(ids > 0)
    ids, vals = ids[on], hu.ravel()[on]
    order = np.lexsort((vals, ids))
    ids_s, vals_s = ids[order], vals[order]
    starts = np.searchsorted(ids_s, np.arange(n + 1))
    counts = np.bincount(ids_s, minlength=n + 1)
    med = np.full(n + 1, np.inf, np.float32)
    has = counts > 0
    med[has] = vals_s[np.minimum(starts[has] + counts[has] // 2, len(vals_s) - 1)]
    # Also above TEXTURE_FLOOR_HU: air of two levels side by side (a crop's black corners in
    # a frame of -1000 HU air) is not texture.
    # Up to TEXTURE_CEIL_HU: a blanket's fabric lying just under the air threshold is a band
    # of one density next to outside air, not lung texture.
    out = np.zeros(lab.size, bool)
    out[on] = (vals > med[ids] + TEXTURE_HU) & (vals > TEXTURE_FLOOR_HU) & (vals < TEXTURE_CEIL_HU)
    return out.reshape(lab.shape)


def _textured(bright: np.ndarray, lab: np.ndarray, n: int, size: np.ndarray) -> np.ndarray:
    """Per component id: True when it looks like lung rather than uniform air (outside air,
    bowel gas, a hollow table): :data:`TEXTURE_SHARE` of its pixels are :func:`_bright`."""
    out = np.bincount(lab[bright], minlength=n + 1) >= TEXTURE_SHARE * np.maximum(size, 1)
    out[0] = False
    return out


#: Air farther than this from any texture pixel is uniform: a lung's vessels lie closer.
LEAK_NEAR_MM = 10.0
#: A piece left by carving whose rim borders the carved outside air more than this is outside air.
LEAK_RIM_SHARE = 0.3


def leak_outside(lab: np.ndarray, cand: np.ndarray, bright: np.ndarray, sp: tuple[float, float]) -> np.ndarray | None:
    """(Z, h, w) bool: uniform air of the ``cand`` components (per id) connected to the image
    border, or None when there is none to carve."""
    if not cand.any():
        return None
    k = (1, int(2 * LEAK_NEAR_MM / sp[0]) | 1, int(2 * LEAK_NEAR_MM / sp[1]) | 1)
    uniform = cand[lab] & ~ndi.maximum_filter(bright, size=k)
    ul, un = ndi.label(uniform, structure=S2D)
    reach = np.zeros(un + 1, bool)
    reach[border_ids(ul)] = True
    reach[0] = False
    outside = reach[ul]
    return outside if outside.any() else None


def walled(lab: np.ndarray, n: int, outside: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per id, for the pieces left by carving ``outside`` off: (walled, touching). Touching:
    the piece borders ``outside``; walled: on at most :data:`LEAK_RIM_SHARE` of its rim (a
    lung whose leak was cut, not a pocket of outside air around a blanket's texture)."""
    rim = np.zeros(lab.shape, bool)
    near = np.zeros(lab.shape, bool)
    for ax, d in ((1, 1), (1, -1), (2, 1), (2, -1)):
        rim |= np.roll(lab, d, axis=ax) != lab
        near |= np.roll(outside, d, axis=ax)
    on = lab > 0
    n_rim = np.bincount(lab[on & rim], minlength=n + 1)
    touch = np.bincount(lab[on & rim & near], minlength=n + 1)
    walled = (touch > 0) & (touch <= LEAK_RIM_SHARE * np.maximum(n_rim, 1))
    walled[0] = False
    return walled, touch > 0
