"""Models page: one card per shipped model (from weights/<name>.json), beside the paper's numbers."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from pages._shared import DISCLAIMER, admin_unlocked, ensure_app_shell, cv_table
from smallcovid.app.catalog import card_facts, cv_table_rows, installed_models, paper_vs_ours, read_card, shipped_cards
from smallcovid.inference.predictor import weights_dir
from smallcovid.models import get_spec
from smallcovid.inference.report import PAPER_TABLE1


def facts_list(card: dict) -> None:
    """Architecture, parameters, input size, threshold, training data and protocol as a list."""
    st.markdown("\n".join(f"- **{k}:** {v}" if k != "reproduce" else f"- **{k}:** `{v}`"
                          for k, v in card_facts(card).items()))


def model_card(name: str, card: dict | None) -> None:
    """One bordered card: description, facts, CV per fold with mean ± std, paper vs ours."""
    with st.container(border=True):
        st.subheader(name)
        st.caption(get_spec(name).description)
        if card is None:
            st.info(f"Weights not shipped yet: {weights_dir() / (name + '.safetensors')} and its .json card are "
                    f"missing. Train them with `python train.py --model {name} --data DIR --final` and copy the "
                    "run's final/ files into weights/.")
        else:
            facts_list(card)
            rows = cv_table_rows(card)
            if rows:
                st.markdown("**Cross-validation, per fold** (at the training threshold; per-type Dice over "
                            "images that contain the type)")
                st.table(cv_table(rows))
            else:
                st.caption("This card has no cross-validation results.")
        st.markdown("**The paper's reported test results beside ours**")
        paper = pd.DataFrame(paper_vs_ours(name, card, PAPER_TABLE1)).set_index("metric")
        st.table(paper.style.format("{:.3f}", na_rep="—"))


def installed_section() -> None:
    """Models installed from training jobs (hidden from visitors in public mode)."""
    entries = installed_models() if admin_unlocked() else []
    if not entries:
        return
    st.header("Trained here (installed from the Train page)")
    for e in entries:
        card = read_card(e.weights) or {}
        with st.container(border=True):
            st.subheader(e.label)
            facts_list(card)


def main() -> None:
    ensure_app_shell()
    st.title("Models")
    st.warning(DISCLAIMER, icon=":material/warning:")
    st.caption("The paper's numbers come from its own 10-slice test split; ours are k-fold cross-validation "
               "means on the training data, so compare them as context, not as a like-for-like result.")
    for name, card in shipped_cards().items():
        model_card(name, card)
    installed_section()


if __name__ == "__main__":
    main()
