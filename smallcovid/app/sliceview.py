"""Every training slice's out-of-fold score, across models: which slices all models fail on,
and which fail one model only.

Cards carry ``cv.per_slice`` (see :func:`smallcovid.training.cvrows.slice_rows`): one record
per slice, scored by the fold model that held it out, at that fold's threshold chosen on the
other folds, ``{"slice", "fold", "dice", "precision", "recall", "lesion_share"}``. Cards older
than the records have none; :func:`slice_records` returns None for them.
"""

from __future__ import annotations

import math
from typing import Mapping

_FIELDS = ("dice", "precision", "recall", "lesion_share")


def slice_records(card: dict | None) -> dict[str, dict] | None:
    """``{slice: record}`` from the card's ``cv.per_slice`` (malformed records dropped), or None
    when the card has none."""
    cv = (card or {}).get("cv")
    raw = cv.get("per_slice") if isinstance(cv, dict) else None
    if not isinstance(raw, list):
        return None
    out = {}
    for r in raw:
        if not isinstance(r, dict) or not isinstance(r.get("slice"), str) or not _num(r.get("dice")):
            continue
        out[r["slice"]] = {"fold": r.get("fold"), **{k: float(r[k]) if _num(r.get(k)) else None for k in _FIELDS}}
    return out or None


def hardest_first(records: Mapping[str, Mapping[str, dict]]) -> list[str]:
    """The slices of ``{model: {slice: record}}``, lowest mean Dice over the models first (ties:
    by name). A slice missing from some models is ranked by the models that scored it."""
    slices = sorted({s for recs in records.values() for s in recs})

    def mean(s: str) -> float:
        vals = [recs[s]["dice"] for recs in records.values() if s in recs]
        return sum(vals) / len(vals)

    return sorted(slices, key=lambda s: (mean(s), s))


def hardest_rows(records: Mapping[str, Mapping[str, dict]], n: int = 8) -> list[dict]:
    """The ``n`` hardest slices as table rows: slice, lesion share of the slice (%, from the
    first model that has it), each model's Dice (None where it has no record), and their mean."""
    rows = []
    for s in hardest_first(records)[:n]:
        share = next((recs[s]["lesion_share"] for recs in records.values() if s in recs
                      and recs[s]["lesion_share"] is not None), None)
        row = {"slice": s, "lesion % of slice": None if share is None else round(100 * share, 1)}
        vals = []
        for model, recs in records.items():
            d = recs[s]["dice"] if s in recs else None
            row[model] = d
            if d is not None:
                vals.append(d)
        row["mean"] = sum(vals) / len(vals)
        rows.append(row)
    return rows


def per_slice_figure(records: Mapping[str, Mapping[str, dict]]):
    """Dot plot: x = slices, hardest first; y = out-of-fold Dice, one marker series per model
    (hover: fold, Dice, precision, recall, lesion share)."""
    import plotly.graph_objects as go

    from smallcovid.app.palette import series_style

    order = hardest_first(records)
    fig = go.Figure()
    for i, (model, recs) in enumerate(records.items()):
        xs = [s for s in order if s in recs]
        marker = dict(size=8, opacity=0.85, **series_style(i))
        fig.add_trace(go.Scatter(
            x=xs, y=[recs[s]["dice"] for s in xs], mode="markers", name=model, marker=marker,
            customdata=[[recs[s]["fold"], _pct(recs[s]["precision"]), _pct(recs[s]["recall"]),
                         _pct(recs[s]["lesion_share"])] for s in xs],
            hovertemplate=("%{x}<br>" + model + ": Dice %{y:.3f} (fold %{customdata[0]})<br>precision "
                           "%{customdata[1]}, recall %{customdata[2]}<br>lesion: %{customdata[3]} of the slice"
                           "<extra></extra>")))
    fig.update_layout(xaxis=dict(title="slice (hardest first: lowest mean Dice over the models)",
                                 categoryorder="array", categoryarray=order, tickangle=-60, tickfont=dict(size=9)),
                      yaxis=dict(title="out-of-fold Dice", range=[0, 1.02]), height=400,
                      legend=dict(orientation="h", yanchor="bottom", y=1.02, x=0),
                      margin=dict(l=10, r=10, t=40, b=10))
    return fig


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.1f} %"


def _num(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
