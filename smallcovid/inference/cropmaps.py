"""Model maps of crops: run the model on a crop, paste its maps back into the frame, gate them.

The crop itself is chosen in :mod:`smallcovid.inference.framing`.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import numpy as np

from smallcovid.io.orient import CANONICAL, from_canonical, in_plane, to_canonical

if TYPE_CHECKING:  # framing imports this module
    from smallcovid.inference.framing import Box


def predict_crops(predictor, crops: list[np.ndarray], axes: tuple[str, str] | None) -> list:
    """:meth:`predict_images` of crops in the slice's orientation ``axes``: each crop reaches the
    model in the canonical (training) orientation and its maps come back in ``axes``."""
    maps = predictor.predict_images([to_canonical(c, axes) for c in crops])
    if in_plane(axes) in (None, CANONICAL):
        return maps
    return [dataclasses.replace(m, lesion=np.ascontiguousarray(from_canonical(m.lesion, axes)),
                                types=np.ascontiguousarray(from_canonical(m.types, axes))) for m in maps]


def gate_maps(maps, allowed: np.ndarray):
    """``maps`` with lesion probability 0 and type (1, 0, 0) outside ``allowed`` ((H, W) bool):
    lesions exist only inside the (grown) lungs."""
    lesion = np.where(allowed, maps.lesion, np.float32(0.0)).astype(np.float32)
    types = np.where(allowed[None], maps.types, np.array([1.0, 0.0, 0.0], np.float32)[:, None, None])
    return dataclasses.replace(maps, lesion=lesion, types=types.astype(np.float32))


def paste_maps(maps, box: Box | None, shape: tuple[int, int]):
    """Model maps of a crop pasted into a frame of ``shape`` (H, W).

    ``maps`` is a :class:`~smallcovid.inference.predictor.ProbMaps` at the crop's size;
    returns one at (H, W): lesion 0 and type probabilities (1, 0, 0) (background) outside
    the crop. ``box`` None returns ``maps`` unchanged.
    """
    if box is None:
        return maps
    lesion = np.zeros(shape, np.float32)
    lesion[box.slices] = maps.lesion
    types = np.zeros((3, *shape), np.float32)
    types[0] = 1.0
    types[(slice(None), *box.slices)] = maps.types
    return dataclasses.replace(maps, lesion=lesion, types=types)
