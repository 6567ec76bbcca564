"""Intensity windowing between scan, model and display.

All image arrays are (H, W) float32; model inputs are in [0, 1]. HU windows
follow the radiology convention: a window of width W centred on level L maps
L - W/2 -> 0 and L + W/2 -> 1, clipping outside.

Model input vs display: a display window changes only what is shown. HU scans
always reach a model in the window its card names (:func:`input_window`, the lung
window W1500/L-600 unless the card says otherwise), the window the training
JPEGs were made in.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

from smallcovid.core.errors import SmallCovidError
from smallcovid.data.rewindow import rewindow_image
from smallcovid.io import Slice

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Window:
    """A display window in Hounsfield units: ``width`` > 0 and ``level`` (centre)."""

    width: float
    level: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.width) and math.isfinite(self.level)):
            raise SmallCovidError(f"window width and level must be finite numbers, got {self.width}, {self.level}")
        if self.width <= 0:
            raise SmallCovidError(f"window width must be positive, got {self.width} HU")


WINDOW_PRESETS: dict[str, Window] = {
    "lung": Window(1500, -600),
    "mediastinum": Window(350, 50),
    "soft-tissue": Window(400, 40),
    "bone": Window(1800, 400),
}
DEFAULT_WINDOW = "lung"
#: The window models are trained in (the training slices are 8-bit lung-window images).
MODEL_WINDOW = WINDOW_PRESETS["lung"]


def get_window(name: str) -> Window:
    """The preset called ``name`` (see :data:`WINDOW_PRESETS`)."""
    try:
        return WINDOW_PRESETS[name]
    except (KeyError, TypeError):
        raise SmallCovidError(f"unknown window {name!r}; choose one of {', '.join(WINDOW_PRESETS)}") from None


def input_window(card: dict | None) -> Window:
    """The HU window a model's inputs are made in: ``card["input_window"]`` or :data:`MODEL_WINDOW`.

    Args:
        card: a model card (``{"input_window": {"width": W, "level": L}}`` in HU), or None.

    Raises:
        SmallCovidError: the card's ``input_window`` is not a mapping with a positive
            ``width`` and a finite ``level``.
    """
    spec = (card or {}).get("input_window")
    if spec is None:
        return MODEL_WINDOW
    try:
        return Window(float(spec["width"]), float(spec["level"]))
    except (KeyError, TypeError, ValueError):
        raise SmallCovidError(f"model card input_window must be {{'width': W, 'level': L}} in HU, "
                              f"got {spec!r}") from None


def apply_window(hu: np.ndarray, window: Window) -> np.ndarray:
    """HU array (any shape) -> float32 in [0, 1]: clip((hu - (level - width/2)) / width, 0, 1)."""
    low = np.float32(window.level - window.width / 2)
    out = (np.asarray(hu, dtype=np.float32) - low) / np.float32(window.width)
    return np.clip(out, 0.0, 1.0, out=out).astype(np.float32, copy=False)


def _robust_rescale(x: np.ndarray) -> np.ndarray:
    """Map the 0.5th..99.5th percentiles to [0, 1] (min..max if those coincide); constant -> zeros."""
    finite = x[np.isfinite(x)]
    if finite.size == 0:
        return np.zeros(x.shape, np.float32)
    lo, hi = (float(v) for v in np.percentile(finite, [0.5, 99.5]))
    if hi <= lo:
        lo, hi = float(finite.min()), float(finite.max())
    if hi <= lo:
        return np.zeros(x.shape, np.float32)
    return np.clip((x - np.float32(lo)) / np.float32(hi - lo), 0.0, 1.0).astype(np.float32)


def to_model_input(s: Slice, window: Window | None = None, *, rewindow: bool = True) -> np.ndarray:
    """Slice -> (H, W) float32 in [0, 1], the intensity scale models are trained on.

    - ``"hu"``: windowed with ``window`` (default: the lung preset, width 1500, level -600);
      model inputs pass the model's :func:`input_window`, never a display window.
    - ``"display"``: already windowed; clipped to [0, 1] (``window`` is ignored). An image
      exported in a clearly wider display window than the training slices' (soft tissue
      mid-grey) is mapped onto their window (:func:`smallcovid.data.rewindow.rewindow_image`;
      :func:`display_rewindowed` says whether it was), unless ``rewindow=False``.
    - ``"raw"``: robust rescale, 0.5th..99.5th percentile -> 0..1 (``window`` is ignored).

    A constant image gives zeros; the result never contains NaN.
    """
    if s.units == "hu":
        out = apply_window(s.pixels, window or get_window(DEFAULT_WINDOW))
    elif s.units == "display":
        out = _display(s)
        if rewindow:
            out, _ = rewindow_image(out)
    else:
        out = _robust_rescale(s.pixels)
    return np.nan_to_num(out, nan=0.0, posinf=1.0, neginf=0.0)


def display_rewindowed(s: Slice) -> bool:
    """True when :func:`to_model_input` maps this slice from a wider display window onto the
    training slices' (an 8-bit export whose soft tissue is mid-grey)."""
    return s.units == "display" and rewindow_image(_display(s))[1]


def _display(s: Slice) -> np.ndarray:
    """A display-units slice as float32 in [0, 1], NaN as 0."""
    return np.nan_to_num(np.clip(s.pixels, 0.0, 1.0).astype(np.float32), nan=0.0)


def display_uint8(s: Slice, window: Window | None = None) -> np.ndarray:
    """(H, W) uint8 for showing the scan: round(to_model_input(s, window) * 255)."""
    return np.rint(to_model_input(s, window) * 255).astype(np.uint8)
