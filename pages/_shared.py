"""Helpers shared by the pages: cached model loading, the model picker, device and messages.

Not a page itself (``app.py`` lists the pages). Only widgets and caching live here;
all computation is in the ``smallcovid`` package.
"""

from __future__ import annotations

import os

import streamlit as st

from smallcovid.app import uploads
from smallcovid.app.catalog import TTA_LABELS, ModelEntry, available_models, ensemble_entries, with_tta
from smallcovid.core.errors import SmallCovidError
from smallcovid.core.fsutil import SessionScratch
from smallcovid.core.vocab import METRIC_TITLES
from smallcovid.data.dataset import NO_DATA_DIR, default_data_dir
from smallcovid.app.policy import Policy, load_policy
from pages._shell import ensure_app_shell  # noqa: F401  (the pages import it from here)

DISCLAIMER = "Research use only — not a medical device. Do not use for diagnosis or treatment."


@st.cache_resource(max_entries=16, show_spinner="Loading model…")
def _load(name: str, weights: str, mtime: float, device: str):
    """One eval-mode predictor per (name, weights file, its mtime, device), shared by all sessions."""
    from smallcovid.inference.predictor import load_predictor

    return load_predictor(name, weights=weights, device=device)


@st.cache_resource(max_entries=8, show_spinner="Loading fold models…")
def _load_folds(name: str, folder: str, mtime: float, device: str):
    """One eval-mode fold ensemble per (name, shipped folds folder, newest fold's mtime, device);
    ``folder`` and ``mtime`` only key the cache, so replaced fold models are reloaded."""
    from smallcovid.inference.ensemble import load_ensemble

    return load_ensemble(name, device=device)


def predictor(entry: ModelEntry):
    """The cached predictor for a catalog entry: a :class:`smallcovid.inference.predictor.Predictor`,
    or an :class:`smallcovid.inference.ensemble.EnsemblePredictor` for a fold-ensemble entry."""
    if entry.source == "ensemble":
        shared = _load_folds(entry.name, str(entry.weights), entry.mtime, device_name())
    else:
        shared = _load(entry.name, str(entry.weights), entry.mtime, device_name())
    # A per-call copy for another test-time augmentation: the cached predictor stays as loaded.
    return shared if entry.tta is None else shared.with_tta(entry.tta)


@st.cache_resource
def device_name() -> str:
    """``cuda`` when a GPU is available, else ``cpu`` (:func:`smallcovid.core.devices.resolve_device`)."""
    from smallcovid.core.devices import resolve_device

    return resolve_device("auto").type


def device_label() -> str:
    """Human description of the device models run on, for the sidebar ("CPU (2 threads)").

    Friendlier than :func:`smallcovid.core.devices.describe_device`, which writes the
    technical form that goes into summaries and model cards.
    """
    import torch

    if device_name() == "cuda":
        return f"CUDA GPU ({torch.cuda.get_device_name(0)})"
    n = torch.get_num_threads()
    return f"CPU ({n} thread{'s' if n != 1 else ''})"


def _secrets() -> dict:
    """``st.secrets`` as a dict; empty when there is no secrets.toml (or it cannot be parsed)."""
    try:
        return st.secrets.to_dict()
    except Exception:  # FileNotFoundError / StreamlitSecretNotFoundError / a TOML error: no secrets
        return {}


def data_folder_input(label: str, key: str) -> str:
    """Text input for a labeled data folder on the server, prefilled with the configured default.

    The default is ``SMALLCOVID_DATA_DIR`` or ``data_dir`` in the secrets
    (:func:`smallcovid.data.dataset.default_data_dir`); with neither set the field starts
    empty and a caption says how to set one. Returns the stripped text ("" when empty).
    """
    default = default_data_dir(os.environ, _secrets())
    value = st.text_input(label, value="" if default is None else str(default), key=key)
    if default is None and not value.strip():
        st.caption(f"{NO_DATA_DIR} (or data_dir in .streamlit/secrets.toml).")
    return value.strip()


def policy() -> Policy:
    """The hosting policy (public mode, upload cap, admin password) from env and secrets."""
    return load_policy(os.environ, _secrets())


def admin_unlocked() -> bool:
    """Training and server paths allowed: outside public mode, or after the admin password in this session."""
    pol = policy()
    return pol.admin_allowed(bool(st.session_state.get("_admin_unlocked")))


def admin_gate(blocked: str, key: str) -> bool:
    """True when the admin features may show; else an info message (and a password box when one is set)."""
    if admin_unlocked():
        return True
    pol = policy()
    if not pol.can_unlock:
        st.info(f"{blocked}.", icon=":material/lock:")
        return False
    st.info(f"{blocked}; enter the admin password to unlock it.", icon=":material/lock:")
    entered = st.text_input("Admin password", type="password", key=key)
    if entered:
        if pol.password_ok(entered):
            st.session_state["_admin_unlocked"] = True
            st.rerun()
        st.error("That password is not correct.")
    return False


@st.cache_resource
def _sweep_once() -> int:
    """Once per server process: remove day-old scratch folders a crashed server left behind."""
    return SessionScratch.sweep()


def session_scratch() -> SessionScratch:
    """This session's private temporary folder (deleted when the session ends; see SessionScratch)."""
    _sweep_once()
    scratch = st.session_state.get("_scratch")
    if scratch is None or not scratch.alive:
        scratch = st.session_state["_scratch"] = SessionScratch()
    return scratch


def public_notice() -> None:
    """In public mode, a sidebar caption telling visitors what the demo does with their files."""
    pol = policy()
    if pol.public:
        st.caption(f"Public demo: uploads up to {pol.max_upload_bytes / 2**20:.3g} MB per file, kept in memory (a Compare zip "
                   "in a private temporary folder) and deleted when you leave; training and server folders are off.")


def upload_limit_mb() -> int | None:
    """The uploaders' per-file limit in MB (``st.file_uploader(max_upload_size=...)``): always None,
    the server's ``server.maxUploadSize``.

    The policy's lower public cap is checked by the app (:func:`check_upload`), not by the
    uploader: a file the uploader refuses never reaches the app, so the visitor would see
    only a red mark on it, whereas the app's check says in one sentence which file, how big
    and the limit. (The uploader's check runs in the browser, so it never protected the
    server anyway.)
    """
    return None


def check_upload(upload) -> None:
    """Refuse an upload over the policy's size cap before reading it (raises InputFileError:
    ``big.nii.gz: is 60 MB; this public demo accepts uploads of at most 50 MB``)."""
    policy().check_upload(upload.name, int(upload.size))


def _carry_selection(key: str, swap: dict[str, str]) -> None:
    """Toggle callback: keep the chosen models chosen when they switch to or from their fold ensembles."""
    if key not in st.session_state:
        return
    mapping = swap if st.session_state[f"{key}_folds"] else {v: k for k, v in swap.items()}
    st.session_state[key] = [mapping.get(label, label) for label in st.session_state[key]]


def model_picker(key: str, label: str = "Models") -> list[ModelEntry]:
    """Multiselect of the available models (all selected by default); returns the chosen entries.

    In public mode, models installed from training jobs are hidden unless the admin unlocked them.
    """
    entries = available_models()
    if not admin_unlocked():
        entries = [e for e in entries if e.source == "shipped"]
    if not entries:
        st.info("No trained weights are available yet: the shipped weights (weights/<model>.safetensors) "
                "are not in place" + ("." if policy().public else
                                      " and no training job has been installed. Train one on the Train page."))
        return []
    folds = ensemble_entries()
    if folds:
        # Label of a shipped model <-> label of its fold ensemble, to carry the selection over.
        swap = {e.label: folds[e.name].label for e in entries if e.source == "shipped" and e.name in folds}
        if st.toggle("Fold ensembles", key=f"{key}_folds", on_change=_carry_selection, args=(key, swap),
                     help=f"Average the cross-validation fold models instead of the single final model "
                          f"(available for: {', '.join(folds)}). Slower: one forward pass per fold model."):
            entries = [folds.get(e.name, e) if e.source == "shipped" else e for e in entries]
    by_label = {e.label: e for e in entries}
    # The default only seeds a new widget: passing it when the selection is already in the
    # session (or was carried over by the toggle) makes Streamlit warn about two sources.
    default = None if key in st.session_state else list(by_label)
    chosen = st.multiselect(label, list(by_label), default=default, key=key)
    mode = st.selectbox("Test-time augmentation", list(TTA_LABELS), format_func=TTA_LABELS.get, key=f"{key}_tta",
                        help="Average each model's maps over mirrored and turned copies of the slice, the "
                             "orientations it trained on. Slower: one forward pass per view. The Models page "
                             "gives each card's cross-validated figures; by default each model runs as its card says.")
    return [with_tta(by_label[c], mode) for c in chosen]


def out_of_fold_choice(entries: list[ModelEntry], key: str) -> bool:
    """The "Out of fold" checkbox, shown when a fold ensemble is selected; its value."""
    if not any(e.source == "ensemble" for e in entries):
        return False
    return st.checkbox("Out of fold", key=key,
                       help="Fold ensembles score each slice with the fold models that did not train on it (on "
                            "the training slices: the one whose validation fold held it), as cross-validation "
                            "does; slices no fold model trained on get the whole ensemble.")


def cv_table(rows: list[dict]):
    """A styled per-fold CV table (rows from :func:`smallcovid.app.cardview.cv_table_rows`) for st.table."""
    import pandas as pd

    df = pd.DataFrame(rows).set_index("fold").rename(columns=METRIC_TITLES)
    fmt = {c: "{:.3f}" for c in df.columns}
    fmt.update({"best epoch": "{:.0f}", "threshold": "{:.2f}"})
    return df.style.format({k: v for k, v in fmt.items() if k in df.columns}, na_rep="—")


def show_error(exc: SmallCovidError) -> None:
    """One sentence, no traceback."""
    st.error(uploads.first_line(exc))


UPLOAD_ERRORS_KEPT = 64  # files whose read verdict a session remembers


def show_upload_errors(files: list, exc: SmallCovidError) -> None:
    """``exc`` (the chosen upload's error) and, when several files were uploaded, every other file's
    one-sentence error too, one line each, in upload order, in one error box.

    Each file is checked once per session (size cap, then decoding); only the verdicts are kept.
    """
    if len(files) < 2:
        show_error(exc)
        return
    verdicts = st.session_state.setdefault("_upload_verdicts", {})
    lines = []
    for u in files:
        if u.file_id not in verdicts:
            try:
                check_upload(u)
                verdicts[u.file_id] = uploads.scan_error(u.getvalue(), u.name)
            except SmallCovidError as err:
                verdicts[u.file_id] = uploads.first_line(err)
            while len(verdicts) > UPLOAD_ERRORS_KEPT:
                verdicts.pop(next(iter(verdicts)))
        if verdicts[u.file_id] and verdicts[u.file_id] not in lines:
            lines.append(verdicts[u.file_id])
    first = uploads.first_line(exc)
    if first not in lines:
        lines.insert(0, first)
    st.error(uploads.markdown_lines(lines))
