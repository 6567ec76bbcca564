"""Segment page: upload a CT slice (or load the synthetic example), compare the models over it.

Probability maps are computed once per (upload hash, model, slice) and kept in
``st.session_state``; the threshold and opacity sliders only re-threshold and re-colour, and
the window radio changes only the display. Several DICOM files of one series load as one
volume; scan choice and slice navigation are in ``_scan_parts``, whole-volume results in ``_volume_parts``.
"""

from __future__ import annotations

import streamlit as st

from pages._segment_parts import (draw_cli_caption, draw_downloads, draw_viewer, prefetcher, remember,
                                  results_table, session_cache, view_state, viewer_payload, volume_viewer,
                                  volume_window)
from pages._shared import (DISCLAIMER, check_upload, ensure_app_shell, model_picker, out_of_fold_choice, predictor,
                           show_error, show_upload_errors)
from pages._upload_parts import source_inputs, uploads_set_aside
from pages._scan_parts import (choose_scan, choose_slice, load_scan, quantities_frame, shown_slice, slice_key,
                               slice_lung_qc)
from pages._volume_parts import stored_volumes, truth_volume, volume_lung_qc, volume_section
from smallcovid.app import uploads
from smallcovid.app.catalog import PAPER_THRESHOLD, ModelEntry, default_threshold
from smallcovid.app.dicom_series import series_caption
from smallcovid.app.insample import slice_in_sample_text
from smallcovid.app.viewer import thresholds_for
from smallcovid.app.volume_viewer import SliceMaps
from smallcovid.app.volume_report import qc_warning_text
from smallcovid.core.errors import SmallCovidError
from smallcovid.io import Slice, Volume
from smallcovid.io.series import SeriesVolume
from smallcovid.data.phantom import make_example
from smallcovid.data.preprocess import WINDOW_PRESETS, Window, display_rewindowed, display_uint8
from smallcovid.data.rewindow import REWINDOW_NOTE
from smallcovid.inference.framing import lungs_for
from smallcovid.inference.outoffold import held_out_predictor

PROB_CACHE_ENTRIES = 24  # ProbMaps kept per session (about 4 MB each at 512x512)
EXAMPLE = "synthetic-phantom"
WINDOW_CHOICES = ("lung", "mediastinum", "custom")


# ------------------------------------------------------------------ inputs

@st.cache_resource
def example_phantom():
    """The synthetic example (deterministic, shared by all sessions, never modified)."""
    return make_example()


SMALL_SIDE = 64  # px: below this an image cannot be a CT slice the models know


def warn_if_small(sl: Slice) -> None:
    """Say so when a slice is far smaller than the 512x512 CT slices the models were trained on."""
    h, w = sl.shape
    if min(h, w) < SMALL_SIDE:
        st.warning(f"This image is {w}×{h} pixels. The models were trained on 512×512 CT slices; on an image "
                   f"this small their output says little.", icon=":material/warning:")


def window_picker(sl: Slice, rewindowed: bool = False) -> Window | None:
    """Window preset radio (lung, mediastinum, custom width/level) for HU scans; None otherwise.
    ``rewindowed``: an 8-bit image mapped onto the training window (:func:`display_rewindowed`)."""
    if sl.units != "hu":
        own = "" if rewindowed else "; this image is shown and segmented with its own intensities"
        st.caption(f"Window presets apply to scans in Hounsfield units (DICOM, NIfTI){own}.")
        return None
    fmt = {k: f"{k} (W {WINDOW_PRESETS[k].width:g} / L {WINDOW_PRESETS[k].level:g})" for k in WINDOW_CHOICES[:2]}
    if "window" not in st.session_state and st.session_state.get("window_kept") in WINDOW_CHOICES:
        st.session_state["window"] = st.session_state["window_kept"]  # back from another page
    choice = st.radio("Window", WINDOW_CHOICES, horizontal=True, key="window",
                      format_func=lambda k: fmt.get(k, "custom width / level"))
    st.session_state["window_kept"] = choice
    if choice != "custom":
        return WINDOW_PRESETS[choice]
    c1, c2 = st.columns(2)
    width = c1.number_input("Width (HU)", min_value=1.0, max_value=6000.0, value=1500.0, step=50.0, key="win_w")
    level = c2.number_input("Level (HU)", min_value=-1500.0, max_value=3000.0, value=-600.0, step=10.0, key="win_l")
    return Window(float(width), float(level))


def card_thresholds(entries: list[ModelEntry]) -> dict[str, float]:
    """Model label -> its card's threshold (the loaded predictor's; the paper's 0.8 when it cannot load)."""
    out = {}
    for e in entries:
        try:
            out[e.label] = float(predictor(e).threshold)
        except SmallCovidError:  # unloadable weights: reported where the model runs
            out[e.label] = PAPER_THRESHOLD
    return out


# ------------------------------------------------------------------ ground truth

def ground_truth(masks: list, scan_name: str, shape, volume: Volume | None, idx: int | None):
    """The uploaded ground truth matching the scan -> (mask, types or None, file name) or None."""
    if not masks:
        return None
    i = uploads.match_mask([m.name for m in masks], scan_name)
    if i is None:
        st.warning(uploads.unmatched_mask_message([m.name for m in masks], scan_name), icon=":material/warning:")
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

def predict(entries: list[ModelEntry], sl: Slice, scan_key: str, out_of_fold: bool = False) -> dict:
    """label -> ProbMaps for the slice, from the session cache or by running each model once.

    The display window plays no part: models see HU in their own input window. ``out_of_fold``:
    a fold ensemble runs only the members that did not train on an 8-bit slice.
    """
    cache = session_cache("prob_cache")
    out = {}
    for e in entries:
        oof = out_of_fold and e.source == "ensemble" and sl.units == "display"
        key = (scan_key, e.key, e.mtime) + (("out of fold",) if oof else ())
        if key in cache:
            cache.move_to_end(key)
        elif (ahead := prefetcher().take(key)) is not None:  # computed ahead while the previous slice was shown
            remember(cache, key, ahead, PROB_CACHE_ENTRIES)
        else:
            try:
                with st.spinner(f"Running {e.label}…"):
                    pred = held_out_predictor(predictor(e), sl.pixels)[0] if oof else predictor(e)
                    remember(cache, key, pred.predict_scan(sl), PROB_CACHE_ENTRIES)
            except SmallCovidError as exc:
                show_error(exc)
                continue
        out[e.label] = cache[key]
    return out


def prefetch_neighbours(entries: list[ModelEntry], scan: Volume, scan_key: str, idx: int) -> None:
    """Compute the next and previous slices' 2D results in the background, so that a step finds them ready."""
    jobs = prefetcher()
    for j in (idx + 1, idx - 1):
        if not 0 <= j < len(scan):
            continue
        sl, slice_id = scan.slice(j), f"{scan_key}:{j}"
        jobs.submit(("lungs", ("slice", slice_id)), lambda sl=sl: lungs_for(sl))
        for e in entries:
            key = (slice_id, e.key, e.mtime)
            if key in session_cache("prob_cache"):
                continue
            try:
                p = predictor(e)
            except SmallCovidError:
                continue
            jobs.submit(key, lambda p=p, sl=sl: p.predict_scan(sl))


# ------------------------------------------------------------------ page

def main() -> None:
    ensure_app_shell()
    st.title("Segment")
    st.caption("Lesion segmentation of one CT slice by every model, side by side. " + DISCLAIMER)
    scans, masks, source = source_inputs()
    entries = model_picker("models")
    out_of_fold = out_of_fold_choice(entries, "seg_oof")
    truth = truth_types = None
    truth_name = ""
    try:
        if source == "example":
            ph = example_phantom()
            scan, scan_key, stem = ph.scan, EXAMPLE, EXAMPLE
            truth, truth_types, truth_name = ph.mask, ph.types, "the phantom's true lesions"
            st.info(ph.description, icon=":material/science:")
            if scans:
                uploads_set_aside(len(scans))
        elif scans:
            choice = choose_scan(scans)
            digest, scan = load_scan(choice)
            scan_key, stem = digest, choice.stem
            if isinstance(scan, SeriesVolume):
                st.caption(series_caption(scan))
        else:
            st.info("Upload a CT slice, or press **Example** to try a synthetic phantom.")
            return
        # A segmented volume: the viewer steps through its slices and windows in the browser.
        stored = stored_volumes(entries, scan_key) if isinstance(scan, Volume) and len(scan) > 1 else {}
        if stored:
            idx = shown_slice(slice_key(scan_key), len(scan))
            sl = scan.slice(idx)
        else:
            sl, idx = choose_slice(scan, scan_key)
        if source != "example":
            warn_if_small(sl)
            if (blank := uploads.no_contrast_note(sl, scan.source, idx)) is not None:
                st.warning(blank, icon=":material/warning:")
                if idx is None:  # a lone blank image: nothing to segment (a blank slice of a volume: just say so)
                    return
        rewindowed = display_rewindowed(sl)
        window = volume_window(sl.units) if stored else window_picker(sl, rewindowed)
    except SmallCovidError as exc:
        show_upload_errors([] if source == "example" else scans, exc)  # every bad file, one line each
        return
    if source != "example":
        try:
            gt = ground_truth(masks, scan.source, sl.shape, scan if isinstance(scan, Volume) else None, idx)
        except SmallCovidError as exc:  # a bad mask: say so, still segment the scan
            show_error(exc)
            gt = None
        if gt is not None:
            truth, truth_types, truth_name = gt
    if not entries:
        return
    slice_id = f"{scan_key}:{idx}"
    if stored:  # the whole-volume maps of this slice: no model runs
        maps = {label: SliceMaps(v.levels[idx], v.kind_slice(idx)) for label, v in stored.items()}
    else:
        maps = predict(entries, sl, slice_id, out_of_fold)
    if not maps:
        return
    display = display_uint8(sl, window)
    cards = card_thresholds([e for e in entries if e.label in maps])
    default = default_threshold(list(cards.values()))
    view = view_state()
    thr = thresholds_for(view, default, cards)
    truth_row = None
    lungs = next(iter(stored.values())).lungs[idx] if stored else None
    if truth is not None and not stored:
        truth_row = quantities_frame({}, {}, sl, slice_id, truth, truth_types).iloc[0].to_dict()
    if stored:  # the volume's lung QC is shown with the whole-volume table
        try:
            gt_volume = truth_volume(masks, scan) if source != "example" else None
        except SmallCovidError:  # said under "Whole volume"
            gt_volume = None
        lung_qc = volume_lung_qc(scan_key, next(iter(stored.values())))
        draw_viewer(volume_viewer(scan, scan_key, slice_key(scan_key), idx, stored, cards, default, gt_volume,
                                  bool(lung_qc)))
    else:
        lung_qc = slice_lung_qc(sl, slice_id, isinstance(scan, Volume))
        if rewindowed:
            st.info(REWINDOW_NOTE, icon=":material/contrast:")
        if out_of_fold and sl.units == "display":
            ensembles = ", ".join(e.label for e in entries if e.source == "ensemble")
            st.caption(f"{ensembles}: out of fold, the fold models that did not train on this slice.")
        scored = {e.label: predictor(e) for e in entries if e.label in maps}
        if (in_sample := slice_in_sample_text(scored, sl.pixels, sl.units, out_of_fold)) is not None:
            st.warning(in_sample, icon=":material/school:")
        if (qc_text := qc_warning_text(lung_qc, "% of lung")) is not None:
            st.warning(qc_text, icon=":material/warning:")
        draw_viewer(viewer_payload(maps, display, cards, default, sl, slice_id, window, truth, truth_types,
                                   truth_name, truth_row, lung_qc))
    draw_cli_caption(thr, truth is not None)

    def table():  # built when the CSV is downloaded
        stats = quantities_frame(maps, thr, sl, slice_id, truth, truth_types, lungs=lungs)
        return results_table(maps, thr, truth, truth_types, stats)

    draw_downloads(maps, display, thr, view["opacity"], stem, scan_key, table, scan, sl, window, entries,
                   show_types=view["types"])
    if isinstance(scan, Volume) and len(scan) > 1:
        volume_section(scan, entries, thr, window, scan_key, stem, masks, idx, view["opacity"])
        if not stored:
            prefetch_neighbours([e for e in entries if e.label in maps], scan, scan_key, idx)

if __name__ == "__main__":
    main()
