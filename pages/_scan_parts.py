"""Scan parts of the Segment page: scan choice (single files, DICOM series), slice navigation, 2D quantities.

Widgets only; the work is in :mod:`smallcovid.io.series` (DICOM series) and
:mod:`smallcovid.app.volume_report` (lungs, rows). Per-user state lives in
``st.session_state``: decoded scans and lung masks.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import pandas as pd
import streamlit as st

from pages._segment_parts import SLICE_GOTO_KEY, SLICE_POS_KEY, prefetcher, remember, session_cache, volume_store
from pages._shared import check_upload
from smallcovid.app import uploads
from smallcovid.app.admission import decode_slot
from smallcovid.app import volume_report as vr
from smallcovid.app.analysis import lesion_stats
from smallcovid.core.errors import SmallCovidError
from smallcovid.inference.framing import lungs_for
from smallcovid.io import Slice, Volume, read_scan
from smallcovid.io import validate
from smallcovid.io.series import read_series, series_descriptions
from smallcovid.io.seriesnames import common_description, series_stem, unique_stem

SCAN_KEYS_KEPT = 16  # uploads -> content hash (the decoded scans live in the capped store)
SHORTCUTS = ("J", "K")  # previous / next slice (arrow keys already move a focused slider)


# ------------------------------------------------------------------ scan choice

@dataclass(frozen=True)
class ScanChoice:
    """One scan the user can pick: a single uploaded file, or the files of one DICOM series."""

    label: str
    files: tuple  # UploadedFile objects
    series_uid: str | None = None
    stem: str = ""


def _dicom_key(upload) -> tuple[str, str] | None:
    """(SeriesInstanceUID, SeriesDescription) of a DICOM upload; None for other files (and DICOM files
    that fail: read alone)."""
    check_upload(upload)
    data = upload.getvalue()
    if validate.sniff(data) != "dicom":
        return None
    try:
        return next(iter(series_descriptions([(upload.name, data)]).items()), None)
    except SmallCovidError:
        return None  # reading it alone gives the one-sentence error


def scan_choices(scans: list) -> list[ScanChoice]:
    """Uploads -> scans: DICOM files of one series together (never mixed), every other file on its own."""
    key = tuple(u.file_id for u in scans)
    cache = session_cache("series_keys")
    if key not in cache:
        remember(cache, key, [_dicom_key(u) for u in scans], 2)
    keys = cache[key]
    uids = [k[0] if k is not None else None for k in keys]
    groups: dict[str, list] = {}
    descriptions: dict[str, list[str]] = {}
    for u, k in zip(scans, keys):
        if k is not None:
            groups.setdefault(k[0], []).append(u)
            descriptions.setdefault(k[0], []).append(k[1])
    out: list[ScanChoice] = []
    stems: set[str] = set()
    done: set[str] = set()
    for u, uid in zip(scans, uids):
        if uid is None or len(groups[uid]) == 1:
            out.append(ScanChoice(u.name, (u,), None, uploads.stem(u.name)))
        elif uid not in done:
            done.add(uid)
            stem = unique_stem(series_stem(uid, description=common_description(descriptions[uid])), stems)
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
    """Decode a scan -> (content hash, scan); raises SmallCovidError.

    The decoded scan is kept in the session's store (:func:`volume_store`), counted with the
    uploaded bytes against the per-session cap; when the cap dropped it, it is decoded again.
    """
    cache = session_cache("scan_cache")  # upload file ids -> content hash, or the error
    key = tuple(u.file_id for u in choice.files)
    known = cache.get(key)
    if isinstance(known, SmallCovidError):
        raise known
    store = volume_store()
    scan = store.held(known) if known is not None else None
    if scan is None:
        try:
            for u in choice.files:
                check_upload(u)  # the size cap (lower in public mode), before reading the bytes
            with decode_slot(sum(int(u.size) for u in choice.files)):  # one large decode at a time
                if choice.series_uid is None:
                    data = choice.files[0].getvalue()
                    digest, scan = hashlib.sha256(data).hexdigest()[:16], read_scan(data, name=choice.files[0].name)
                else:
                    files = [(u.name, u.getvalue()) for u in choice.files]
                    digest = hashlib.sha256(b"".join(sorted(hashlib.sha256(d).digest() for _, d in files))).hexdigest()[:16]
                    scan = read_series(files, name=choice.stem)
                data = files = None  # the upload's bytes stay with the uploader, not twice
        except SmallCovidError as exc:
            error = SmallCovidError(str(exc))  # the message only: no traceback holding the upload
            remember(cache, key, error, SCAN_KEYS_KEPT)
            raise error from None
        array = scan.voxels if isinstance(scan, Volume) else scan.pixels
        store.hold(digest, scan, int(array.nbytes) + sum(int(u.size) for u in choice.files), scan_name=scan.source)
        remember(cache, key, digest, SCAN_KEYS_KEPT)
        known = digest
    cache.move_to_end(key)
    return known, scan


# ------------------------------------------------------------------ slice navigation

def _remember_slice(key: str, idx: int, goto: bool = False) -> None:
    """Keep the shown slice outside the widget (it survives page changes); ``goto``: the viewer must follow."""
    state = st.session_state
    if SLICE_POS_KEY not in state:
        state[SLICE_POS_KEY] = {}
    state[SLICE_POS_KEY][key] = int(idx)
    if goto:
        if SLICE_GOTO_KEY not in state:
            state[SLICE_GOTO_KEY] = {}
        state[SLICE_GOTO_KEY][key] = state[SLICE_GOTO_KEY].get(key, 0) + 1


def _step(key: str, delta: int, n: int) -> None:
    st.session_state[key] = int(min(max(st.session_state.get(key, n // 2) + delta, 0), n - 1))
    _remember_slice(key, st.session_state[key])


def jump_to_selected(chart_key: str, slice_key: str, n: int) -> None:
    """Chart click callback: move the slice slider (and a volume viewer) to the clicked slice."""
    state = st.session_state.get(chart_key)
    k = vr.selected_slice(getattr(state, "selection", None) if state is not None else None)
    if k is not None:
        st.session_state[slice_key] = int(min(max(k, 0), n - 1))
        _remember_slice(slice_key, st.session_state[slice_key], goto=True)


def shown_slice(key: str, n: int) -> int:
    """The slice last shown for the slider ``key`` (the middle one at first), within 0 .. n - 1."""
    k = (st.session_state.get(SLICE_POS_KEY) or {}).get(key, n // 2)
    return int(k) if 0 <= k < n else n // 2


def slice_navigator(n: int, key: str) -> int:
    """Slice slider with "◀ previous" / "next ▶" buttons (keys J / K) -> the slice index."""
    if key not in st.session_state:  # back from another page: the slice shown before
        st.session_state[key] = shown_slice(key, n)
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
    _remember_slice(key, int(idx))
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
        ahead = prefetcher().take(("lungs", key))  # computed ahead for a neighbouring slice
        remember(cache, key, ahead if ahead is not None else compute(), 4)
    cache.move_to_end(key)
    return cache[key]


def slice_lung_qc(sl: Slice, slice_key: str, in_volume: bool) -> list[dict]:
    """Lung QC findings of the slice's lungs (:func:`smallcovid.app.volume_report.slice_qc`)."""
    lungs = _lungs(("slice", slice_key), lambda: lungs_for(sl))
    return vr.slice_qc(lungs, sl.spacing, in_volume=in_volume)


def quantities_frame(maps: dict, thr: dict, sl: Slice, slice_key: str, truth=None, truth_types=None,
                     lungs: np.ndarray | None = None) -> pd.DataFrame:
    """Lesion quantities of the slice per model (+ ground truth): mm² (or px), % of lung, separate lesions.

    ``lungs``: the slice's (H, W) lung labels when known (a segmented volume's), else found for the slice.
    """
    if lungs is None:
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
