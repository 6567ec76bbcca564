"""What lies around the chest in a scanner frame: arms, the couch, a blanket.

Each adds itself to ``hu`` (HU, (N, N), the training orientation of
:mod:`smallcovid.data.scanner`: arms above and below the body, the couch on the right, the
front on the left) where ``body`` is not, seeded by ``rng``, with sizes in mm divided by
the pixel size ``s`` (mm).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

FAT, MUSCLE, BONE, TABLE = -100.0, 40.0, 700.0, 250.0  # HU


def add_arms(hu: np.ndarray, body: np.ndarray, rng: np.random.Generator, s: float) -> None:
    """Two arms beside the chest (above and below the body here), 0-15 mm from it or touching."""
    n = hu.shape[0]
    rows = np.flatnonzero(body.any(axis=1))
    cols = np.flatnonzero(body.any(axis=0))
    rr, cc = np.mgrid[:n, :n].astype(np.float32)
    for up in (True, False):
        ra, ca = rng.uniform(35, 50) / s, rng.uniform(40, 60) / s
        gap = rng.choice([0.0, rng.uniform(2, 15)]) / s
        r0 = rows[0] - gap - ra if up else rows[-1] + gap + ra
        c0 = cols[0] + (cols[-1] - cols[0]) * rng.uniform(0.35, 0.65)
        d = ((rr - r0) / ra) ** 2 + ((cc - c0) / ca) ** 2
        arm = (d <= 1.0) & ~body
        hu[arm] = np.where(d[arm] > 0.75, FAT, MUSCLE)
        hu[(d <= 0.08) & ~body] = BONE
        body |= arm


def add_table(hu: np.ndarray, body: np.ndarray, rng: np.random.Generator, s: float) -> None:
    """A curved couch under the back (right here), touching it or a few mm away; hollow or solid."""
    n = hu.shape[0]
    cols = np.flatnonzero(body.any(axis=0))
    rows = np.flatnonzero(body.any(axis=1))
    mid = (rows[0] + rows[-1]) / 2
    gap = rng.choice([0.0, rng.uniform(1, 10)]) / s
    thick = rng.uniform(8, 20) / s
    rr, cc = np.mgrid[:n, :n].astype(np.float32)
    curve = cols[-1] + gap + ((rr - mid) / (250.0 / s)) ** 2 * (30.0 / s) * -1.0
    inner = (cc >= curve) & (cc < curve + thick) & (np.abs(rr - mid) < 220.0 / s)
    hu[inner & ~body] = TABLE
    if rng.random() < 0.5:  # a hollow core of foam / air
        core = (cc >= curve + 0.3 * thick) & (cc < curve + 0.75 * thick) & (np.abs(rr - mid) < 200.0 / s)
        hu[core & ~body] = -950.0


def add_blanket(hu: np.ndarray, body: np.ndarray, rng: np.random.Generator, s: float) -> None:
    """A blanket over the front (left here), lying on the body or 2-15 mm above it, wavy."""
    dist = ndi.distance_transform_edt(~body) * s  # mm from the body
    n = hu.shape[0]
    front = np.zeros_like(body)
    cols = np.flatnonzero(body.any(axis=0))
    front[:, : int(cols[0] + (cols[-1] - cols[0]) * 0.45)] = True
    rr = np.arange(n, dtype=np.float32)[:, None]
    wave = 3.0 * np.sin(rr / (rng.uniform(8, 20) / s) + rng.uniform(0, 6))
    gap, thick = rng.choice([0.0, rng.uniform(2, 15)]), rng.uniform(3, 10)
    layer = front & (dist > gap + wave) & (dist <= gap + thick + wave) & ~body
    hu[layer] = float(rng.uniform(-350, -100))
