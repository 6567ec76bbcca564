"""Segment page: upload a CT slice (or load the synthetic example), compare the models over it.

Probability maps are computed once per (upload hash, model, window, slice) and kept in
``st.session_state``; the threshold and opacity sliders only re-threshold and re-colour.
"""

from __future__ import annotations

import hashlib

import streamlit as st

from pages._segment_parts import (draw_downloads, draw_metrics, draw_panels, metrics_frame, remember, session_cache,
                                  stats_formats, stats_frame)
from pages._shared import DISCLAIMER, check_upload, ensure_app_shell, model_picker, predictor, show_error
from smallcovid.app import uploads
from smallcovid.app.catalog import ModelEntry
from smallcovid.core.errors import SmallCovidError
from smallcovid.io import Slice, Volume, read_scan
from smallcovid.data.phantom import make_phantom
from smallcovid.data.preprocess import WINDOW_PRESETS, Window, display_uint8

PROB_CACHE_ENTRIES = 24  # ProbMaps kept per session (about 4 MB each at 512x512)
SCAN_CACHE_ENTRIES = 2  # decoded uploads kept per session (a 512x512x300 volume is 300 MB)
EXAMPLE = "synthetic-phantom"
WINDOW_CHOICES = ("lung", "mediastinum", "custom")


# ------------------------------------------------------------------ inputs

@st.cache_resource
def example_phantom():
    """The synthetic example (deterministic, shared by all sessions, never modified)."""
    return make_phantom(256, seed=0)


def source_inputs() -> tuple[list, list, str]:
    """Upload widgets and the Example button -> (scan uploads, mask uploads, source)."""
    st.session_state.setdefault("source", "upload")
    left, right = st.columns([3, 2])
    scans = left.file_uploader(
        "CT slice(s): PNG, JPEG, TIFF, DICOM or NIfTI (.nii / .nii.gz)", accept_multiple_files=True,
        key="scan_files", on_change=lambda: st.session_state.update(source="upload"))
    masks = right.file_uploader(
        "Ground-truth mask(s), optional: PNG 0/255 with the image's stem, or NIfTI labels for a volume",
        accept_multiple_files=True, key="mask_files")
    left.button("Example", key="example", help="A synthetic CT-like phantom with ground-glass and consolidation lesions",
                on_click=lambda: st.session_state.update(source="example"))
    return list(scans or []), list(masks or []), st.session_state["source"]


def load_scan(upload) -> tuple[str, Slice | Volume]:
    """Decode an upload once per session -> (content hash, scan); raises SmallCovidError."""
    cache = session_cache("scan_cache")
    if upload.file_id not in cache:
        try:
            check_upload(upload)  # the size cap (lower in public mode), before reading the bytes
            data = upload.getvalue()
            value = (hashlib.sha256(data).hexdigest()[:16], read_scan(data, name=upload.name))
        except SmallCovidError as exc:
            value = SmallCovidError(str(exc))  # the message only: no traceback holding the upload
        remember(cache, upload.file_id, value, SCAN_CACHE_ENTRIES)
    value = cache[upload.file_id]
    cache.move_to_end(upload.file_id)
    if isinstance(value, SmallCovidError):
        raise value
    return value


def choose_upload(scans: list):
    """Selectbox over several uploads -> the chosen one."""
    if len(scans) == 1:
        return scans[0]
    names = [f"{i + 1}. {f.name}" for i, f in enumerate(scans)]
    pick = st.selectbox("Scan", names, key="scan_pick")
    return scans[names.index(pick)]


def choose_slice(scan: Slice | Volume, digest: str) -> tuple[Slice, int | None]:
    """For a volume, a slice slider -> (slice, index); a 2D scan is returned as is."""
    if isinstance(scan, Volume):
        n = len(scan)
        idx = st.slider(f"Slice (of {n})", 0, n - 1, n // 2, key=f"slice-{digest}") if n > 1 else 0
        return scan.slice(idx), idx
    return scan, None


def window_picker(sl: Slice) -> Window | None:
    """Window preset radio (lung, mediastinum, custom width/level) for HU scans; None otherwise."""
    if sl.units != "hu":
        st.caption("Window presets apply to scans in Hounsfield units (DICOM, NIfTI); "
                   "this image is shown and segmented with its own intensities.")
        return None
    fmt = {k: f"{k} (W {WINDOW_PRESETS[k].width:g} / L {WINDOW_PRESETS[k].level:g})" for k in WINDOW_CHOICES[:2]}
    choice = st.radio("Window", WINDOW_CHOICES, horizontal=True, key="window",
                      format_func=lambda k: fmt.get(k, "custom width / level"))
    if choice != "custom":
        return WINDOW_PRESETS[choice]
    c1, c2 = st.columns(2)
    width = c1.number_input("Width (HU)", min_value=1.0, max_value=6000.0, value=1500.0, step=50.0, key="win_w")
    level = c2.number_input("Level (HU)", min_value=-1500.0, max_value=3000.0, value=-600.0, step=10.0, key="win_l")
    return Window(float(width), float(level))


def _card_threshold(entry: ModelEntry, default: float) -> float:
    try:
        return float(predictor(entry).threshold)
    except SmallCovidError:  # unloadable weights: reported where the model runs
        return float(default)


def view_controls(entries: list[ModelEntry]) -> tuple[dict[str, float], float, bool]:
    """Threshold (default 0.8) or each model card's threshold, overlay opacity, lesion-type toggle.

    Returns (model label -> threshold, opacity, show types).
    """
    c1, c2, c3 = st.columns([2, 2, 1])
    use_cards = c3.toggle("Card thresholds", value=False, key="card_thresholds",
                          help="Use each model's recommended threshold from its model card "
                               "(what `python -m smallcovid evaluate` uses by default).")
    thr = c1.slider("Threshold", 0.01, 0.99, 0.80, 0.01, key="threshold", disabled=use_cards,
                    help="A pixel is lesion when the model's probability is at least this (the paper uses 0.8).")
    opacity = c2.slider("Overlay opacity", 0.0, 1.0, 0.45, 0.05, key="opacity")
    show_types = c3.toggle("Lesion types", value=True, key="show_types",
                           help="Colour ground-glass (yellow) and consolidation (magenta) separately.")
    thresholds = {e.label: _card_threshold(e, thr) if use_cards else float(thr) for e in entries}
    if use_cards:
        st.caption("Thresholds from the model cards: " + ", ".join(f"{k} {v:g}" for k, v in thresholds.items()))
    return thresholds, float(opacity), bool(show_types)


# ------------------------------------------------------------------ ground truth

def ground_truth(masks: list, scan_name: str, shape, volume: Volume | None, idx: int | None):
    """The uploaded ground truth matching the scan -> (mask, types or None, file name) or None."""
    if not masks:
        return None
    i = uploads.match_mask([m.name for m in masks], scan_name)
    if i is None:
        st.warning(f"None of the uploaded masks is named like {scan_name} "
                   f"(expected {uploads.stem(scan_name)}.png); no metrics shown.")
        return None
    upload = masks[i]
    key = (upload.file_id, tuple(shape), idx)
    cache = session_cache("truth_cache")
    if key not in cache:
        check_upload(upload)
        value = uploads.read_ground_truth(upload.getvalue(), upload.name, tuple(shape), volume, idx)
        remember(cache, key, value, 4)
    mask, types = cache[key]
    return mask, types, upload.name


# ------------------------------------------------------------------ prediction

def predict(entries: list[ModelEntry], sl: Slice, window: Window | None, scan_key: str) -> dict:
    """label -> ProbMaps for the slice, from the session cache or by running each model once."""
    cache = session_cache("prob_cache")
    wkey = None if window is None else (window.width, window.level)
    out = {}
    for e in entries:
        key = (scan_key, e.key, e.mtime, wkey)
        if key in cache:
            cache.move_to_end(key)
        else:
            try:
                with st.spinner(f"Running {e.label}…"):
                    remember(cache, key, predictor(e).predict_scan(sl, window), PROB_CACHE_ENTRIES)
            except SmallCovidError as exc:
                show_error(exc)
                continue
        out[e.label] = cache[key]
    return out


# ------------------------------------------------------------------ page

def main() -> None:
    ensure_app_shell()
    st.title("Segment")
    st.caption("Lesion segmentation of one CT slice by every model, side by side. " + DISCLAIMER)
    scans, masks, source = source_inputs()
    entries = model_picker("models")
    truth = truth_types = None
    truth_name = ""
    try:
        if source == "example":
            ph = example_phantom()
            scan, scan_key, stem = ph.scan, EXAMPLE, EXAMPLE
            truth, truth_types, truth_name = ph.mask, ph.types, "the phantom's true lesions"
            st.info(ph.description, icon=":material/science:")
        elif scans:
            upload = choose_upload(scans)
            digest, scan = load_scan(upload)
            scan_key, stem = digest, uploads.stem(upload.name)
        else:
            st.info("Upload a CT slice, or press **Example** to try a synthetic phantom.")
            return
        sl, idx = choose_slice(scan, scan_key)
        window = window_picker(sl)
    except SmallCovidError as exc:
        show_error(exc)
        return
    if source != "example":
        try:
            gt = ground_truth(masks, scan.source, sl.shape, scan if isinstance(scan, Volume) else None, idx)
        except SmallCovidError as exc:  # a bad mask: say so, still segment the scan
            show_error(exc)
            gt = None
        if gt is not None:
            truth, truth_types, truth_name = gt
    thr, opacity, show_types = view_controls(entries)
    if not entries:
        return
    maps = predict(entries, sl, window, f"{scan_key}:{idx}")
    if not maps:
        return
    display = display_uint8(sl, window)
    draw_panels(display, maps, thr, opacity, show_types, truth)
    stats = stats_frame(maps, thr, sl.spacing, truth, truth_types)
    table = stats
    if truth is not None:
        mdf = metrics_frame(maps, thr, truth, truth_types)
        draw_metrics(mdf, truth_name, thr)
        table = mdf.join(stats, how="outer")
    st.subheader("Lesion quantities")
    st.table(stats.style.format(stats_formats(stats), na_rep="—"))
    if sl.spacing is None:
        st.caption("Areas in mm² need the pixel spacing, which this file does not record.")
    draw_downloads(maps, display, thr, opacity, stem, scan_key, table, scan, sl, window, entries)


if __name__ == "__main__":
    main()
