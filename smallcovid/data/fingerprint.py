"""Fingerprints of slices: was this image one a model was trained on?

A model scored on its own training slices looks better than it will on a new scan. Cards
list fingerprints of the slices their weights were trained on (:func:`fingerprint_record`),
so the app can say when an input is one of them, without the card holding any image.

A fingerprint is the first :data:`FINGERPRINT_HEX` hex digits of sha256 over the slice's
shape and its 8-bit pixels (``round(255 x)`` of the [0, 1] model input of an 8-bit image).
The same slice read from its JPEG, from a lossless copy (PNG, TIFF) or under another
name has the same fingerprint; a re-encoded JPEG, a crop or a resized copy does not.
"""

from __future__ import annotations

import hashlib
from typing import Iterable, Mapping, Sequence

import numpy as np

#: Hex digits kept (64 bits: no chance collision among millions of slices).
FINGERPRINT_HEX = 16
#: What the card says a fingerprint is.
METHOD = f"sha256 of (rows, columns) and the 8-bit pixels, first {FINGERPRINT_HEX} hex digits"


def slice_fingerprint(image: np.ndarray) -> str:
    """Fingerprint of one (H, W) slice: uint8 pixels, or floats in [0, 1] (8-bit values / 255).

    Raises:
        ValueError: not a 2D array.
    """
    a = np.asarray(image)
    if a.ndim != 2:
        raise ValueError(f"a slice fingerprint needs a (H, W) image, got shape {a.shape}")
    if a.dtype != np.uint8:
        a = np.rint(np.clip(a.astype(np.float64), 0.0, 1.0) * 255.0).astype(np.uint8)
    h = hashlib.sha256(f"{a.shape[0]}x{a.shape[1]}:".encode())
    h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:FINGERPRINT_HEX]


def fingerprint_record(images: Iterable[np.ndarray]) -> dict:
    """The card's ``training_slices`` entry for the slices a model trained on:
    ``{"method", "n", "fingerprints"}`` (sorted, so equal sets give equal cards)."""
    prints = sorted({slice_fingerprint(im) for im in images})
    return {"method": METHOD, "n": len(prints), "fingerprints": prints}


def card_fingerprints(card: Mapping | None) -> frozenset[str]:
    """The fingerprints a card lists (empty for a card without them, e.g. one written before them)."""
    record = (card or {}).get("training_slices") or {}
    return frozenset(str(f) for f in record.get("fingerprints", ()))


def in_sample_counts(fingerprints: Sequence[str | None], models: Mapping[str, frozenset[str]]) -> dict[str, int]:
    """Per model label, how many of ``fingerprints`` (one per input slice; None: no fingerprint,
    e.g. a slice in Hounsfield units) are among its training slices. Models with none are left out."""
    counts = {label: sum(1 for f in fingerprints if f is not None and f in prints) for label, prints in models.items()}
    return {label: n for label, n in counts.items() if n}


def model_fingerprints(predictor, out_of_fold: bool = False) -> frozenset[str]:
    """The training slices of a loaded model (its ``card``). A fold ensemble (``members``)
    trained on what any member trained on; scored out of fold
    (:mod:`smallcovid.inference.outoffold`), only on what every member trained on."""
    members = [card_fingerprints(getattr(m, "card", None)) for m in getattr(predictor, "members", None) or [predictor]]
    return frozenset.intersection(*members) if out_of_fold else frozenset().union(*members)
