"""Volume parts of the Segment page: scan choice (DICOM series), slice navigation, 2D quantities, whole volume.

Widgets only; the work is in :mod:`smallcovid.io.series` (DICOM series),
:mod:`smallcovid.app.volume_report` (lungs, rows, chart, HTML report) and
:mod:`smallcovid.inference` (segmentation, quantities). Per-user state lives in
``st.session_state``: decoded scans, lung masks, whole-volume results and reports.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass

import numpy as np
import pandas as pd
import streamlit as st

from pages._segment_parts import remember, session_cache
from pages._shared import check_upload, predictor, show_error
from smallcovid.app import uploads
from smallcovid.app import volume_report as vr
from smallcovid.app.analysis import lesion_stats
from smallcovid.app.catalog import ModelEntry
from smallcovid.core.errors import InputFileError, SmallCovidError
from smallcovid.data.preprocess import Window, display_uint8
from smallcovid.inference.framing import lungs_for
from smallcovid.inference.quantify import spacing_xyz, volume_dice, volume_report
from smallcovid.inference.volume import segment_volume
from smallcovid.io import Slice, Volume, nifti_mask_data, read_label_volume, read_scan
from smallcovid.io import validate
from smallcovid.io.series import group_series, read_series, series_stem, unique_stem

SCAN_CACHE_ENTRIES = 2  # decoded scans kept per session (a 512x512x300 volume is 300 MB)
SHORTCUTS = ("J", "K")  # previous / next slice (arrow keys already move a focused slider)


# ------------------------------------------------------------------ scan choice

@dataclass(frozen=True)
class ScanChoice:
    """One scan the user can pick: a single uploaded file, or the files of one DICOM series."""

    label: str
    files: tuple  # UploadedFile objects
    series_uid: str | None = None
    stem: str = ""


def _dicom_uid(upload) -> str | None:
    """The SeriesInstanceUID of a DICOM upload; None for other files (and DICOM files that fail: read alone)."""
    check_upload(upload)
    data = upload.getvalue()
    if validate.sniff(data) != "dicom":
        return None
    try:
        return next(iter(group_series([(upload.name, data)])))
    except SmallCovidError:
        return None  # reading it alone gives the one-sentence error


def scan_choices(scans: list) -> list[ScanChoice]:
    """Uploads -> scans: DICOM files of one series together (never mixed), every other file on its own."""
    key = tuple(u.file_id for u in scans)
    cache = session_cache("series_groups")
    if key not in cache:
        uids = [_dicom_uid(u) for u in scans]
        remember(cache, key, uids, 2)
    uids = cache[key]
    groups: dict[str, list] = {}
    for u, uid in zip(scans, uids):
        if uid is not None:
            groups.setdefault(uid, []).append(u)
    out: list[ScanChoice] = []
    stems: set[str] = set()
    done: set[str] = set()
    for u, uid in zip(scans, uids):
        if uid is None or len(groups[uid]) == 1:
            out.append(ScanChoice(u.name, (u,), None, uploads.stem(u.name)))
        elif uid not in done:
            done.add(uid)
            stem = unique_stem(series_stem(uid), stems)
            stems.add(stem)
            out.append(ScanChoice(f"{stem}: DICOM series, {len(groups[uid])} files", tuple(groups[uid]), uid, stem))
    return out


def choose_scan(scans: list) -> ScanChoice:
    """Selectbox over the scans of the upload (files and DICOM series) -> the chosen one."""
    choices = scan_choices(scans)
    if len(choices) == 1:
        return choices[0]
    names = [f"{i + 1}. {c.label}" for i, c in enumerate(choices)]
    pick = st.selectbox("Scan", names, key="scan_pick")
    return choices[names.index(pick)]


def load_scan(choice: ScanChoice) -> tuple[str, Slice | Volume]:
    """Decode a scan once per session -> (content hash, scan); raises SmallCovidError."""
    cache = session_cache("scan_cache")
    key = tuple(u.file_id for u in choice.files)
    if key not in cache:
        try:
            for u in choice.files:
                check_upload(u)  # the size cap (lower in public mode), before reading the bytes
            if choice.series_uid is None:
                data = choice.files[0].getvalue()
                value = (hashlib.sha256(data).hexdigest()[:16], read_scan(data, name=choice.files[0].name))
            else:
                files = [(u.name, u.getvalue()) for u in choice.files]
                digest = hashlib.sha256(b"".join(sorted(hashlib.sha256(d).digest() for _, d in files)))
                value = (digest.hexdigest()[:16], read_series(files, name=choice.stem))
        except SmallCovidError as exc:
            value = SmallCovidError(str(exc))  # the message only: no traceback holding the upload
        remember(cache, key, value, SCAN_CACHE_ENTRIES)
    value = cache[key]
    cache.move_to_end(key)
    if isinstance(value, SmallCovidError):
        raise value
    return value


# ------------------------------------------------------------------ slice navigation

def _step(key: str, delta: int, n: int) -> None:
    st.session_state[key] = int(min(max(st.session_state.get(key, n // 2) + delta, 0), n - 1))


def _jump(chart_key: str, slice_key: str, n: int) -> None:
    """Chart click callback: move the slice slider to the clicked slice."""
    state = st.session_state.get(chart_key)
    k = vr.selected_slice(getattr(state, "selection", None) if state is not None else None)
    if k is not None:
        st.session_state[slice_key] = int(min(max(k, 0), n - 1))


def slice_navigator(n: int, key: str) -> int:
    """Slice slider with "◀ previous" / "next ▶" buttons (keys J / K) -> the slice index."""
    st.session_state.setdefault(key, n // 2)
    if not 0 <= st.session_state[key] < n:
        st.session_state[key] = n // 2
    now = int(st.session_state[key])
    prev, mid, nxt = st.columns([1, 6, 1], vertical_alignment="bottom")
    prev.button("◀ previous", key=f"{key}-prev", shortcut=SHORTCUTS[0], on_click=_step, args=(key, -1, n),
                disabled=now <= 0, help=f"Previous slice (key {SHORTCUTS[0]})")
    nxt.button("next ▶", key=f"{key}-next", shortcut=SHORTCUTS[1], on_click=_step, args=(key, 1, n),
               disabled=now >= n - 1, help=f"Next slice (key {SHORTCUTS[1]})")
    idx = mid.slider(f"Slice (of {n})", 0, n - 1, key=key,
                     help="Arrow keys move the slider once it has focus; J / K step from anywhere on the page.")
    return int(idx)


def slice_key(scan_key: str) -> str:
    """Session-state key of a volume's slice slider."""
    return f"slice-{scan_key}"


def choose_slice(scan: Slice | Volume, digest: str) -> tuple[Slice, int | None]:
    """For a volume, slice navigation -> (slice, index); a 2D scan is returned as is."""
    if isinstance(scan, Volume):
        n = len(scan)
        idx = slice_navigator(n, slice_key(digest)) if n > 1 else 0
        return scan.slice(idx), idx
    return scan, None


# ------------------------------------------------------------------ 2D quantities

def _lungs(key, compute) -> np.ndarray:
    cache = session_cache("lung_cache")
    if key not in cache:
        remember(cache, key, compute(), 4)
    cache.move_to_end(key)
    return cache[key]


def quantities_frame(maps: dict, thr: dict, sl: Slice, slice_key: str, truth=None, truth_types=None) -> pd.DataFrame:
    """Lesion quantities of the slice per model (+ ground truth): mm² (or px), % of lung, separate lesions."""
    lungs = _lungs(("slice", slice_key), lambda: lungs_for(sl))
    rows = []
    for label, m in maps.items():
        mask = m.mask(thr[label])
        rows.append(vr.slice_row(label, m.type_map(thr[label]), lungs, sl.spacing,
                                 n_lesions=lesion_stats(mask).n_lesions, seconds=m.seconds))
    if truth is not None:
        classes = truth_types if truth_types is not None else np.asarray(truth, np.uint8)
        rows.append(vr.slice_row("ground truth", classes, lungs, sl.spacing, types_known=truth_types is not None,
                                 n_lesions=lesion_stats(truth).n_lesions))
    return pd.DataFrame(rows).set_index("model")


# ------------------------------------------------------------------ whole volume

def _vkey(scan_key: str, e: ModelEntry) -> tuple:
    return (scan_key, e.key, e.mtime)


def run_volumes(entries: list[ModelEntry], scan: Volume, scan_key: str) -> None:
    """Segment every slice with each of ``entries`` (one progress bar); results go to the session."""
    cache = session_cache("volume_results")
    for k in [k for k in cache if k[0] != scan_key]:
        del cache[k]  # one scan's results at a time
    bar = st.progress(0.0, text=f"Segmenting {len(scan)} slices…")
    lungs = next((r.lungs for k, r in cache.items() if k[0] == scan_key), None)  # found once, shared
    for i, e in enumerate(entries):
        def progress(done: int, n: int, i=i, label=e.label) -> None:
            bar.progress((i + done / n) / len(entries), text=f"{label}: segmented {done} of {n} slices")

        try:
            result = segment_volume(predictor(e), scan, progress=progress, lungs=lungs)
            lungs = result.lungs
            remember(cache, _vkey(scan_key, e), result, 8)
        except SmallCovidError as exc:
            show_error(exc)
    bar.empty()


def _report(e: ModelEntry, result, t: float, scan_key: str, scan: Volume) -> dict:
    cache = session_cache("volume_reports")
    key = (_vkey(scan_key, e), float(t))
    if key not in cache:
        remember(cache, key, result.report(float(t), e.label, {"scan": scan.source, "slices_total": len(scan)}), 8)
    return cache[key]


def _dice(e: ModelEntry, result, t: float, scan_key: str, gt: tuple) -> float:
    cache = session_cache("volume_dice")
    key = (_vkey(scan_key, e), float(t), gt[1])
    if key not in cache:
        remember(cache, key, volume_dice(result.classes(float(t)) > 0, gt[0] > 0), 8)
    return cache[key]


def truth_volume(masks: list, scan: Volume) -> tuple[np.ndarray, str] | None:
    """The uploaded NIfTI label volume for ``scan`` -> ((D, H, W) uint8 0/1/2, name), else None."""
    i = uploads.match_mask([m.name for m in masks], scan.source) if masks else None
    if i is None or not masks[i].name.lower().endswith((".nii", ".nii.gz")):
        return None
    upload = masks[i]
    cache = session_cache("truth_volume_cache")
    key = (upload.file_id, scan.voxels.shape)
    if key not in cache:
        check_upload(upload)
        labels = read_label_volume(upload.getvalue(), upload.name)
        if labels.shape != scan.voxels.shape:
            raise InputFileError(upload.name, f"has shape {labels.shape} (slices, rows, columns) but the volume "
                                              f"has {scan.voxels.shape}")
        remember(cache, key, np.minimum(labels, 2).astype(np.uint8), 1)
    return cache[key], upload.name


def volume_section(scan: Volume, entries: list[ModelEntry], thr: dict, window: Window | None, scan_key: str,
                   stem: str, masks: list, idx: int, opacity: float) -> None:
    """"Segment all slices", then per-model volumes, the per-slice chart, volume Dice and downloads."""
    st.subheader("Whole volume")
    entries = [e for e in entries if e.label in thr]  # models that ran on this slice
    cache = session_cache("volume_results")
    missing = [e for e in entries if _vkey(scan_key, e) not in cache]
    if missing:
        names = ", ".join(e.label for e in missing)
        if st.button(f"Segment all {len(scan)} slices", key="volume_run", type="primary",
                     help=f"Runs {names} on every slice: lesion and lung volumes, a per-slice chart and downloads."):
            run_volumes(missing, scan, scan_key)
            st.rerun()
    done = [e for e in entries if _vkey(scan_key, e) in cache]
    if not done:
        st.caption(f"Lesion volumes in mL, lung involvement and NIfTI masks need every slice segmented "
                   f"({len(scan)} slices per model).")
        return
    results = {e.label: cache[_vkey(scan_key, e)] for e in done}
    reports = {e.label: _report(e, results[e.label], thr[e.label], scan_key, scan) for e in done}
    try:
        gt = truth_volume(masks, scan)
    except SmallCovidError as exc:
        show_error(exc)
        gt = None
    dices = {} if gt is None else {e.label: _dice(e, results[e.label], thr[e.label], scan_key, gt) for e in done}
    draw_volume_table(reports, dices, gt, results, scan, scan_key)
    draw_slice_chart(reports, slice_key(scan_key), idx, len(scan))
    draw_volume_downloads(done, results, reports, dices, thr, scan, window, stem, opacity)


def draw_volume_table(reports: dict, dices: dict, gt, results: dict, scan: Volume, scan_key: str) -> None:
    rows = [vr.volume_row(k, rep, dices.get(k)) for k, rep in reports.items()]
    if gt is not None:
        cache = session_cache("volume_reports")
        key = ("ground truth", scan_key, gt[1])
        if key not in cache:
            lungs = next(iter(results.values())).lungs
            remember(cache, key, volume_report(gt[0], lungs, spacing_xyz(scan.spacing), "ground truth", 0.0), 8)
        rows.append(vr.volume_row("ground truth", cache[key]))
    df = pd.DataFrame(rows).set_index("model")
    st.table(df.style.format(vr.column_formats(df.columns), na_rep="—"))
    unit = "mL" if scan.spacing is not None else "voxels (this file records no voxel size)"
    note = (f"Volumes in {unit}. Lesion volume counts every lesion voxel; % of lung counts lesion inside the "
            "automatic lung mask (right and left as the patient's). Slices are numbered from 0 like the slider.")
    if gt is not None:
        note += f" Volume Dice against {gt[1]}."
    st.caption(note)


def draw_slice_chart(reports: dict, slider_key: str, idx: int, n: int) -> None:
    st.plotly_chart(vr.slice_area_figure(reports, idx), key="slice_chart", selection_mode="points",
                    on_select=lambda: _jump("slice_chart", slider_key, n))
    st.caption("Lesion area per slice: click a point to show that slice.")


def draw_volume_downloads(done: list[ModelEntry], results: dict, reports: dict, dices: dict, thr: dict,
                          scan: Volume, window: Window | None, stem: str, opacity: float) -> None:
    labels = [e.label for e in done]
    label = st.selectbox("Model for the downloads", labels, key="volume_model") if len(labels) > 1 else labels[0]
    entry = next(e for e in done if e.label == label)
    result, rep, t = results[label], reports[label], float(thr[label])
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{stem}_{label}")
    c = st.columns(5)
    c[0].download_button("Lesion types NIfTI", lambda: nifti_mask_data(result.classes(t), scan),
                         f"{safe}_types.nii.gz", "application/gzip", key="dl_vol_types",
                         help="0 background, 1 ground-glass, 2 consolidation, in the input's geometry")
    c[1].download_button("Mask NIfTI", lambda: nifti_mask_data(result.classes(t) > 0, scan),
                         f"{safe}_mask.nii.gz", "application/gzip", key="dl_vol_mask", help="0/1 lesion mask")
    c[2].download_button("Lung mask NIfTI", lambda: nifti_mask_data(result.lungs, scan),
                         f"{safe}_lungs.nii.gz", "application/gzip", key="dl_vol_lungs",
                         help="0 outside, 1 right lung, 2 left lung")
    c[3].download_button("Report JSON", lambda: json_report(entry, rep, dices.get(label)), f"{safe}_report.json",
                         "application/json", key="dl_vol_json")
    c[4].download_button("Report HTML", lambda: html_report(entry, result, rep, dices.get(label), t, scan, window,
                                                            opacity).encode(),
                         f"{safe}_report.html", "text/html", key="dl_vol_html")


def _sha256(entry: ModelEntry) -> str | None:
    try:
        return predictor(entry).card.get("sha256")
    except SmallCovidError:
        return None


def json_report(entry: ModelEntry, rep: dict, dice: float | None) -> bytes:
    """The volume report as JSON, with the weights' sha256 and (with labels) the volume Dice."""
    extra = {"weights_sha256": _sha256(entry), **({} if dice is None else {"volume_dice": float(dice)})}
    return json.dumps({**rep, **extra}, indent=1).encode()


def html_report(entry: ModelEntry, result, rep: dict, dice: float | None, t: float, scan: Volume,
                window: Window | None, opacity: float) -> str:
    """The one-page HTML report of one model (key slices in the display window)."""
    keys = vr.key_slices(rep)
    images = vr.overlays_for(keys, lambda k: display_uint8(scan.slice(k), window), result.classes(t), opacity)
    return vr.html_report(rep, model=entry.label, weights_sha256=_sha256(entry), threshold=t, scan_name=scan.source,
                          images=images, dice=dice)
