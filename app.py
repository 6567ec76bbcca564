"""SmallCovid web app: page navigation and the shared sidebar, nothing else.

Run with ``streamlit run app.py``; the pages live in ``pages/``.
"""

import streamlit as st

from pages._shared import DISCLAIMER, device_label, public_notice

st.set_page_config(page_title="SmallCovid", page_icon=":material/pulmonology:", layout="wide")

page = st.navigation([
    st.Page("pages/segment.py", title="Segment", icon=":material/radiology:", default=True),
    st.Page("pages/compare.py", title="Compare", icon=":material/leaderboard:"),
    st.Page("pages/train.py", title="Train", icon=":material/model_training:"),
    st.Page("pages/models.py", title="Models", icon=":material/description:"),
])

with st.sidebar:
    st.markdown("**SmallCovid** — COVID-19 lung lesion segmentation on CT")
    st.caption(f"Models run on: **{device_label()}**")
    st.warning(DISCLAIMER, icon=":material/warning:")
    public_notice()

page.run()
