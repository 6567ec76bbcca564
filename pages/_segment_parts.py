"""Parts of the Segment page: session caches, the overlay panels, the metric and quantity tables, downloads.

Split out of ``pages/segment.py`` to keep each file short; widgets only, the
computation is in :mod:`smallcovid.app.viz`, :mod:`smallcovid.app.analysis` and :mod:`smallcovid.app.uploads`.
"""

from __future__ import annotations

import re
from collections import OrderedDict

import numpy as np
import pandas as pd
import streamlit as st

from pages._shared import predictor
from smallcovid.app import analysis
from smallcovid.app import uploads
from smallcovid.app import viz
from smallcovid.app.catalog import ModelEntry
from smallcovid.core.vocab import LESION_TYPES, METRIC_TITLES
from smallcovid.io import Slice, Volume
from smallcovid.inference.metrics import type_dice
from smallcovid.data.preprocess import Window
from smallcovid.inference.volume import predict_volume, threshold_volume

PANELS_PER_ROW = 3


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


# ------------------------------------------------------------------ whole volume

def segment_volume(entry: ModelEntry, vol: Volume, window: Window | None) -> np.ndarray:
    """Lesion probabilities of every slice -> (D, H, W) uint8 levels (``prob_levels``), with a progress bar.

    Thresholded with :func:`smallcovid.inference.volume.threshold_volume`, like the CLI's volume masks.
    """
    bar = st.progress(0.0, text=f"Segmenting {len(vol)} slices with {entry.label}…")
    probs = predict_volume(predictor(entry), vol, window, keep_types=False,
                           progress=lambda done, n: bar.progress(done / n, text=f"Segmented {done} of {n} slices"))
    bar.empty()
    return probs.levels


# ------------------------------------------------------------------ output

def draw_panels(display: np.ndarray, maps: dict, thr: dict, opacity: float, show_types: bool,
                truth: np.ndarray | None) -> None:
    """Scan, one overlay per model and (two or more models) the disagreement map, all the same size."""
    panels = [(display, "scan")]
    for label, m in maps.items():
        img = (viz.overlay(display, types=m.type_map(thr[label]), opacity=opacity, truth=truth) if show_types
               else viz.overlay(display, mask=m.mask(thr[label]), opacity=opacity, truth=truth))
        panels.append((img, label))
    if len(maps) >= 2:
        panels.append((viz.disagreement_overlay(display, [m.mask(thr[k]) for k, m in maps.items()], opacity),
                       "disagreement: lesion votes per pixel"))
    for start in range(0, len(panels), PANELS_PER_ROW):
        cols = st.columns(PANELS_PER_ROW)
        for col, (img, caption) in zip(cols, panels[start:start + PANELS_PER_ROW]):
            col.image(img, caption=caption, width="stretch")
    legend = ["<span style='color:#00e6ff'>□</span> ground truth (outline)"] if truth is not None else []
    if show_types:
        legend += [f"<span style='color:#{r:02x}{g:02x}{b:02x}'>■</span> {n}"
                   for (r, g, b), n in zip(viz.TYPE_RGB.values(), LESION_TYPES.values())]
    else:
        legend.append("<span style='color:#%02x%02x%02x'>■</span> lesion" % viz.LESION_RGB)
    if len(maps) >= 2:
        legend += [f"<span style='color:{c}'>■</span> {t} models" for t, c in viz.disagreement_legend(len(maps))]
    if legend:
        st.caption(" &nbsp; ".join(legend), unsafe_allow_html=True)


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


def draw_metrics(df: pd.DataFrame, truth_name: str, thr: dict) -> None:
    best = str(df["Dice"].idxmax())
    st.subheader("Agreement with the ground truth")
    st.dataframe(df.style.format("{:.3f}").apply(
        lambda row: ["background-color: rgba(40, 200, 80, 0.25); font-weight: bold" if row.name == best else ""
                     for _ in row], axis=1), width="stretch")
    st.caption(f"Ground truth: {truth_name}. Best Dice: **{best}** ({df.loc[best, 'Dice']:.3f}). "
               f"{analysis.EMPTY_MASK_NOTE}")
    same = len(set(thr.values())) == 1
    flag = f" --threshold {next(iter(thr.values())):g}" if same else ""
    st.caption("The same figures from the command line, for a folder holding this image and its mask: "
               f"`python -m smallcovid evaluate --model all --data DIR{flag}`. Without `--threshold` it "
               "uses each model card's threshold (the *Card thresholds* toggle).")


def stats_frame(maps: dict, thr: dict, spacing, truth=None, truth_types=None) -> pd.DataFrame:
    """Lesion quantities per model (and the ground truth when given)."""
    rows = [analysis.stats_row(label, analysis.lesion_stats(m.mask(thr[label]), m.type_map(thr[label]), spacing),
                               m.seconds)
            for label, m in maps.items()]
    if truth is not None:
        rows.append(analysis.stats_row("ground truth", analysis.lesion_stats(truth, truth_types, spacing)))
    return pd.DataFrame(rows).set_index("model")


def stats_formats(df: pd.DataFrame) -> dict[str, str]:
    """Column -> format: whole pixels and counts, 2 decimals for %, 1 for mm² and ms."""
    return {c: "{:.0f}" if "(px)" in c or c == "separate lesions" else "{:.2f}" if "%" in c else "{:.1f}"
            for c in df.columns}


def draw_downloads(maps: dict, display: np.ndarray, thr: dict, opacity: float, stem: str, scan_key: str,
                   table: pd.DataFrame, scan, sl: Slice, window: Window | None, entries: list[ModelEntry]) -> None:
    st.subheader("Downloads")
    label = st.selectbox("Model", list(maps), key="download_model")
    m = maps[label]
    t = thr[label]
    mask = m.mask(t)
    over = viz.overlay(display, types=m.type_map(t), opacity=opacity)
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{stem}_{label}")
    c1, c2, c3, c4 = st.columns(4)
    c1.download_button("Mask PNG", lambda: viz.png_bytes(mask), f"{safe}_mask.png", "image/png", key="dl_mask")
    c2.download_button("Overlay PNG", lambda: viz.png_bytes(over), f"{safe}_overlay.png", "image/png", key="dl_overlay")
    c3.download_button("Metrics CSV", table.to_csv().encode(), f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', stem)}_metrics.csv",
                       "text/csv", key="dl_csv")
    if isinstance(scan, Volume):
        entry = next(e for e in entries if e.label == label)
        wkey = None if window is None else (window.width, window.level)
        vkey = (scan_key, entry.key, entry.mtime, wkey)
        vols = session_cache("volume_probs")
        if vkey not in vols:
            if c4.button(f"Segment all {len(scan)} slices", key="dl_volume_run",
                         help="Runs the chosen model on the whole volume for the NIfTI mask download."):
                remember(vols, vkey, segment_volume(entry, scan, window), 1)
                st.rerun()
        else:
            probs = vols[vkey]
            c4.download_button("Mask NIfTI", lambda: uploads.nifti_mask_bytes(threshold_volume(probs, t)[0], scan),
                               f"{safe}_mask.nii.gz", "application/gzip", key="dl_nifti")
    elif sl.source.lower().endswith((".nii", ".nii.gz")):
        like = uploads.as_volume(sl)
        c4.download_button("Mask NIfTI", lambda: uploads.nifti_mask_bytes(mask[None], like), f"{safe}_mask.nii.gz",
                           "application/gzip", key="dl_nifti")
