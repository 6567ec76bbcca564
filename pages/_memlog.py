"""``SMALLCOVID_MEMLOG=path``: sample what each session keeps (a hosting diagnostic).

The walking and sizing is :mod:`smallcovid.app.memlog`; this module only reaches into the
running Streamlit server for the sessions' state, the uploaded files it holds and its media
files. Those are Streamlit internals (checked with Streamlit 1.67): when they move, the
sampler logs the error and the app goes on.
"""

from __future__ import annotations

import os
import threading

from smallcovid.app import memlog


def _runtime():
    from streamlit.runtime import Runtime

    return Runtime.instance()


def _sessions() -> dict:
    out = {}
    for info in _runtime()._session_mgr.list_sessions():
        state = info.session.session_state
        try:
            out[info.session.id[:8]] = list(state.filtered_state.items())
        except Exception:  # the script thread changed the state meanwhile: next sample
            continue
    return out


def _extra() -> dict:
    rt = _runtime()
    files = getattr(rt.uploaded_file_mgr, "file_storage", {})
    uploaded = sum(len(rec.data) for per in list(files.values()) for rec in list(per.values()))
    storage = getattr(getattr(rt, "media_file_mgr", None), "_storage", None)
    media = sum(len(getattr(f, "content", b"")) for f in list(getattr(storage, "_files_by_id", {}).values()))
    return {"streamlit_uploads": uploaded, "streamlit_media": media}


_LOCK = threading.Lock()
_THREADS: list = []  # the process's one sampler, once started


def start_if_asked() -> None:
    """Start the process's sampler once, when ``SMALLCOVID_MEMLOG`` names a file."""
    path = os.environ.get(memlog.ENV, "").strip()
    with _LOCK:
        if path and not _THREADS:
            _THREADS.append(memlog.start_sampler(path, _sessions, _extra))
