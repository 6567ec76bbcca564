"""Plotly figures for the app and reports: training curves, Dice box plot, threshold sweep, reliability.

Each function takes plain mappings (a card's or a run's histories and scores) and returns a
``plotly.graph_objects.Figure``; nothing here reads files or draws widgets.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

from smallcovid.app.palette import series_style

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
