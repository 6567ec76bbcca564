"""Segment page inputs: the scan and mask uploaders and the Example button.

Uploads are kept in the session (as the bytes Streamlit already holds, no second copy), so
that they survive a change of page; the example sets them aside without dropping them.
"""

from __future__ import annotations

import streamlit as st

from pages._shared import upload_limit_mb
from smallcovid.app.uploads import KeptUpload


def source_inputs() -> tuple[list, list, str]:
    """Upload widgets and the Example button -> (scan uploads, mask uploads, source)."""
    st.session_state.setdefault("source", "upload")
    limit = upload_limit_mb()  # public mode: the uploaders say (and check) the policy's lower limit
    left, right = st.columns([3, 2])
    scans = left.file_uploader(
        "CT slice(s): PNG, JPEG, TIFF, DICOM or NIfTI (.nii / .nii.gz); the .dcm files of a series load as one volume", accept_multiple_files=True,
        key="scan_files", on_change=_uploads_changed, args=("scan_files",), max_upload_size=limit)
    masks = right.file_uploader(
        "Ground-truth mask(s), optional: PNG 0/255 with the image's stem, or NIfTI labels for a volume",
        accept_multiple_files=True, key="mask_files", on_change=_uploads_changed, args=("mask_files",),
        max_upload_size=limit)
    left.button("Example", key="example", help="A synthetic CT-like phantom with ground-glass and consolidation lesions",
                on_click=lambda: st.session_state.update(source="example"))
    scans, masks = _kept("scan_files", scans), _kept("mask_files", masks)
    if scans and not st.session_state.get("scan_files"):
        left.caption(f"Showing {', '.join(u.name for u in scans[:3])}{' …' if len(scans) > 3 else ''}, "
                     "uploaded before you changed page; upload other files to replace it.")
    return scans, masks, st.session_state["source"]


def _uploads_changed(key: str) -> None:
    """An uploader changed: a new scan replaces the example; a cleared uploader forgets its kept files."""
    if key == "scan_files":
        st.session_state["source"] = "upload"
    if not st.session_state.get(key):
        st.session_state.pop(f"{key}_kept", None)


def _record_bytes(upload) -> bytes | None:
    """The bytes Streamlit's upload manager holds for ``upload`` (the same object, no copy), or
    None when it cannot say (the runtime's layout changed, a test harness without one)."""
    try:
        from streamlit.runtime import Runtime
        from streamlit.runtime.scriptrunner import get_script_run_ctx

        recs = Runtime.instance().uploaded_file_mgr.get_files(get_script_run_ctx().session_id, [upload.file_id])
        data = recs[0].data if len(recs) == 1 else None
        return data if isinstance(data, bytes) and len(data) == upload.size else None
    except Exception:  # noqa: BLE001  (an optimisation only: the upload's own copy is kept instead)
        return None


def _kept(key: str, files) -> list[KeptUpload]:
    """The uploader's files, kept in the session so that they survive a change of page (Streamlit
    drops a widget's value when its page is left); the kept ones while the uploader shows none.

    Kept as :class:`~smallcovid.app.uploads.KeptUpload` holding the bytes of Streamlit's own
    record of the upload: the ``UploadedFile`` a script gets holds a private copy of them, so
    keeping it kept a second copy of every upload per session (81 MB for a 300-slice volume)."""
    kept = st.session_state.get(f"{key}_kept") or []
    if files and [k.file_id for k in kept] != [u.file_id for u in files]:
        kept = st.session_state[f"{key}_kept"] = [KeptUpload.of(u, _record_bytes(u)) for u in files]
    return list(kept)


def uploads_set_aside(n: int) -> None:
    """Under the example: the uploads are still there, unused, and one click brings them back."""
    what = "Your uploaded scan is" if n == 1 else f"Your {n} uploaded files are"
    left, right = st.columns([4, 1], vertical_alignment="center")
    left.caption(f"{what} set aside while the example is shown.")
    right.button("Back to my upload", key="back_to_upload", on_click=lambda: st.session_state.update(source="upload"))
