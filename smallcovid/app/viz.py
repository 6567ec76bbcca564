"""Overlays (RGB uint8 arrays) and plotly figures for the app and reports.

Images are (H, W) uint8 display images (see :func:`smallcovid.data.preprocess.display_uint8`);
masks are (H, W) bool; type maps are (H, W) uint8 with 0 background, 1 ground-glass,
2 consolidation. Every overlay is (H, W, 3) uint8 at the image's own size, so panels
of the same scan line up pixel for pixel.
"""

from __future__ import annotations

import math
from io import BytesIO
from typing import Mapping, Sequence

import numpy as np
from scipy import ndimage

from smallcovid.app.palette import series_style
from smallcovid.core.errors import SmallCovidError

LESION_RGB = (255, 64, 32)  # binary lesion
TYPE_RGB = {1: (255, 210, 0), 2: (230, 30, 120)}  # ground-glass yellow, consolidation magenta
TRUTH_RGB = (0, 230, 255)  # outline of the ground truth
AGREE_RGB = (40, 200, 80)  # every model votes lesion
# Disagreement colours from "one model" (blue) over violet and pink to "all but one" (orange).
_DISAGREE_RAMP = np.array([[59, 130, 246], [168, 85, 247], [236, 72, 153], [249, 115, 22]], dtype=np.float32)


def _ramp(k: int, n: int) -> np.ndarray:
    """Colour of "k of n models vote lesion" for 0 < k < n (piecewise-linear along the ramp)."""
    t = 0.0 if n <= 2 else (k - 1) / (n - 2)
    x = t * (len(_DISAGREE_RAMP) - 1)
    i = min(int(x), len(_DISAGREE_RAMP) - 2)
    return (1 - (x - i)) * _DISAGREE_RAMP[i] + (x - i) * _DISAGREE_RAMP[i + 1]


def _check_image(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 2 or image.dtype != np.uint8:
        raise SmallCovidError(f"overlay needs a (H, W) uint8 display image, got {image.dtype} {image.shape}")
    return image


def _check_same(image: np.ndarray, arr: np.ndarray, what: str) -> np.ndarray:
    arr = np.asarray(arr)
    if arr.shape != image.shape:
        raise SmallCovidError(f"{what} is {arr.shape[::-1]} (width x height) but the image is {image.shape[::-1]}")
    return arr


def _blend(rgb: np.ndarray, where: np.ndarray, colour: Sequence[float], opacity: float) -> None:
    """In place: rgb[where] = (1 - opacity) * rgb + opacity * colour."""
    col = np.asarray(colour, dtype=np.float32)
    rgb[where] = (1.0 - opacity) * rgb[where] + opacity * col


def outline(mask: np.ndarray) -> np.ndarray:
    """(H, W) bool -> (H, W) bool: the mask's one-pixel inner border."""
    mask = np.asarray(mask, dtype=bool)
    return mask & ~ndimage.binary_erosion(mask)


def overlay(
    image: np.ndarray,
    mask: np.ndarray | None = None,
    types: np.ndarray | None = None,
    opacity: float = 0.45,
    truth: np.ndarray | None = None,
) -> np.ndarray:
    """Colour lesions over a gray display image.

    Args:
        image: (H, W) uint8 display image.
        mask: (H, W) bool lesion mask, drawn in :data:`LESION_RGB` (ignored when ``types`` is given).
        types: (H, W) uint8 type map, drawn in :data:`TYPE_RGB` (ground-glass, consolidation).
        opacity: 0 (image only) .. 1 (solid colour).
        truth: optional (H, W) bool ground truth, drawn as a cyan outline.

    Returns:
        (H, W, 3) uint8.
    """
    image = _check_image(image)
    if not 0.0 <= float(opacity) <= 1.0:
        raise SmallCovidError(f"opacity must be between 0 and 1, got {opacity}")
    rgb = np.repeat(image[..., None], 3, axis=2).astype(np.float32)
    if types is not None:
        types = _check_same(image, types, "the lesion-type map")
        for kind, colour in TYPE_RGB.items():
            _blend(rgb, types == kind, colour, opacity)
    elif mask is not None:
        _blend(rgb, _check_same(image, mask, "the mask").astype(bool), LESION_RGB, opacity)
    if truth is not None:
        rgb[outline(_check_same(image, truth, "the ground-truth mask"))] = TRUTH_RGB
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def vote_count(masks: Sequence[np.ndarray]) -> np.ndarray:
    """Number of models voting lesion per pixel: list of (H, W) bool -> (H, W) uint8."""
    if not masks:
        raise SmallCovidError("the disagreement map needs at least one model's mask")
    shape = np.shape(masks[0])
    for m in masks:
        if np.shape(m) != shape:
            raise SmallCovidError(f"all masks must have the same size; got {np.shape(m)} and {shape}")
    return np.sum([np.asarray(m, dtype=bool) for m in masks], axis=0).astype(np.uint8)


def disagreement_overlay(image: np.ndarray, masks: Sequence[np.ndarray], opacity: float = 0.6) -> np.ndarray:
    """Where models disagree: colour by the number of lesion votes.

    Pixels voted lesion by k of n models: k = n (all agree) -> green; 0 < k < n ->
    a blue (k = 1) over violet and pink to orange (k = n - 1) ramp; k = 0 -> the gray image.

    Returns:
        (H, W, 3) uint8.
    """
    image = _check_image(image)
    votes = vote_count(masks)
    _check_same(image, votes, "the model masks")
    n = len(masks)
    rgb = np.repeat(image[..., None], 3, axis=2).astype(np.float32)
    _blend(rgb, votes == n, AGREE_RGB, opacity)
    for k in range(1, n):
        _blend(rgb, votes == k, _ramp(k, n), opacity)
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def disagreement_legend(n_models: int) -> list[tuple[str, str]]:
    """(label, CSS hex colour) pairs explaining :func:`disagreement_overlay` for ``n_models``."""
    items = []
    for k in range(1, n_models):
        col = _ramp(k, n_models)
        items.append((f"{k} of {n_models}", "#%02x%02x%02x" % tuple(int(round(v)) for v in col)))
    items.append((f"all {n_models}", "#%02x%02x%02x" % AGREE_RGB))
    return items


def png_bytes(array: np.ndarray) -> bytes:
    """Encode a (H, W) uint8, (H, W) bool (-> 0/255) or (H, W, 3) uint8 array as PNG bytes."""
    from PIL import Image

    arr = np.asarray(array)
    if arr.dtype == bool:
        arr = arr.astype(np.uint8) * 255
    if arr.dtype != np.uint8 or not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] in (3, 4))):
        raise SmallCovidError(f"png_bytes needs a uint8 (H, W) or (H, W, 3) array, got {arr.dtype} {arr.shape}")
    buf = BytesIO()
    Image.fromarray(np.ascontiguousarray(arr)).save(buf, format="PNG")
    return buf.getvalue()


# ------------------------------------------------------------------ plotly figures

MARKED_EPOCHS = 60  # longer curves are drawn without per-epoch markers: hundreds of dots hide the line


def training_curves_figure(histories: Mapping[int, Mapping[str, Sequence[float]]], title: str = "",
                           threshold: float | None = 0.8):
    """Loss and validation Dice per epoch for each fold (the paper's Figures 6-9).

    Args:
        histories: fold -> columns of its ``history.csv`` (``epoch``, ``train_loss``,
            ``val_loss``, ``val_dice`` and optionally ``val_dice_best``); fold 0 is the
            final all-data model (no validation columns).
        threshold: the run's threshold, at which ``val_dice`` was measured (the per-fold
            table's "Dice"), for the labels.

    Returns:
        A plotly Figure with two panels. Colour = fold (one legend entry each); the line
        style is spelled out in each panel's title and every trace's name: loss panel
        solid = training loss, dotted = validation loss; Dice panel solid = ``val_dice``
        (Dice at ``threshold``), dotted = ``val_dice_best`` (the best Dice over thresholds,
        which picks the checkpoint).
    """
    import plotly.graph_objects as go
    from plotly.colors import qualitative
    from plotly.subplots import make_subplots

    at = "the run's threshold" if threshold is None else f"{threshold:g}"
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.08, subplot_titles=(
        "loss: solid training, dotted validation",
        f"validation Dice: solid at threshold {at}, dotted best threshold"))
    for i, (fold, h) in enumerate(sorted(histories.items(), key=lambda kv: (kv[0] == 0, kv[0]))):  # final last
        colour = qualitative.Plotly[i % len(qualitative.Plotly)]
        label = "final" if fold == 0 else f"fold {fold}"
        epochs = list(h.get("epoch", []))

        def line(y, what, dash, col, legend=False):
            # Hover says exactly what the line is; the legend has one entry per fold (its colour).
            fig.add_trace(go.Scatter(x=epochs, y=list(y), name=label if legend else f"{label} {what}",
                                     mode="lines+markers" if dash == "solid" and len(epochs) <= MARKED_EPOCHS else "lines",
                                     line=dict(color=colour, dash=dash), legendgroup=label, showlegend=legend,
                                     hovertemplate=f"{label} {what}<br>epoch %{{x}}: %{{y:.3f}}<extra></extra>"),
                          row=1, col=col)

        line(h.get("train_loss", []), "training loss", "solid", 1, legend=True)
        if any(v == v for v in h.get("val_loss", [])):  # skip all-NaN columns (final model)
            line(h["val_loss"], "validation loss", "dot", 1)
            line(h.get("val_dice", []), f"Dice at threshold {at}", "solid", 2)
            best = list(h.get("val_dice_best", []))
            if any(v == v for v in best):  # best Dice over a threshold grid (checkpoint selection)
                line(best, "best-threshold Dice", "dot", 2)
    fig.update_xaxes(title_text="epoch", **epoch_ticks(histories))
    fig.update_yaxes(range=[0, 1], row=1, col=2)
    fig.update_annotations(font_size=13)
    fig.update_layout(height=340, margin=dict(l=10, r=10, t=50, b=10), title=title or None,
                      legend=dict(title_text="colour = fold", orientation="h", yanchor="top", y=-0.22, x=0))
    return show_lone_points(fig)


MAX_EPOCHS_TICKED = 12  # up to this many epochs every epoch gets a tick


def epoch_ticks(histories: Mapping[int, Mapping[str, Sequence[float]]]) -> dict:
    """Epoch-axis settings: whole-number ticks only (``tickformat`` "d"), one per epoch
    (``dtick`` 1) for runs of at most :data:`MAX_EPOCHS_TICKED` epochs, where plotly would
    otherwise tick 1, 1.2, 1.4 …"""
    last = max((e for h in histories.values() for e in h.get("epoch", []) if e == e), default=0)
    return dict(tickformat="d", **(dict(tick0=1, dtick=1) if last <= MAX_EPOCHS_TICKED else {}))


def dice_box_figure(per_image: Mapping[str, Sequence[float]], stems: Sequence[str] | None = None):
    """Box plot with every image as a point: model label -> per-image Dice values."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for i, (label, values) in enumerate(per_image.items()):
        fig.add_trace(go.Box(y=list(map(float, values)), name=label, boxpoints="all", jitter=0.4,
                             marker_color=series_style(i)["color"],
                             pointpos=0, text=list(stems) if stems is not None else None,
                             hovertemplate="%{text}: Dice %{y:.3f}<extra>" + label + "</extra>"))
    fig.update_layout(yaxis_title="Dice per image", yaxis_range=[0, 1.02], showlegend=False,
                      height=360, margin=dict(l=10, r=10, t=30, b=10))
    return fig


def sweep_figure(sweeps: Mapping[str, Mapping[float, float]], current: float | None = None):
    """Mean Dice against threshold, one line per model; a dashed line marks ``current``."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for i, (label, sweep) in enumerate(sweeps.items()):
        ts = sorted(sweep)
        style = series_style(i)
        fig.add_trace(go.Scatter(x=ts, y=[sweep[t] for t in ts], mode="lines+markers", name=label,
                                 line=dict(color=style["color"]), marker=dict(symbol=style["symbol"])))
    if current is not None:
        fig.add_vline(x=float(current), line_dash="dash", line_color="gray",
                      annotation_text=f"threshold {current:.2f}", annotation_position="top")
    # The legend goes under the plot: at the right it covered the curves of a narrow column.
    fig.update_layout(xaxis_title="threshold", xaxis_range=[0, 1], yaxis_title="mean Dice", yaxis_range=[0, 1.02],
                      height=400, margin=dict(l=10, r=10, t=30, b=10),
                      legend=dict(orientation="h", yanchor="top", y=-0.2, xanchor="left", x=0))
    return fig


def reliability_figure(cal: Mapping):
    """Reliability diagram of a model's lesion probabilities before and after calibration.

    Args:
        cal: :func:`smallcovid.app.cardview.card_calibration` output: ``before`` / ``after``
            curves (per-bin mean ``confidence``, ``lesion_fraction``, pixel ``share``) and
            ``ece_before`` / ``ece_after``.

    Returns:
        A plotly Figure: lesion fraction against confidence (marker area ~ share of pixels),
        the diagonal of perfect calibration, ECE in the legend.
    """
    import plotly.graph_objects as go

    fig = go.Figure()
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", line=dict(color="gray", dash="dash"),
                             name="perfectly calibrated", hoverinfo="skip"))
    for key, colour, word in (("before", "#ef553b", "before"), ("after", "#636efa", "after")):
        c = cal.get(key)
        if not c:
            continue
        ece = cal.get(f"ece_{key}")
        share = list(c.get("share") or [0.0] * len(c["confidence"]))
        size = [6 + 30 * (s ** 0.5) for s in share]
        fig.add_trace(go.Scatter(
            x=c["confidence"], y=c["lesion_fraction"], mode="lines+markers", marker=dict(size=size, color=colour),
            line=dict(color=colour), name=f"{word} calibration" + ("" if ece is None else f" (ECE {ece:.3f})"),
            customdata=[100 * s for s in share],
            hovertemplate="confidence %{x:.2f}: lesion %{y:.2f} (%{customdata:.2f} % of pixels)<extra></extra>"))
    fig.update_layout(xaxis_title="predicted lesion probability (bin mean)", yaxis_title="share that is lesion",
                      xaxis_range=[0, 1], yaxis_range=[0, 1.02], height=360, margin=dict(l=10, r=10, t=30, b=10),
                      legend=dict(orientation="h", yanchor="top", y=-0.2, xanchor="left", x=0))
    return fig


def show_lone_points(fig):
    """Give markers to the line-only traces of a plotly figure that have a point with no neighbour
    (a one-epoch run, or a value between missing ones); returns ``fig``.

    A line needs two points: a lone point of a ``"lines"`` trace draws nothing, and the
    axis range may leave it out. Dashed and dotted traces get open markers, so they stay
    apart from the filled markers of solid ones.
    """
    for trace in fig.data:
        mode = getattr(trace, "mode", None) or ""
        if "lines" not in mode or "markers" in mode or not _has_lone_point(list(trace.y or [])):
            continue
        dash = getattr(trace.line, "dash", None)
        trace.mode = mode + "+markers"
        trace.marker = dict(color=trace.line.color, size=8,
                            symbol="circle" if dash in (None, "solid") else "circle-open")
    return fig


def _has_lone_point(ys: list) -> bool:
    def finite(i: int) -> bool:
        if not 0 <= i < len(ys):
            return False
        try:
            return math.isfinite(float(ys[i]))
        except (TypeError, ValueError):
            return False

    return any(finite(i) and not finite(i - 1) and not finite(i + 1) for i in range(len(ys)))
