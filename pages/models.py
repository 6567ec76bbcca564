"""Models page: one collapsible card per model (shipped, then trained here), beside the paper's numbers.

Above the cards, every training slice's out-of-fold Dice per model (cards with
``cv.per_slice``), hardest slices first. Each card: description, facts,
cross-validation per fold with mean ± std, per-fold training curves (from the
card, or the run folder of a model trained here), the plateau check (cards with
``cv.plateau``), the calibration reliability plot with ECE before/after (cards
with ``calibration.reliability``), and the paper's reported test results. The
research-use disclaimer is in the sidebar of every page.
"""

from __future__ import annotations

import streamlit as st

from pages._shell import ensure_app_shell

ensure_app_shell()  # before the model code loads: a first request for /models gets the app's menu at once

import pandas as pd

from pages._shared import admin_unlocked, cv_table
from smallcovid.app import figures
from smallcovid.app import plateauview
from smallcovid.app import runview
from smallcovid.app import sliceview
from smallcovid.app.cardview import (DATA_CITATIONS, PAPER_CITATION, card_calibration, card_facts, card_histories,
                                     cv_operating_rows, installed_run_dir, paper_vs_ours)
from smallcovid.app.catalog import ensemble_entries, installed_models, read_card, shipped_cards
from smallcovid.inference.predictor import weights_dir
from smallcovid.models import get_spec
from smallcovid.inference.report import PAPER_TABLE1


def facts_list(card: dict) -> None:
    """Architecture, parameters, input size, threshold, training data and protocol as a list."""
    st.markdown("\n".join(f"- **{k}:** {v}" if k != "reproduce" else f"- **{k}:** `{v}`"
                          for k, v in card_facts(card).items()))


def cv_section(card: dict, folds_shipped: bool = False) -> None:
    rows = cv_operating_rows(card)
    if rows:
        st.markdown("**Cross-validation, per fold**, at each fold's threshold chosen on its out-of-fold "
                    "predictions (raw probabilities); per-type Dice over images that contain the type. The "
                    "last column is the paper's protocol: Dice at its fixed threshold.")
        st.table(cv_table(rows))
        if folds_shipped:
            st.caption("The fold models ship too: on the Compare page, with *Fold ensembles* and *Out of fold* "
                       "on the labeled folder, each slice is scored by the fold model that held it out.")
    else:
        st.caption("This card has no cross-validation results.")


def curves_section(card: dict, key: str, run_dir: str | None = None) -> None:
    """Per-fold training curves: stored in the card, else read from the run folder when it is known."""
    histories = card_histories(card) or (runview.read_histories(run_dir) if run_dir else {})
    if not histories:
        return
    thr = ((card.get("training") or {}).get("config") or {}).get("threshold", 0.8)
    st.markdown("**Training curves, per fold**" + (f" (run folder {run_dir})" if run_dir and
                                                   not card_histories(card) else ""))
    st.plotly_chart(figures.training_curves_figure(histories, threshold=thr), key=f"curves-{key}")


def plateau_section(card: dict, key: str) -> None:
    """The card's plateau check: per-fold validation curves with each best epoch marked, and one line."""
    plateau = plateauview.card_plateau(card)
    if plateau is None or not plateau["per_fold"]:
        st.caption(plateauview.plateau_text(plateau))
        return
    st.markdown("**Plateau check** (validation Dice per epoch; star: each fold's best epoch, the one kept)")
    st.plotly_chart(plateauview.plateau_figure(plateau), key=f"plateau-{key}")
    st.caption(plateauview.plateau_text(plateau))


def calibration_section(card: dict, key: str) -> None:
    cal = card_calibration(card)
    if cal is None:
        return
    eces = [f"{w} {cal[f'ece_{w}']:.3f}" for w in ("before", "after") if cal.get(f"ece_{w}") is not None]
    st.markdown("**Calibration** (" + cal["method"].capitalize() + " scaling fitted on out-of-fold predictions"
                + (f"; expected calibration error {', '.join(eces)}" if eces else "") + ")")
    st.plotly_chart(figures.reliability_figure(cal), key=f"reliability-{key}")
    if cal.get("threshold") is not None:
        st.caption(f"Recommended threshold on calibrated probabilities: {cal['threshold']:g}. Marker area: the "
                   "share of pixels in each probability bin.")


def paper_section(name: str, card: dict | None) -> None:
    st.markdown("**The paper's reported test results beside ours** (ours: cross-validation mean at each "
                "fold's threshold chosen on its out-of-fold predictions)")
    paper = pd.DataFrame(paper_vs_ours(name, card, PAPER_TABLE1)).set_index("metric")
    st.table(paper.style.format("{:.3f}", na_rep="—"))


def model_card(name: str, card: dict | None, expanded: bool) -> None:
    """One collapsible card: description, facts, CV per fold, curves, calibration, paper vs ours."""
    threshold = f" · threshold {card['threshold']}" if card and card.get("threshold") is not None else ""
    with st.expander(f"**{name}**{threshold}", expanded=expanded, key=f"card-{name}"):
        st.subheader(name)
        st.caption(get_spec(name).description)
        if card is None:
            st.info(f"Weights not shipped yet: {weights_dir() / (name + '.safetensors')} and its .json card are "
                    f"missing. Train them with `python train.py --model {name} --data DIR --final` and copy the "
                    "run's final/ files into weights/.")
        else:
            facts_list(card)
            cv_section(card, folds_shipped=name in ensemble_entries())
            curves_section(card, name)
            plateau_section(card, name)
            calibration_section(card, name)
        paper_section(name, card)


def installed_section() -> None:
    """Models installed from training jobs (hidden from visitors in public mode), same sections as shipped."""
    entries = installed_models() if admin_unlocked() else []
    if not entries:
        return
    st.header("Trained here (installed from the Train page)")
    for e in entries:
        card = read_card(e.weights) or {}
        with st.expander(f"**{e.label}** · {card.get('architecture', e.name)}", key=f"card-{e.key}"):
            st.subheader(e.label)
            facts_list(card)
            cv_section(card)
            curves_section(card, e.key, installed_run_dir(card))
            plateau_section(card, e.key)
            calibration_section(card, e.key)


def per_slice_section(cards: dict[str, dict | None]) -> None:
    """Every training slice's out-of-fold Dice for each model with per-slice records, hardest first."""
    records = {n: r for n, c in cards.items() if (r := sliceview.slice_records(c))}
    if not records:
        return
    st.subheader("Where the models fail, slice by slice")
    st.markdown("**Per slice, out of fold**: every training slice scored by the fold model that held it out, "
                "at that fold's threshold (chosen on the other folds). Slices that every model gets wrong sit "
                "on the left; a lone low dot is one model's failure. Hover a dot for its fold, precision and "
                "recall.")
    st.plotly_chart(sliceview.per_slice_figure(records), key="per-slice")
    rows = pd.DataFrame(sliceview.hardest_rows(records)).set_index("slice")
    st.dataframe(rows.style.format("{:.3f}", subset=[*records, "mean"], na_rep="—")
                 .format("{:.1f}", subset=["lesion % of slice"], na_rep="—"), key="hardest-slices")
    missing = [n for n in cards if n not in records]
    if missing:
        st.caption(", ".join(missing) + ": no per-slice record (the card predates it).")


def citation() -> None:
    st.markdown("**References**")
    st.markdown("\n".join(f"- {c}" for c in (PAPER_CITATION, *DATA_CITATIONS)))


def main() -> None:
    st.title("Models")
    st.caption("The paper's numbers come from its own 10-slice test split; ours are k-fold cross-validation "
               "means on the training data, so compare them as context, not as a like-for-like result.")
    cards = shipped_cards()
    per_slice_section(cards)
    for i, (name, card) in enumerate(cards.items()):
        model_card(name, card, expanded=i == 0)
    installed_section()
    citation()


if __name__ == "__main__":
    main()
