"""SmallCovid web app: page navigation and the shared sidebar, nothing else.

Run with ``streamlit run app.py``; the pages live in ``pages/``.

The menu is drawn here with ``st.page_link`` (``st.navigation(position="hidden")``), and
``client.showSidebarNavigation = false`` in ``.streamlit/config.toml`` hides Streamlit's own
menu. Streamlit lists every file of ``pages/`` (helper modules included) as a page until
``st.navigation`` has run once in the server process, that is for the first request after
each start; with its own menu hidden that list never shows.
"""

import streamlit as st

st.set_page_config(page_title="SmallCovid", page_icon=":material/pulmonology:", layout="wide")

PAGES = [
    st.Page("pages/segment.py", title="Segment", icon=":material/radiology:", default=True),
    st.Page("pages/compare.py", title="Compare", icon=":material/leaderboard:"),
    st.Page("pages/train.py", title="Train", icon=":material/model_training:"),
    st.Page("pages/models.py", title="Models", icon=":material/description:"),
]
page = st.navigation(PAGES, position="hidden")

with st.sidebar:
    # The menu and the title first: they need no model code, so they show at once after a start.
    for p in PAGES:
        st.page_link(p, width="stretch")
    st.markdown("**SmallCovid** — COVID-19 lung lesion segmentation on CT")

from pages._shared import DISCLAIMER, device_label, public_notice  # loads the model code: after the menu
from smallcovid.app.admission import limit_arenas, release_free_memory

limit_arenas()  # once per server process: a few shared malloc arenas, not one per visitor's thread

from pages._memlog import start_if_asked

start_if_asked()  # SMALLCOVID_MEMLOG=path: sample what each session keeps (a hosting diagnostic)

with st.sidebar:
    st.caption(f"Models run on: **{device_label()}**")
    st.warning(DISCLAIMER, icon=":material/warning:")
    public_notice()

try:
    page.run()
finally:
    # Also when the run stops early (a rerun, the visitor moved on): what it freed goes back
    # to the system, not into an idle arena.
    release_free_memory()
