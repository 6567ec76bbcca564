"""A model card's plateau check for display: one line of text and the per-fold validation curves.

Cards written by current training carry ``cv.plateau`` (see :mod:`smallcovid.training.plateau`):
``{"share": 0.75, "ok": bool, "per_fold": [{"fold", "best_epoch", "epochs_run", "ok", "curve"}],
"final_epochs"}``, where ``curve`` is the validation Dice (best over thresholds) per epoch.
A fold passes when its best epoch lies in the first ``share`` of the epochs it trained.
Older cards have no such record; :data:`NO_PLATEAU` says so.
"""

from __future__ import annotations

from typing import Any

NO_PLATEAU = "No plateau record (trained before plateau checks)."


def card_plateau(card: dict | None) -> dict | None:
    """The card's ``cv.plateau`` with its folds cleaned up, or None when the card has none.

    Returns ``{"share", "ok", "final_epochs", "per_fold": [{"fold", "best_epoch", "epochs_run",
    "ok", "curve"}], "extensions": [{"from", "to", "folds"}], "replaced": {"folds", "epochs"} or
    None}`` (``replaced``: the card's ``replaced_folds``, folds trained again alone, see
    ``scripts/replace_folds.py``); folds without a number are dropped, a missing curve is an
    empty list.
    """
    cv = (card or {}).get("cv")
    raw = cv.get("plateau") if isinstance(cv, dict) else None
    if not isinstance(raw, dict) or not isinstance(raw.get("per_fold"), list):
        return None
    folds = []
    for f in raw["per_fold"]:
        if not isinstance(f, dict) or not _is_int(f.get("fold")):
            continue
        curve = [float(v) if _is_num(v) else float("nan") for v in f.get("curve") or []]
        folds.append({"fold": int(f["fold"]), "best_epoch": int(f["best_epoch"]) if _is_int(f.get("best_epoch")) else None,
                      "epochs_run": int(f["epochs_run"]) if _is_int(f.get("epochs_run")) else len(curve),
                      "ok": bool(f.get("ok")), "curve": curve})
    share = float(raw["share"]) if _is_num(raw.get("share")) else 0.75
    final = int(raw["final_epochs"]) if _is_int(raw.get("final_epochs")) else None
    extensions = [e for e in raw.get("extensions") or [] if isinstance(e, dict) and _is_int(e.get("from"))
                  and _is_int(e.get("to")) and isinstance(e.get("folds"), list)]
    rep = card.get("replaced_folds")
    replaced = None
    if isinstance(rep, dict) and isinstance(rep.get("folds"), list) and _is_int(rep.get("epochs")):
        replaced = {"folds": [int(k) for k in rep["folds"] if _is_int(k)], "epochs": int(rep["epochs"])}
    return {"share": share, "ok": bool(raw.get("ok")) and bool(folds) and all(f["ok"] for f in folds),
            "final_epochs": final, "per_fold": folds, "extensions": extensions, "replaced": replaced}


def plateau_text(plateau: dict | None) -> str:
    """One sentence: ``Plateau reached in every fold (…)`` or ``Plateau not reached in folds 2, 4 (…)``;
    :data:`NO_PLATEAU` for None."""
    if plateau is None:
        return NO_PLATEAU
    folds = plateau["per_fold"]
    if not folds:
        return "The plateau record holds no fold."
    pct = f"{plateau['share']:.0%}"
    final = plateau.get("final_epochs")
    tail = f"; the final model trained {final} epochs" if final else ""
    for e in plateau.get("extensions") or []:
        folds_text = ", ".join(str(k) for k in e["folds"])
        tail += (f"; fold{'s' if len(e['folds']) > 1 else ''} {folds_text}, short of a plateau at "
                 f"{e['from']} epochs, trained on up to {e['to']}")
    rep = plateau.get("replaced")
    if rep and rep["folds"]:
        tail += (f"; fold{'s' if len(rep['folds']) > 1 else ''} {', '.join(map(str, rep['folds']))} trained again "
                 f"alone with the same recipe, up to {rep['epochs']} epochs")
    missed = [str(f["fold"]) for f in folds if not f["ok"]]
    if not missed:
        return (f"Plateau reached in every fold: each fold's best validation Dice came in the first {pct} of "
                f"its epochs{tail}.")
    which = f"fold {missed[0]}" if len(missed) == 1 else "folds " + ", ".join(missed)
    return (f"Plateau not reached in {which}: the best validation Dice came after the first {pct} of the "
            f"epochs, so a longer schedule could give a better model{tail}.")


def plateau_figure(plateau: dict):
    """Validation Dice per epoch for each fold, its best epoch marked (a star; open when that fold
    missed the plateau); the shaded part is the last ``1 - share`` of the longest run, and a dotted
    line marks ``share`` of each shorter length that folds trained (a best epoch right of its fold's
    line misses the plateau)."""
    import plotly.graph_objects as go
    from plotly.colors import qualitative

    from smallcovid.app.figures import epoch_ticks

    fig = go.Figure()
    longest = 0
    for i, f in enumerate(plateau["per_fold"]):
        colour = qualitative.Plotly[i % len(qualitative.Plotly)]
        epochs = list(range(1, len(f["curve"]) + 1))
        longest = max(longest, f["epochs_run"], len(epochs))
        label = f"fold {f['fold']}"
        fig.add_trace(go.Scatter(x=epochs, y=f["curve"], mode="lines+markers" if len(epochs) < 3 else "lines",
                                 name=label, legendgroup=label, line=dict(color=colour),
                                 hovertemplate=f"{label}<br>epoch %{{x}}: Dice %{{y:.3f}}<extra></extra>"))
        best = f["best_epoch"]
        if best is not None and 1 <= best <= len(f["curve"]):
            fig.add_trace(go.Scatter(
                x=[best], y=[f["curve"][best - 1]], mode="markers", name=f"{label} best epoch", legendgroup=label,
                showlegend=False, marker=dict(symbol="star" if f["ok"] else "star-open", size=14, color=colour),
                hovertemplate=f"{label} best epoch %{{x}}: Dice %{{y:.3f}}"
                              f"{'' if f['ok'] else ' (no plateau)'}<extra></extra>"))
    # Folds that stopped earlier have their own three-quarter mark: a dotted line for each other length.
    for n in sorted({f["epochs_run"] for f in plateau["per_fold"]} - {longest}):
        if n > 0:
            fig.add_vline(x=plateau["share"] * n, line=dict(color="gray", dash="dot", width=1),
                          annotation_text=f"{plateau['share']:.0%} of {n}", annotation_position="bottom right",
                          annotation_font_size=10)
    if longest:
        fig.add_vrect(x0=plateau["share"] * longest, x1=longest + 0.5, fillcolor="gray", opacity=0.12,
                      line_width=0, annotation_text=f"last {1 - plateau['share']:.0%}", annotation_position="top left")
    fig.update_xaxes(title_text="epoch", **epoch_ticks({0: {"epoch": list(range(1, longest + 1))}}))
    fig.update_yaxes(title_text="validation Dice (best threshold)", range=[0, 1.02])
    fig.update_layout(height=280, margin=dict(l=10, r=10, t=30, b=10),
                      legend=dict(orientation="h", yanchor="top", y=-0.25, x=0))
    return fig


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)
