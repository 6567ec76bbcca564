"""Lesion regions as instances: the training targets of the instance model (Mask R-CNN)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def lesion_instances(
    lesion_mask: np.ndarray, lesion_types: np.ndarray, min_pixels: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Instances of one image: 8-connected lesion regions of at least ``min_pixels``.

    Args:
        lesion_mask: (H, W) bool or {0, 1}.
        lesion_types: (H, W) int in {0, 1, 2}.
        min_pixels: smaller regions are ignored.

    Returns:
        boxes (n, 4) float32 ``x1, y1, x2, y2`` (x2/y2 exclusive), masks (n, H, W)
        uint8, labels (n,) int64 in {1, 2}: consolidation when it is the strict
        majority of the region, otherwise GGO (type-0 pixels inside a lesion count as GGO).
    """
    regions, count = ndimage.label(lesion_mask > 0, structure=np.ones((3, 3), dtype=bool))
    flat = regions.ravel()
    sizes = np.bincount(flat, minlength=count + 1)
    consolidation = np.bincount(flat, weights=(lesion_types.ravel() == 2), minlength=count + 1)
    boxes, masks, labels = [], [], []
    for index, region in enumerate(ndimage.find_objects(regions), start=1):
        if region is None or sizes[index] < min_pixels:
            continue
        ys, xs = region
        boxes.append([xs.start, ys.start, xs.stop, ys.stop])
        masks.append(regions == index)
        labels.append(2 if consolidation[index] * 2 > sizes[index] else 1)
    height, width = lesion_mask.shape
    return (
        np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
        np.asarray(masks, dtype=np.uint8).reshape(-1, height, width),
        np.asarray(labels, dtype=np.int64),
    )
