"""The in-browser viewer's data for a segmented volume: one header, then per-slice items.

Once a volume is segmented, the viewer gets one header (:func:`volume_header`) and, a block at a
time, per-slice items (:func:`volume_slice_item`): the slice's raw intensities and every model's
byte map, each compressed on its own, and that slice's histograms. The viewer keeps the items it
has received and switches slice (J / K, its slice slider) and display window in the browser; the
page only sends items the viewer lacks, around the slice it last settled on (:func:`block_range`).
The encoding of maps and histograms is :mod:`smallcovid.app.viewer`'s.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from smallcovid.app.viewer import (CONSOLIDATION_BIT, PAPER_THRESHOLD, count_components, histograms, json_plain, level_of,
                                   pack, payload_rows, threshold_grid, unpack)
from smallcovid.core.vocab import LESION_TYPES

HU_OFFSET = 1024  # HU -1024 .. 3071 travel as uint16 0 .. 4095 (12 bits)
HU_MAX = 4095 - HU_OFFSET
BLOCK_STEP = 8  # slices: items travel in blocks of 3 x BLOCK_STEP around the settled slice


def volume_levels(levels255: np.ndarray, grid: Sequence[float]) -> np.ndarray:
    """(..., H, W) uint8 volume levels (``floor(255 p + 0.5)``) -> viewer levels on ``grid``.

    Level ``k`` means lesion at ``grid[k - 1]`` by the volume rule of
    :func:`smallcovid.inference.volume.threshold_volume` (``level255 >= threshold_level(t)``),
    so the viewer's masks and counts are the whole-volume downloads' voxels.
    """
    from smallcovid.inference.volume import threshold_level

    steps = np.asarray([threshold_level(t) for t in grid], dtype=np.int64)  # non-decreasing
    lut = np.searchsorted(steps, np.arange(256), side="right").astype(np.uint8)
    return lut[np.asarray(levels255, dtype=np.uint8)]


def pack_hu(hu: np.ndarray) -> str:
    """(H, W) HU -> :func:`pack` of 2·H·W bytes: high bytes, then low bytes, of ``clip(round(hu), -1024, 3071) + 1024``."""
    v = (np.clip(np.rint(np.asarray(hu, dtype=np.float32)), -HU_OFFSET, HU_MAX) + HU_OFFSET).astype(np.uint16)
    return pack(np.concatenate([(v >> 8).astype(np.uint8).ravel(), (v & 0xFF).astype(np.uint8).ravel()]))


def unpack_hu(text: str, shape: tuple[int, int]) -> np.ndarray:
    """Inverse of :func:`pack_hu`: (H, W) int16 HU (rounded, clipped to -1024 .. 3071)."""
    raw = unpack(text, (2,) + tuple(shape)).astype(np.int16)
    return (raw[0] * 256 + raw[1] - HU_OFFSET).astype(np.int16)


def window_display(hu: np.ndarray, width: float, level: float) -> np.ndarray:
    """(H, W) uint8 display of HU in a window: ``round(clip((hu - (level - width / 2)) / width, 0, 1) * 255)``.

    The viewer's JavaScript computes the same (``smallcovid.data.preprocess.apply_window`` then
    ``display_uint8``'s rounding, on HU rounded to integers).
    """
    x = (np.asarray(hu, dtype=np.float64) - (level - width / 2.0)) / width
    return np.floor(np.clip(x, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def block_range(center: int, n: int, step: int = BLOCK_STEP) -> range:
    """The slices sent around ``center``: 3 x ``step`` slices aligned to ``step`` (fewer at the ends)."""
    start = max(0, (int(center) // step) * step - step)
    return range(start, min(n, start + 3 * step))


def volume_header(*, key: str, n: int, shape: tuple[int, int], labels: Sequence[str], cards: Mapping[str, float],
                  default_threshold: float, spacing: tuple[float, float] | None, units: str,
                  windows: Mapping[str, tuple[float, float]], window: Mapping | None, truth_name: str | None,
                  truth_types: bool, lung_unreliable: bool) -> dict:
    """The viewer's data for a segmented volume, without slices (JSON-ready).

    Args:
        key: identifies the volume, models, thresholds and truth: the viewer keeps its
            received slices and controls while it stays the same.
        n, shape: number of slices and each slice's (H, W).
        labels, cards: model labels in order, and label -> card threshold.
        spacing: the slices' (row mm, col mm) or None.
        units: ``"hu"`` (slices travel as HU, windowed in the browser) or ``"raw"`` (as 8-bit display).
        windows: preset name -> (width, level); window: the shown window {name, width, level}.
        truth_name: the ground truth's name, or None without one; truth_types: it holds lesion types.
        lung_unreliable: the volume's lung mask failed lung QC ("% of lung" marked).
    """
    h, w = shape
    grid = threshold_grid(list(cards.values()) + [default_threshold, PAPER_THRESHOLD])
    return {
        "key": key, "width": int(w), "height": int(h), "grid": grid,
        "default_threshold": float(default_threshold), "paper_threshold": PAPER_THRESHOLD,
        "spacing": None if spacing is None else [float(spacing[0]), float(spacing[1])],
        "types": {str(k): v for k, v in LESION_TYPES.items()},
        "models": [{"label": lb, "card": float(cards[lb]), "card_level": level_of(grid, cards[lb]), "ms": None}
                   for lb in labels],
        "truth": None if truth_name is None else {"name": truth_name, "types": bool(truth_types)},
        "quantities": {"unit": "px" if spacing is None else "mm²",
                       "px_area": None if spacing is None else float(spacing[0]) * float(spacing[1]),
                       "lung_unreliable": bool(lung_unreliable)},
        "volume": {"n": int(n), "units": units, "block": BLOCK_STEP,
                   "windows": {k: [float(v[0]), float(v[1])] for k, v in windows.items()},
                   "window": dict(window) if window else None},
    }


def volume_slice_item(k: int, image: np.ndarray, units: str, maps: Sequence[tuple[np.ndarray, np.ndarray]],
                      grid: Sequence[float], lungs: np.ndarray, spacing: tuple[float, float] | None,
                      truth: np.ndarray | None = None, truth_types: bool = False) -> dict:
    """One slice of a segmented volume for the viewer (JSON-ready).

    Args:
        k: the slice's index.
        image: (H, W) HU (``units == "hu"``) or uint8 display image (``"raw"``).
        maps: per model (levels255, kind): (H, W) uint8 volume levels and lesion types (1 / 2).
        grid: the header's threshold grid.
        lungs: (H, W) lung labels (0 outside).
        spacing: (row mm, col mm) or None.
        truth: (H, W) uint8 ground truth 0 / 1 (/ 2 with ``truth_types``), or None.

    Returns:
        ``{"index", "image", "maps": [packed], "hist": [per model], "lung_px", "truth"}``
        (``truth``: outline, pixels, components, type_pixels, row — or None).
    """
    from smallcovid.app.analysis import lesion_stats
    from smallcovid.app.volume_report import slice_row

    image = pack_hu(image) if units == "hu" else pack(np.asarray(image, dtype=np.uint8))
    tr = None if truth is None else np.asarray(truth, dtype=np.uint8)
    tmask = None if tr is None else tr > 0
    packed, hists = [], []
    for levels255, kind in maps:
        lv = volume_levels(levels255, grid)
        kd = np.asarray(kind, dtype=np.uint8)
        packed.append(pack(lv | np.where(kd == 2, CONSOLIDATION_BIT, 0).astype(np.uint8)))
        hists.append(histograms(lv, kd, len(grid), tmask, tr if truth_types else None, lungs))
    item: dict = {"index": int(k), "image": image, "maps": packed, "hist": hists,
                  "lung_px": int(np.count_nonzero(lungs)), "truth": None}
    if tr is not None:
        from scipy import ndimage

        outline = tmask & ~ndimage.binary_erosion(tmask)
        row = slice_row("ground truth", tr if truth_types else tmask.astype(np.uint8), lungs, spacing,
                        types_known=truth_types, n_lesions=lesion_stats(tmask).n_lesions)
        item["truth"] = {"outline": pack(outline.astype(np.uint8)), "pixels": int(tmask.sum()),
                         "components": count_components(tmask),
                         "type_pixels": ({str(t): int((tr == t).sum()) for t in LESION_TYPES} if truth_types
                                         else None),
                         "row": {c: json_plain(v) for c, v in row.items()}}
    return item


def volume_item_rows(header: Mapping, item: Mapping, thresholds: Mapping[str, float]) -> list[dict]:
    """What the viewer's tables show for one slice item at ``thresholds`` (the twin of the JavaScript)."""
    truth = item.get("truth") or None
    payload = {"grid": header["grid"],
               "truth": None if truth is None else ({"type_pixels": truth["type_pixels"]} if truth["type_pixels"]
                                                    else {}),
               "models": [{**m, "hist": h} for m, h in zip(header["models"], item["hist"])],
               "quantities": {**header["quantities"], "lung_px": item["lung_px"]}}
    return payload_rows(payload, thresholds)


@dataclass(frozen=True, eq=False)
class SliceMaps:
    """One slice of a whole-volume result, shaped like ``ProbMaps`` for the 2D downloads and tables.

    Thresholds by the volume rule (``level255 >= threshold_level(t)``), so its masks are the
    whole-volume NIfTIs' voxels. Attributes: levels (H, W) uint8 volume levels, kind (H, W)
    uint8 lesion type (1 / 2), seconds 0 (no model ran for it).
    """

    levels: np.ndarray
    kind: np.ndarray
    seconds: float = 0.0

    @property
    def lesion(self) -> np.ndarray:
        """(H, W) float32 lesion probability, level / 255."""
        return self.levels.astype(np.float32) / np.float32(255)

    def mask(self, threshold: float) -> np.ndarray:
        """(H, W) bool lesion mask at ``threshold`` (the volume rule)."""
        from smallcovid.inference.volume import threshold_level

        return self.levels >= threshold_level(threshold)

    def type_map(self, threshold: float) -> np.ndarray:
        """(H, W) uint8: 0 outside the mask, else 1 (ground-glass) or 2 (consolidation)."""
        return np.where(self.mask(threshold), self.kind, np.uint8(0)).astype(np.uint8)
