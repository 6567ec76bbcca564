"""Parts of the Segment page: session caches, the in-browser viewer (overlays, metrics, quantities), downloads.

Split out of ``pages/segment.py`` to keep each file short; widgets only, the computation is in
:mod:`smallcovid.app.viewer`, :mod:`smallcovid.app.viz`, :mod:`smallcovid.app.analysis` and
:mod:`smallcovid.app.uploads`. The viewer itself is ``pages/components/overlay/`` (no build step).
"""

from __future__ import annotations

import hashlib
import re
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from smallcovid.app import analysis
from smallcovid.app import uploads
from smallcovid.app import viewer
from smallcovid.app import viz
from smallcovid.app.catalog import ModelEntry
from smallcovid.core.vocab import LESION_TYPES, METRIC_TITLES
from smallcovid.io import Slice, Volume
from smallcovid.inference.metrics import type_dice
from smallcovid.data.preprocess import Window
from smallcovid.inference.framing import lungs_for


def session_cache(name: str) -> OrderedDict:
    if name not in st.session_state:
        st.session_state[name] = OrderedDict()
    return st.session_state[name]


def remember(cache: OrderedDict, key, value, limit: int):
    cache[key] = value
    cache.move_to_end(key)
    while len(cache) > limit:
        cache.popitem(last=False)
    return value


# ------------------------------------------------------------------ the viewer (overlays, metrics, quantities)

_COMPONENT_DIR = Path(__file__).resolve().parent / "components" / "overlay"
_overlay = st.components.v2.component(
    "smallcovid_overlay",
    js=(_COMPONENT_DIR / "overlay.js").read_text(encoding="utf-8"),
    css=(_COMPONENT_DIR / "overlay.css").read_text(encoding="utf-8"),
)
VIEW_KEY = "seg_view"  # the viewer's settled state: threshold (None = default), opacity, types, cards
VIEWER_CACHE_ENTRIES = 2


def view_state() -> dict:
    """The viewer's last settled state (``smallcovid.app.viewer.DEFAULT_VIEW`` keys)."""
    return viewer.default_view(st.session_state.get(VIEW_KEY))


def _store_view() -> None:
    """The viewer sent its settled state: keep it for the downloads and the volume results."""
    value = st.session_state.get("seg_overlay")
    view = value.get("view") if hasattr(value, "get") else None
    if isinstance(view, dict):
        st.session_state[VIEW_KEY] = viewer.default_view(view)


def viewer_payload(maps: dict, display: np.ndarray, cards: dict, default: float, sl: Slice, slice_id: str,
                   window: Window | None, truth, truth_types, truth_name: str, truth_row: dict | None,
                   lung_qc: list | None = None) -> dict:
    """The viewer's data for this slice, built once per (slice, models, window, truth) and kept in the session.

    With ``lung_qc`` findings the viewer marks "% of lung" as unreliable.
    """
    wkey = None if window is None else (window.width, window.level)
    key = (slice_id, wkey, tuple((k, id(m)) for k, m in maps.items()), tuple(sorted(cards.items())), default,
           None if truth is None else (id(truth), truth_name), bool(lung_qc))
    cache = session_cache("viewer_cache")
    if key not in cache:
        lungs = lungs_for(sl)
        ident = hashlib.sha1(repr(key).encode()).hexdigest()[:16]
        payload = viewer.build_payload(display, maps, cards, default_threshold=default, truth=truth,
                                       truth_types=truth_types, spacing=sl.spacing, truth_name=truth_name,
                                       lungs=lungs, truth_row=truth_row, key=ident)
        payload["quantities"]["lung_unreliable"] = bool(lung_qc)
        remember(cache, key, payload, VIEWER_CACHE_ENTRIES)
    cache.move_to_end(key)
    return cache[key]


def draw_viewer(payload: dict) -> None:
    """Threshold / opacity / type controls, one overlay per model, disagreement, before/after, tables.

    All in the browser (``pages/components/overlay``): moving a control recolours and
    recomputes there; the settled state comes back as ``st.session_state["seg_view"]``.
    """
    _overlay(key="seg_overlay", data={**payload, "view": view_state()}, default={"view": None},
             on_view_change=_store_view)


def draw_cli_caption(thr: dict, with_truth: bool) -> None:
    """The command line that gives the same numbers (metrics with ground truth, masks without)."""
    same = len(set(thr.values())) == 1
    flag = f" --threshold {next(iter(thr.values())):g}" if same else ""
    if with_truth:
        st.caption("The same figures from the command line, for a folder holding this image and its mask: "
                   f"`python -m smallcovid evaluate --model all --data DIR{flag}`. Without `--threshold` it "
                   "uses each model card's threshold (the *Card thresholds* toggle).")
    else:
        st.caption(f"The same masks from the command line: `python -m smallcovid predict --model MODEL{flag} "
                   "--out DIR IMAGE`.")


def metrics_frame(maps: dict, thr: dict, truth: np.ndarray, truth_types: np.ndarray | None) -> pd.DataFrame:
    """Per-model Dice / precision / recall / IoU (+ per-type Dice) at each model's threshold, indexed by model."""
    rows = analysis.metrics_table({k: m.mask(thr[k]) for k, m in maps.items()}, truth)
    if truth_types is not None:
        for row, (k, m) in zip(rows, maps.items()):
            pred_types = m.type_map(thr[k])
            for t, name in LESION_TYPES.items():
                row[f"{name} Dice"] = type_dice(pred_types, truth_types, t)
    df = pd.DataFrame(rows).set_index("model")
    return df.rename(columns=METRIC_TITLES)


def results_table(maps: dict, thr: dict, truth, truth_types, stats: pd.DataFrame) -> pd.DataFrame:
    """The Metrics CSV: per model its threshold, the agreement metrics (with ground truth) and the quantities."""
    table = stats
    if truth is not None:
        table = metrics_frame(maps, thr, truth, truth_types).join(stats, how="outer")
        # The join sorts rows by name: keep the viewer's order (models as picked, ground truth last).
        table = table.reindex(list(stats.index) + [i for i in table.index if i not in stats.index])
    table = table.copy()
    for col in table.columns:  # pixel counts stay integers where a row has none ("—" in the viewer)
        values = table[col].dropna()
        if table[col].dtype.kind == "f" and len(values) and (values == values.round()).all() and (
                col.endswith("(px)") or col == "separate lesions"):
            table[col] = table[col].astype("Int64")
    table.insert(0, "threshold", [thr.get(str(i)) for i in table.index])
    return table


def draw_downloads(maps: dict, display: np.ndarray, thr: dict, opacity: float, stem: str, scan_key: str,
                   table, scan, sl: Slice, window: Window | None, entries: list[ModelEntry],
                   show_types: bool = True) -> None:
    """Mask / overlay PNG of one model and the metrics CSV, at the viewer's settled thresholds.

    ``table`` is the CSV's DataFrame or a function returning it (built only when downloaded).
    """
    st.subheader("Downloads")
    label = st.selectbox("Model", list(maps), key="download_model")
    m = maps[label]
    t = thr[label]
    mask = m.mask(t)
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{stem}_{label}")

    def over() -> bytes:
        kw = {"types": m.type_map(t)} if show_types else {"mask": mask}
        return viz.png_bytes(viz.overlay(display, opacity=opacity, **kw))

    def csv() -> bytes:
        return (table() if callable(table) else table).to_csv().encode()

    c1, c2, c3, c4 = st.columns(4)
    c1.download_button("Mask PNG", lambda: viz.png_bytes(mask), f"{safe}_mask.png", "image/png", key="dl_mask",
                       help=f"{label} at threshold {t:g}")
    c2.download_button("Overlay PNG", over, f"{safe}_overlay.png", "image/png", key="dl_overlay")
    c3.download_button("Metrics CSV", csv, f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', stem)}_metrics.csv",
                       "text/csv", key="dl_csv", help="Every model's threshold, metrics and lesion quantities")
    if not isinstance(scan, Volume) and sl.source.lower().endswith((".nii", ".nii.gz")):
        like = uploads.as_volume(sl)
        c4.download_button("Mask NIfTI", lambda: uploads.nifti_mask_bytes(mask[None], like), f"{safe}_mask.nii.gz",
                           "application/gzip", key="dl_nifti")
