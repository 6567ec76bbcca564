"""The app shell check every page starts with; imports Streamlit only, so a page can call it
before it loads the model code.

Not a page itself (``app.py`` lists the pages).
"""

from __future__ import annotations

import streamlit as st


def ensure_app_shell() -> None:
    """Make sure the page runs inside ``app.py`` (navigation, sidebar, wide layout).

    Streamlit 1.67 treats an app with a ``pages/`` folder as an old-style multipage app
    until ``app.py`` has called ``st.navigation`` once in this server process; a first
    request for e.g. ``/compare`` would then run the page on its own. Clearing that flag
    and rerunning lets ``app.py`` route the same URL to the same page.
    """
    from streamlit.runtime.pages_manager import PagesManager  # pinned streamlit: see requirements.txt

    if PagesManager.uses_pages_directory:
        PagesManager.uses_pages_directory = False
        # Once per session: AppTest resets the flag before every run, and a rerun there
        # would drop the widget interaction that the run carries.
        if not st.session_state.get("_app_shell_rerun"):
            st.session_state["_app_shell_rerun"] = True
            st.rerun()
