"""Reading the Segment page's in-browser viewer from AppTest.

The viewer (``pages/components/overlay``) draws the overlays and tables in the browser
from one JSON payload (:mod:`smallcovid.app.viewer`); AppTest sees that payload, and
:func:`smallcovid.app.viewer.payload_rows` computes what the viewer shows from it (the
browser test checks that the JavaScript shows the same). The viewer's settled state
(threshold, opacity, types, card thresholds) is ``st.session_state["seg_view"]``, which
the component sets in a real browser and a test sets directly.
"""

from __future__ import annotations

import json

from streamlit.testing.v1 import AppTest

from smallcovid.app import viewer

DISAGREEMENT = "disagreement: lesion votes per pixel"


def viewer_data(at: AppTest) -> dict | None:
    """The viewer's payload (with its ``view``), or None when no viewer is shown."""
    els = [e for e in at.get("bidi_component") if getattr(e.proto, "component_name", "") == "smallcovid_overlay"]
    return json.loads(els[0].proto.json) if els else None


def panel_captions(at: AppTest) -> list[str]:
    """The panels the viewer draws: scan, one per model, the disagreement map (two or more models)."""
    d = viewer_data(at)
    if d is None:
        return []
    labels = [m["label"] for m in d["models"]]
    return ["scan", *labels, *([DISAGREEMENT] if len(labels) >= 2 else [])]


def thresholds(at: AppTest) -> dict[str, float]:
    """Model label -> the threshold the viewer starts with (its view, default and card thresholds)."""
    d = viewer_data(at)
    return viewer.thresholds_for(d["view"], d["default_threshold"], {m["label"]: m["card"] for m in d["models"]})


def rows(at: AppTest) -> dict[str, dict]:
    """Model label -> what the viewer's tables show (metrics, areas, quantities) at its thresholds."""
    return {r["model"]: r for r in viewer.payload_rows(viewer_data(at), thresholds(at))}


def set_view(at: AppTest, **view) -> AppTest:
    """What the viewer sends after the user settles a control: the new state, then a rerun."""
    state = dict(at.session_state["seg_view"]) if "seg_view" in at.session_state else {}
    state.update(view)
    at.session_state["seg_view"] = viewer.default_view(state)
    return at.run()
