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

from pages._shared import show_error
from smallcovid.app import analysis
from smallcovid.app import uploads
from smallcovid.app import viewer
from smallcovid.app import volume_viewer as volview
from smallcovid.app import viz
from smallcovid.app.catalog import ModelEntry
from smallcovid.app.session_store import DEFAULT_SESSION_MB, Prefetcher, VolumeStore
from smallcovid.core.errors import SmallCovidError
from smallcovid.core.vocab import LESION_TYPES, METRIC_TITLES
from smallcovid.io import Slice, Volume
from smallcovid.inference.metrics import type_dice
from smallcovid.data.preprocess import WINDOW_PRESETS, Window, display_uint8
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


def volume_store() -> VolumeStore:
    """This session's whole-volume results (:class:`smallcovid.app.session_store.VolumeStore`, capped)."""
    store = st.session_state.get("volume_results")
    if not isinstance(store, VolumeStore):
        try:
            store = VolumeStore()
        except SmallCovidError as exc:  # a bad SMALLCOVID_SESSION_MB: say so, use the default
            show_error(exc)
            store = VolumeStore(DEFAULT_SESSION_MB * 2**20)
        st.session_state["volume_results"] = store
    return store


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


VOLUME_VIEW_KEY = "seg_volume_view"  # a volume's settled slice / window / received slices (see volume_viewer)
SLICE_POS_KEY = "slice_pos"  # slice slider key -> shown slice (kept across page changes)
SLICE_GOTO_KEY = "slice_goto"  # slice slider key -> count of server-side jumps the viewer must follow
VOLUME_ITEM_ENTRIES = 48  # per-slice viewer items kept per session (about 0.4 MB each at 512x512)


def _store_view() -> None:
    """The viewer sent its settled state: keep it for the downloads and the volume results."""
    value = st.session_state.get("seg_overlay")
    view = value.get("view") if hasattr(value, "get") else None
    if isinstance(view, dict):
        st.session_state[VIEW_KEY] = viewer.default_view(view)
        if "slice" in view:  # a segmented volume: the slice and window shown, the slices the browser holds
            st.session_state[VOLUME_VIEW_KEY] = {k: view.get(k) for k in ("slice", "window", "have")}
            vv = st.session_state.get("seg_volume_slider")
            if vv and isinstance(view.get("slice"), int):
                st.session_state.setdefault(SLICE_POS_KEY, {})[vv] = int(view["slice"])


def prefetcher() -> Prefetcher:
    """This session's slices computed ahead (neighbours of the shown slice)."""
    if "prefetch" not in st.session_state:
        st.session_state["prefetch"] = Prefetcher(limit=16)
    return st.session_state["prefetch"]


def volume_window(units: str) -> Window | None:
    """The display window the volume viewer settled on (lung preset at first); None for non-HU scans."""
    if units != "hu":
        return None
    w = (st.session_state.get(VOLUME_VIEW_KEY) or {}).get("window")
    try:
        return Window(float(w["width"]), float(w["level"]))
    except (TypeError, KeyError, ValueError):
        return WINDOW_PRESETS["lung"]


def volume_viewer(scan: Volume, scan_key: str, slider_key: str, idx: int, stored: dict, cards: dict,
                  default: float, truth: tuple | None, lung_unreliable: bool) -> dict:
    """The viewer's data for a segmented volume: the header and the slices around ``idx`` it lacks.

    ``stored``: model label -> :class:`smallcovid.app.session_store.StoredVolume`; ``truth``:
    ((D, H, W) uint8 labels 0/1/2, name) or None.
    """
    n, h, w = scan.voxels.shape
    units = "hu" if scan.units == "hu" else "raw"
    ident = hashlib.sha1(repr((scan_key, [(k, id(v)) for k, v in stored.items()], sorted(cards.items()), default,
                               None if truth is None else (id(truth[0]), truth[1]), units,
                               lung_unreliable)).encode()).hexdigest()[:16]
    vv = st.session_state.get(VOLUME_VIEW_KEY) or {}
    win = vv.get("window") if units == "hu" else None
    if units == "hu" and not isinstance(win, dict):
        lung = WINDOW_PRESETS["lung"]
        win = {"name": "lung", "width": lung.width, "level": lung.level}
    header = volview.volume_header(
        key=ident, n=n, shape=(h, w), labels=list(stored), cards=cards, default_threshold=default,
        spacing=None if scan.spacing is None else (scan.spacing[1], scan.spacing[2]), units=units,
        windows={k: (WINDOW_PRESETS[k].width, WINDOW_PRESETS[k].level) for k in ("lung", "mediastinum")},
        window=win, truth_name=None if truth is None else truth[1], truth_types=truth is not None,
        lung_unreliable=lung_unreliable)
    st.session_state["seg_volume_slider"] = slider_key
    have = set(vv.get("have") or []) if st.session_state.get("seg_volume_key") == ident else set()
    st.session_state["seg_volume_key"] = ident
    cache = session_cache("volume_items")
    lungs = next(iter(stored.values())).lungs
    spacing = header["spacing"]
    items = []
    for k in volview.block_range(idx, n):
        if k in have:
            continue
        key = (ident, k)
        if key not in cache:
            image = scan.voxels[k] if units == "hu" else display_uint8(scan.slice(k), None)
            maps = [(v.levels[k], v.kind_slice(k)) for v in stored.values()]
            remember(cache, key, volview.volume_slice_item(
                k, image, units, maps, header["grid"], lungs[k], spacing,
                None if truth is None else truth[0][k], truth_types=True), VOLUME_ITEM_ENTRIES)
        items.append(cache[key])
    seq = (st.session_state.get(SLICE_GOTO_KEY) or {}).get(slider_key, 0)
    return {**header, "slices": items, "goto": {"index": int(idx), "seq": int(seq)}}


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
    """Per-model Dice / precision / recall / IoU (+ per-type Dice) at each model's threshold, indexed by model.

    A type absent from the ground truth gets no per-type Dice (empty, "—" in the viewer).
    """
    rows = analysis.metrics_table({k: m.mask(thr[k]) for k, m in maps.items()}, truth)
    if truth_types is not None:
        present = {t: bool(np.any(np.asarray(truth_types) == t)) for t in LESION_TYPES}
        for row, (k, m) in zip(rows, maps.items()):
            pred_types = m.type_map(thr[k])
            for t, name in LESION_TYPES.items():
                row[f"{name} Dice"] = type_dice(pred_types, truth_types, t) if present[t] else None
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
