"""One hue and marker per model, in the order the models are listed, on every page's figures
(Dice per image, threshold sweep, per-slice plot): the plotting theme's default palette puts
two blues and two reds side by side."""

from __future__ import annotations

_SYMBOLS = ("circle", "diamond", "square", "triangle-up", "x", "star")


def series_style(i: int) -> dict[str, str]:
    """``{"color", "symbol"}`` of the ``i``-th model's series (0-based) in a figure."""
    from plotly.colors import qualitative

    return {"color": qualitative.Plotly[i % len(qualitative.Plotly)], "symbol": _SYMBOLS[i % len(_SYMBOLS)]}
