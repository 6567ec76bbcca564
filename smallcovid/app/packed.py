"""A (D, H, W) uint8 volume kept as one zlib-compressed block per slice.

Whole-volume results are mostly zeros (no lesion outside the lungs, no lung outside the
chest), so a 512x512x300 lesion-level volume of 79 MB packs to a few MB; one slice
unpacks in well under a millisecond, which is what the viewer and the per-slice table need.
"""

from __future__ import annotations

import zlib

import numpy as np

LEVEL = 1  # zlib's fastest level: these arrays are runs of zeros, the ratio barely moves above it


class PackedSlices:
    """A read-only (D, H, W) uint8 array stored as per-slice zlib blocks.

    ``packed[k]`` is slice ``k`` as a fresh (H, W) uint8 array; :meth:`full` unpacks the
    whole volume (a transient (D, H, W) array). Anything else numpy-like is deliberately
    missing, so that code expecting a full array fails loudly instead of unpacking it
    slice by slice without saying so.

    Args:
        array: (D, H, W) array; converted to uint8 (values outside 0..255 raise).

    Raises:
        ValueError: not 3D, or values that do not fit uint8.
    """

    __slots__ = ("_blocks", "_shape")

    def __init__(self, array: np.ndarray) -> None:
        a = np.asarray(array)
        if a.ndim != 3:
            raise ValueError(f"PackedSlices needs a (D, H, W) array, got shape {a.shape}")
        if a.dtype != np.uint8:
            if a.size and (a.min() < 0 or a.max() > 255):
                raise ValueError(f"PackedSlices holds uint8 values 0..255, got {a.min()}..{a.max()}")
            a = a.astype(np.uint8)
        self._shape = tuple(int(s) for s in a.shape)
        self._blocks = tuple(zlib.compress(np.ascontiguousarray(s).tobytes(), LEVEL) for s in a)

    @property
    def shape(self) -> tuple[int, int, int]:
        return self._shape  # type: ignore[return-value]

    @property
    def nbytes(self) -> int:
        """Bytes held (the compressed blocks)."""
        return int(sum(len(b) for b in self._blocks))

    def __len__(self) -> int:
        return self._shape[0]

    def __getitem__(self, k: int) -> np.ndarray:
        if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer)):
            raise TypeError(f"PackedSlices index must be one slice number, got {k!r}")
        n = self._shape[0]
        if not -n <= k < n:
            raise IndexError(f"slice {k} out of range for {n} slices")
        raw = zlib.decompress(self._blocks[int(k) % n])
        return np.frombuffer(raw, np.uint8).reshape(self._shape[1:]).copy()

    def full(self) -> np.ndarray:
        """The whole (D, H, W) uint8 volume (unpacked now; not kept)."""
        out = np.empty(self._shape, np.uint8)
        for k, b in enumerate(self._blocks):
            out[k] = np.frombuffer(zlib.decompress(b), np.uint8).reshape(self._shape[1:])
        return out
