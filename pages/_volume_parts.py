"""Whole-volume parts of the Segment page: "Segment all slices", volumes, the per-slice chart, reports.

Widgets only; the work is in :mod:`smallcovid.app.volume_report` (chart, HTML report) and
:mod:`smallcovid.inference` (segmentation, quantities). Per-user state lives in
``st.session_state``: whole-volume results and reports. Scan choice and slice navigation
are in ``_scan_parts``.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import streamlit as st

from pages._scan_parts import jump_to_selected, slice_key
from pages._segment_parts import remember, session_cache, volume_store
from pages._shared import check_upload, predictor, show_error
from smallcovid.app import uploads
from smallcovid.app import html_report as hr
from smallcovid.app import volume_report as vr
from smallcovid.app.catalog import ModelEntry
from smallcovid.app.admission import volume_slot
from smallcovid.core.errors import InputFileError, SmallCovidError
from smallcovid.data.preprocess import Window, display_uint8
from smallcovid.inference.qc import lung_qc
from smallcovid.inference.quantify import spacing_xyz, volume_dice, volume_report
from smallcovid.inference.volume import segment_volume
from smallcovid.io import Volume, nifti_mask_data, read_label_volume


# ------------------------------------------------------------------ whole volume

def _vkey(scan_key: str, e: ModelEntry) -> tuple:
    return (scan_key, e.key, e.mtime)


def stored_volumes(entries: list[ModelEntry], scan_key: str) -> dict:
    """Model label -> stored whole-volume result of ``scan_key``, when every one of ``entries`` has one."""
    store = volume_store()
    if not entries or any(_vkey(scan_key, e) not in store for e in entries):
        return {}
    return {e.label: store.get(_vkey(scan_key, e)) for e in entries}


def volume_lung_qc(scan_key: str, stored) -> list[dict]:
    """Lung QC of a segmented volume's lungs (one lung mask for all its models)."""
    cache = session_cache("volume_qc")
    if scan_key not in cache:
        remember(cache, scan_key, lung_qc(stored.lungs.full(), stored.spacing), 4)
    return cache[scan_key]


def dropped_notice(scan_key: str) -> None:
    """Say which scans' whole-volume results the memory cap dropped (once), and if this scan's were."""
    store = volume_store()
    for name in store.just_dropped:
        st.warning(store.drop_message(name), icon=":material/memory:")
    shown = set(store.just_dropped)
    store.just_dropped.clear()
    if scan_key in store.dropped and store.dropped[scan_key] not in shown:
        st.info(store.drop_message(store.dropped[scan_key]), icon=":material/memory:")


def run_volumes(entries: list[ModelEntry], scan: Volume, scan_key: str) -> None:
    """Segment every slice with each of ``entries`` (one progress bar); results go to the session's store."""
    store = volume_store()
    bar = st.progress(0.0, text=f"Segmenting {len(scan)} slices…")

    def waiting(ahead: int) -> None:
        bar.progress(0.0, text=f"Waiting for {ahead} other whole-volume job{'s' if ahead != 1 else ''} to finish "
                               "(one at a time keeps the server's memory bounded)…")

    with volume_slot(waiting):
        packed = store.lungs(scan_key)  # found once, shared
        lungs = None if packed is None else packed.full()
        for i, e in enumerate(entries):
            def progress(done: int, n: int, i=i, label=e.label) -> None:
                bar.progress((i + done / n) / len(entries), text=f"{label}: segmented {done} of {n} slices")

            try:
                result = segment_volume(predictor(e), scan, progress=progress, lungs=lungs)
                lungs = result.lungs
                store.put(_vkey(scan_key, e), result, scan_name=scan.source)
                del result
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
    cache = volume_store()
    dropped_notice(scan_key)
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
    results = {e.label: _Lazy(cache[_vkey(scan_key, e)]) for e in done}
    reports = {}
    for e in done:  # one model's full arrays at a time (each unpacks to three (D, H, W) arrays)
        reports[e.label] = _report(e, results[e.label], thr[e.label], scan_key, scan)
        results[e.label].release()
    try:
        gt = truth_volume(masks, scan)
    except SmallCovidError as exc:
        show_error(exc)
        gt = None
    dices = {}
    if gt is not None:
        for e in done:
            dices[e.label] = _dice(e, results[e.label], thr[e.label], scan_key, gt)
            results[e.label].release()
    draw_volume_table(reports, dices, gt, results, scan, scan_key)
    draw_slice_chart(reports, slice_key(scan_key), idx, len(scan))
    draw_volume_downloads(done, results, reports, dices, thr, scan, window, stem, opacity)


class _Lazy:
    """A stored volume that unpacks its full :class:`~smallcovid.inference.volume.VolumeResult` when first used."""

    def __init__(self, stored) -> None:
        self.stored, self._result = stored, None

    def _full(self):
        if self._result is None:
            self._result = self.stored.result()
        return self._result

    def release(self) -> None:
        """Forget the unpacked arrays (the packed ones stay in the store)."""
        self._result = None

    def __getattr__(self, name):  # report, classes, mask, threshold, levels, kind…
        return getattr(self._full(), name)


def draw_volume_table(reports: dict, dices: dict, gt, results: dict, scan: Volume, scan_key: str) -> None:
    rows = [vr.volume_row(k, rep, dices.get(k)) for k, rep in reports.items()]
    if gt is not None:
        cache = session_cache("volume_reports")
        key = ("ground truth", scan_key, gt[1])
        if key not in cache:
            lungs = next(iter(results.values())).stored.lungs.full()
            remember(cache, key, volume_report(gt[0], lungs, spacing_xyz(scan.spacing), "ground truth", 0.0), 8)
        rows.append(vr.volume_row("ground truth", cache[key]))
    df = pd.DataFrame(rows).set_index("model")
    qc = next((vr.report_qc(r) for r in reports.values() if vr.report_qc(r)), [])  # one lung mask for all
    if (text := vr.qc_warning_text(qc)) is not None:
        st.warning(text, icon=":material/warning:")
    st.table(df.style.format(vr.column_formats(df.columns, vr.unreliable_columns(df.columns, qc)), na_rep="—"))
    unit = "mL" if scan.spacing is not None else "voxels (this file records no voxel size)"
    note = (f"Volumes in {unit}. Lesion volume counts every lesion voxel; % of lung counts lesion inside the "
            "automatic lung mask (right and left as the patient's). Slices are numbered from 0 like the slider.")
    if gt is not None:
        note += f" Volume Dice against {gt[1]}."
    st.caption(note)


def draw_slice_chart(reports: dict, slider_key: str, idx: int, n: int) -> None:
    st.plotly_chart(vr.slice_area_figure(reports, idx), key="slice_chart", selection_mode="points",
                    on_select=lambda: jump_to_selected("slice_chart", slider_key, n))
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
    images = hr.overlays_for(keys, lambda k: display_uint8(scan.slice(k), window), result.classes(t), opacity)
    return hr.html_report(rep, model=entry.label, weights_sha256=_sha256(entry), threshold=t, scan_name=scan.source,
                          images=images, dice=dice)
