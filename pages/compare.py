"""Compare page: every model on a labeled set (server folder or uploaded zip): Table 1 and plots.

The models run once per (data set, model); the threshold slider re-scores the
stored probability maps without running the networks again.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from pages._shared import (DISCLAIMER, admin_gate, admin_unlocked, check_upload, data_folder_input, ensure_app_shell,
                           model_picker, out_of_fold_choice, policy, predictor, session_scratch, show_error,
                           upload_limit_mb)
from smallcovid.app import analysis
from smallcovid.app import figures, viz
from smallcovid.app.cardview import cv_mean_std, protocol_threshold
from smallcovid.app.catalog import default_threshold, shipped_cards
from smallcovid.app.insample import in_sample_text
from smallcovid.data.dataset import LabeledSet, load_dataset
from smallcovid.data.fingerprint import in_sample_counts, model_fingerprints, slice_fingerprint
from smallcovid.core.errors import SmallCovidError
from smallcovid.core.vocab import TABLE_METRICS
from smallcovid.inference.evaluation import evaluate_maps, predict_set, threshold_sweep
from smallcovid.inference.outoffold import predict_out_of_fold
from smallcovid.io.labeled_zip import extract_labeled_zip, zip_paths
from smallcovid.app.policy import SERVER_PATHS_OFF
from smallcovid.inference.report import PAPER_TABLE1

GALLERY_SIZE = 4


def data_source() -> str | None:
    """Radio + folder text input or zip upload -> the labeled folder's path (None until given).

    In public mode server folders need the admin password, so the zip upload is the default.
    """
    modes = ["Folder on the server", "Upload a zip"]
    mode = st.radio("Labeled set", modes, horizontal=True, key="cmp_mode", index=0 if admin_unlocked() else 1)
    if mode == "Folder on the server":
        if not admin_gate(f"{SERVER_PATHS_OFF}; upload a zip of a labeled set instead", "cmp_admin"):
            return None
        path = data_folder_input("Folder (images/ + masks/ [+ classes/], or a MedSeg NIfTI folder)", "cmp_path")
        return path or None
    up = st.file_uploader("Zip of images/<stem>.png|jpg|tif and masks/<stem>.png (optional classes/)",
                          type=["zip"], key="cmp_zip", max_upload_size=upload_limit_mb())
    return None if up is None else extract_upload(up)


def extract_upload(up) -> str:
    """Extract a zip upload once into this session's private temporary folder; returns the data folder.

    Only the latest zip is kept (``<session scratch>/zip``); the folder goes when the session ends.
    ``cmp_zip_origin`` remembers where it went so that :func:`load_set` can name files by their
    path in the zip.
    """
    cache = st.session_state.setdefault("cmp_zip_dirs", {})
    scratch = session_scratch()
    if up.file_id not in cache or not Path(cache[up.file_id]).is_dir():
        cache.clear()
        check_upload(up)
        folder = scratch.fresh("zip") / "data"
        root = extract_labeled_zip(up.getvalue(), folder, name=up.name, max_bytes=policy().max_unpacked_bytes)
        cache[up.file_id] = str(root)
        st.session_state["cmp_zip_origin"] = {"root": str(root), "folder": str(folder), "name": up.name}
    return cache[up.file_id]


def load_set(path: str) -> tuple[LabeledSet, str]:
    """The labeled set at ``path`` and its name for the page.

    For an uploaded zip both the name and any error name the upload and paths inside it: the
    session's temporary folder is the server's business (and the app may be a public demo).
    """
    origin = st.session_state.get("cmp_zip_origin") or {}
    if origin.get("root") != path:
        data = load_dataset(path)
        return data, data.name
    with zip_paths(origin["folder"], origin["name"]):
        return load_dataset(path), origin["name"]


def run_models(path: str, entries, out_of_fold: bool = False) -> dict:
    """Load the set and run every model with a progress bar -> the stored comparison.

    With ``out_of_fold`` a fold ensemble scores each slice with the fold models that did not
    train on it (:func:`smallcovid.inference.outoffold.predict_out_of_fold`).
    """
    data, name = load_set(path)
    bar = st.progress(0.0, text="Starting…")
    maps, total = {}, len(entries) * len(data)
    in_sample = in_sample_counts([slice_fingerprint(s.image) for s in data.samples],
                                 {e.label: model_fingerprints(predictor(e)) for e in entries})
    for i, e in enumerate(entries):
        def report(done: int, n: int, i=i, label=e.label) -> None:
            bar.progress((i * n + done) / total, text=f"{label}: {done} of {n} images")
        if out_of_fold and e.source == "ensemble":
            oof, n_in = predict_out_of_fold(predictor(e), data, progress=report)
            maps[e.label] = [analysis.CompactMaps(m) for m in oof]
            in_sample[e.label] = n_in
        else:
            maps[e.label] = [analysis.CompactMaps(m) for m in predict_set(predictor(e), data, progress=report)]
    bar.empty()
    return {"key": comparison_key(path, entries, out_of_fold), "samples": data.samples, "maps": maps,
            "names": {e.label: e.name for e in entries}, "name": name, "sweeps": {},
            "in_sample": {label: n for label, n in in_sample.items() if n}}


def comparison_key(path: str | None, entries, out_of_fold: bool) -> tuple:
    """What a stored comparison was run on: the set, the models (and their weights' times), out of fold."""
    return path, tuple((e.key, e.mtime) for e in entries), out_of_fold and any(e.source == "ensemble" for e in entries)


def results_at(cmp: dict, thr: float) -> dict:
    """label -> EvalResult at ``thr`` (cheap: no network runs)."""
    out = {}
    for label, maps in cmp["maps"].items():
        r = evaluate_maps(maps, cmp["samples"], thr)
        r.extra["name"] = cmp["names"][label]
        out[label] = r
    return out


def table1(results: dict) -> pd.DataFrame:
    """Numeric Table 1 (one row per model)."""
    return pd.DataFrame(analysis.table1_rows(results, PAPER_TABLE1)).set_index("model")


TITLES = {"dice": "Dice", "precision": "Precision", "recall": "Recall", "iou": "IoU"}  # sentence case, one style


def table1_display(df: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Table 1 for reading, in two parts that each fit a 1400 px window without scrolling.

    Returns (main, more): main = n, ``mean ± std`` of Dice / Precision / Recall / IoU and the
    paper's Dice / Precision / Recall; more = the pooled figures and the per-type Dice.
    Headers in sentence case ("Pooled Dice", "Paper precision", "Ground-glass Dice").
    """
    main = pd.DataFrame(index=df.index)
    main["n"] = df["n"]
    for k, title in TITLES.items():
        main[title] = [analysis.format_mean_std(m, s) for m, s in zip(df[k], df[f"{k} ±"])]
    more = pd.DataFrame(index=df.index)
    for k, title in TITLES.items():
        more[f"Pooled {title if k in ('dice', 'iou') else title.lower()}"] = df[f"pooled {k}"].map("{:.3f}".format)
    for c in df.columns:
        if c.endswith(" Dice"):
            more[c[:1].upper() + c[1:]] = df[c].map(lambda v: "" if pd.isna(v) else f"{v:.3f}")
        elif c.startswith("paper "):
            k = c.removeprefix("paper ")
            main[f"Paper {TITLES[k] if k == 'dice' else k}"] = df[c].map(lambda v: "—" if pd.isna(v) else f"{v:.3f}")
    return main, more


def draw_results(cmp: dict, thr: float) -> None:
    results = results_at(cmp, thr)
    st.subheader(f"Table 1 — {len(cmp['samples'])} images, threshold {thr:.2f}")
    if cmp["key"][2]:
        st.caption("Fold ensembles out of fold: each slice scored by the fold models that did not train on it.")
    if (in_sample := in_sample_text(cmp.get("in_sample") or {}, len(cmp["samples"]))) is not None:
        st.warning(in_sample, icon=":material/school:")
    df = table1(results)
    main, more = table1_display(df)
    st.dataframe(main, width="stretch")
    st.caption("Mean ± std over images. The paper's numbers are on its own 10-slice test split, so they are "
               "context, not a like-for-like comparison.")
    st.dataframe(more, width="stretch")
    st.caption(f"Pooled = counts summed over all images first; per-type Dice over the images that contain the type. "
               f"{analysis.EMPTY_MASK_NOTE}")
    st.download_button("Table 1 as CSV", df.to_csv().encode(), "table1.csv", "text/csv", key="cmp_csv")
    stems = [s.stem for s in cmp["samples"]]
    per_image = {label: r.per_image["dice"] for label, r in results.items()}
    left, right = st.columns(2)
    with left:
        st.markdown("**Dice per image**")
        st.plotly_chart(figures.dice_box_figure(per_image, stems), key="cmp_box")
    with right:
        st.markdown("**Threshold sweep**")
        for label, maps in cmp["maps"].items():
            if label not in cmp["sweeps"]:
                cmp["sweeps"][label] = threshold_sweep(maps, cmp["samples"])
        st.plotly_chart(figures.sweep_figure(cmp["sweeps"], current=thr), key="cmp_sweep")
    draw_gallery(cmp, results, thr)


def draw_gallery(cmp: dict, results: dict, thr: float) -> None:
    """The images whose Dice differs most across models: truth, then each model's overlay."""
    if len(results) < 2:
        return
    st.subheader("Where the models differ most")
    per_image = {label: r.per_image["dice"] for label, r in results.items()}
    for i in analysis.most_disagreed(per_image, GALLERY_SIZE):
        s = cmp["samples"][i]
        display = np.rint(s.image * 255).astype(np.uint8)
        cols = st.columns(len(results) + 1)
        cols[0].image(viz.overlay(display, mask=s.mask, opacity=0.45), caption=f"{s.stem}: ground truth", width="stretch")
        for col, (label, maps) in zip(cols[1:], cmp["maps"].items()):
            col.image(viz.overlay(display, mask=maps[i].mask(thr), truth=s.mask),
                      caption=f"{label}: Dice {per_image[label][i]:.3f}", width="stretch")


def shipped_cv() -> None:
    """Each shipped model's cross-validation results from its model card."""
    st.subheader("Shipped models: cross-validation results (from the model cards)")
    rows = []
    for name, card in shipped_cards().items():
        if card is None:
            continue
        ms, fixed, thr = cv_mean_std(card, "tuned"), cv_mean_std(card), protocol_threshold(card)
        cv = card.get("cv") or {}
        row = {"model": name, "folds": str(cv.get("folds", "—")), "threshold": str(cv.get("recommended_threshold", "—"))}
        for k in TABLE_METRICS:
            row[TITLES[k]] = analysis.format_mean_std(*ms[k]) if k in ms else "—"
        row[f"Dice at {thr:g}" if thr is not None else "Dice at 0.8"] = (
            analysis.format_mean_std(*fixed["dice"]) if "dice" in fixed else "—")
        rows.append(row)
    if rows:
        st.table(pd.DataFrame(rows).set_index("model"))
        st.caption("Each fold at its threshold chosen on out-of-fold predictions (raw probabilities; the app "
                   "applies the card's calibrated threshold). The last column is the paper's protocol, a fixed "
                   "threshold: models whose probabilities are seldom that high score near 0 there.")
    else:
        st.info("No shipped model cards yet (weights/<model>.json): the shipped weights are not in place.")


def main() -> None:
    ensure_app_shell()
    st.title("Compare")
    st.caption("All models on a labeled set: the paper's Table 1, per-image Dice, a threshold sweep. " + DISCLAIMER)
    try:
        path = data_source()
    except SmallCovidError as exc:
        show_error(exc)
        path = None
    entries = model_picker("cmp_models")
    thr = st.slider("Threshold", 0.01, 0.99, default_threshold(entries), 0.01, key="cmp_thr",
                    help="A pixel is lesion when the model's probability is at least this. Starts at the median of "
                         "the selected models' card thresholds (calibrated probabilities are comparable across "
                         "models); the paper used 0.8.")
    out_of_fold = out_of_fold_choice(entries, "cmp_oof")
    if st.button("Run comparison", type="primary", disabled=not (path and entries), key="cmp_run"):
        try:
            st.session_state["cmp"] = run_models(path, entries, out_of_fold)
        except SmallCovidError as exc:
            show_error(exc)
    cmp = st.session_state.get("cmp")
    if cmp is not None:
        if cmp["key"] != comparison_key(path, entries, out_of_fold):
            st.caption(f"Showing the last comparison ({cmp['name']}); press Run comparison to update it.")
        draw_results(cmp, thr)
    shipped_cv()


if __name__ == "__main__":
    main()
