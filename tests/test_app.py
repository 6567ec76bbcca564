"""Every page of the Streamlit app through ``streamlit.testing.v1.AppTest``.

The app runs on tiny weights (see ``apphelpers.make_tiny_weights``) and a fresh jobs
folder per test; the tests assert on the values shown (Dice equals
:mod:`smallcovid.inference.metrics` on the same maps, overlay counts, job rows), not only on
"no exception".
"""

from __future__ import annotations

import gzip
import io
import json
import os
import shutil
import time
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from streamlit.testing.v1 import AppTest

import viewerhelpers as vh
from apphelpers import blob_slice, fake_cv, finished_job, make_labeled_folder, png_bytes
from test_labeled_zip import missing_mask_zip
from smallcovid.app import analysis
from smallcovid.app import uploads
from smallcovid.data.dataset import load_dataset
from smallcovid.inference.evaluation import evaluate_maps, predict_set
from smallcovid.inference.predictor import load_predictor
from smallcovid.io import read_scan
from smallcovid.training.jobs import JobStore, _alive
from smallcovid.inference.metrics import dice
from smallcovid.models import list_models
from smallcovid.data.phantom import make_example, make_phantom
from smallcovid.data.preprocess import WINDOW_PRESETS
from smallcovid.inference.report import PAPER_TABLE1

torch.set_num_threads(1)  # a long training may share these cores
APP = str(Path(__file__).resolve().parent.parent / "app.py")
MODELS = list_models()


def new_app() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    return at.run()


def segment_app() -> AppTest:
    at = new_app()
    assert not at.exception, [e.value for e in at.exception]
    return at


def overlay_captions(at: AppTest) -> list[str]:
    """The panels of the in-browser viewer (scan, one per model, disagreement)."""
    return vh.panel_captions(at)


def image_captions(at: AppTest) -> list[str]:
    return [c for img in at.get("image") for c in img.captions]


def metrics_df(at: AppTest):
    """The per-model metrics the viewer shows (from its payload), as a frame indexed by model."""
    import pandas as pd

    rows = vh.rows(at)
    assert rows and "dice" in next(iter(rows.values())), "no metrics shown"
    df = pd.DataFrame(rows.values()).set_index("model")
    return df.rename(columns={"dice": "Dice", "iou": "IoU", "dice1": "ground-glass Dice",
                              "dice2": "consolidation Dice"})


def predict(name: str, scan, window=None):
    return load_predictor(name, device="cpu").predict_scan(scan, window)


# ------------------------------------------------------------------ app shell

def test_sidebar_shows_device_and_disclaimer(app_env):
    at = segment_app()
    assert any("Research use only — not a medical device" in w.value for w in at.sidebar.warning)
    assert any("CPU" in c.value or "CUDA" in c.value for c in at.sidebar.caption)
    assert "Upload a CT slice" in at.info[0].value
    assert at.multiselect(key="models").value == MODELS  # all shipped models selected by default


# ------------------------------------------------------------------ Segment

def test_fold_ensemble_toggle_swaps_in_the_shipped_fold_models(app_env, tiny_weights, tmp_path, monkeypatch):
    weights = tmp_path / "weights"
    shutil.copytree(tiny_weights, weights)
    monkeypatch.setenv("SMALLCOVID_WEIGHTS_DIR", str(weights))
    at = segment_app()
    assert not [t for t in at.toggle if t.key == "models_folds"]  # no fold models shipped: no toggle
    folds = weights / "smallcovid-net-folds"
    folds.mkdir()
    for k in (1, 2):  # two identical members: the ensemble's maps equal the single model's
        shutil.copy(weights / "smallcovid-net.safetensors", folds / f"fold_{k}.safetensors")
        shutil.copy(weights / "smallcovid-net.json", folds / f"fold_{k}.json")
    at = segment_app()
    at.button(key="example").click().run()
    single = metrics_df(at).loc["smallcovid-net", "Dice"]
    at.toggle(key="models_folds").set_value(True).run()
    assert not at.exception and not at.error
    assert overlay_captions(at)[1:-1] == ["smallcovid-net ×2"] + MODELS[1:]
    assert metrics_df(at).loc["smallcovid-net ×2", "Dice"] == pytest.approx(single, abs=1e-6)
    assert any(k[1] == "smallcovid-net:folds" for k in at.session_state["prob_cache"])
    at.toggle(key="models_folds").set_value(False).run()
    assert overlay_captions(at)[1:-1] == MODELS  # back to the single models, still all chosen


def test_test_time_augmentation_choice_reruns_the_models_under_it(app_env):
    at = segment_app()
    at.button(key="example").click().run()
    plain = metrics_df(at)
    assert at.selectbox(key="models_tta").value is None  # each card's own (here: one pass)
    at.selectbox(key="models_tta").set_value("d4").run()
    assert not at.exception and not at.error
    labels = [f"{n} · 8 views" for n in MODELS]
    assert overlay_captions(at)[1:-1] == labels
    assert at.multiselect(key="models").value == MODELS  # the choice of models is kept
    ph = make_example()
    df = metrics_df(at)
    for n, label in zip(MODELS, labels):
        pred = load_predictor(n).with_tta("d4")
        assert df.loc[label, "Dice"] == pytest.approx(dice(pred.predict_scan(ph.scan).mask(0.5), ph.mask), abs=1e-12)
    assert any(k[1] == "smallcovid-net@tta=d4" for k in at.session_state["prob_cache"])
    assert not np.allclose(df["Dice"].to_numpy(), plain["Dice"].to_numpy())
    at.selectbox(key="models_tta").set_value(None).run()
    assert overlay_captions(at)[1:-1] == MODELS


def test_example_gives_overlays_and_metrics_that_follow_the_threshold(app_env):
    at = segment_app()
    at.button(key="example").click().run()
    assert not at.exception and not at.error
    assert any("synthetic" in i.value.lower() for i in at.info)
    captions = overlay_captions(at)
    assert len(captions) == 1 + len(MODELS) + 1  # scan, one overlay per model, disagreement
    assert captions[1:-1] == MODELS and captions[-1].startswith("disagreement")
    data = vh.viewer_data(at)
    assert data["default_threshold"] == 0.5  # the median of the (tiny) cards' thresholds, not a fixed 0.8
    assert data["view"]["threshold"] is None and vh.thresholds(at) == {n: 0.5 for n in MODELS}

    ph = make_example()
    maps = {n: predict(n, ph.scan, WINDOW_PRESETS["lung"]) for n in MODELS}
    df = metrics_df(at)
    for n in MODELS:
        assert df.loc[n, "Dice"] == pytest.approx(dice(maps[n].mask(0.5), ph.mask), abs=1e-12)
    cache = at.session_state["prob_cache"]
    cached = {k: id(v) for k, v in cache.items()}
    assert len(cached) == len(MODELS)
    payload = id(next(iter(at.session_state["viewer_cache"].values())))

    vh.set_view(at, threshold=0.45)  # what the viewer sends once the slider settles
    assert not at.exception and not at.error
    df2 = metrics_df(at)
    for n in MODELS:
        assert df2.loc[n, "Dice"] == pytest.approx(dice(maps[n].mask(0.45), ph.mask), abs=1e-12)
        row = analysis.metric_row(maps[n].mask(0.45), ph.mask)
        assert df2.loc[n, "recall"] == pytest.approx(row["recall"]) and df2.loc[n, "IoU"] == pytest.approx(row["iou"])
    assert not np.allclose(df["Dice"], df2["Dice"])
    # A settled slider re-thresholds nothing on the server: same maps, same payload (the browser recoloured).
    assert {k: id(v) for k, v in at.session_state["prob_cache"].items()} == cached
    assert id(next(iter(at.session_state["viewer_cache"].values()))) == payload
    assert any("evaluate --model all --data DIR --threshold 0.45`" in c.value for c in at.caption)

    r = vh.rows(at)["smallcovid-net"]
    m = maps["smallcovid-net"].mask(0.45)
    assert r["area"] == m.sum()
    assert r["lesion area (mm²)"] == pytest.approx(m.sum() * ph.scan.spacing[0] ** 2, abs=0.006)
    truth_row = data["quantities"]["truth_row"]
    assert truth_row["lesion area (mm²)"] == pytest.approx(ph.mask.sum() * ph.scan.spacing[0] ** 2, abs=0.006)
    assert truth_row["separate lesions"] == analysis.lesion_stats(ph.mask).n_lesions
    vh.set_view(at, cards=True)  # each card says 0.5
    assert any("evaluate --model all --data DIR --threshold 0.5`" in c.value for c in at.caption)
    for n in MODELS:
        assert metrics_df(at).loc[n, "Dice"] == pytest.approx(dice(maps[n].mask(0.5), ph.mask), abs=1e-12)
    labels = [d.label for d in at.get("download_button")]
    assert {"Mask PNG", "Overlay PNG", "Metrics CSV"} <= set(labels)


def test_metrics_csv_has_each_models_threshold(app_env):
    """The Metrics CSV names the threshold every row was computed at (card thresholds differ per model)."""
    import pandas as pd

    from pages._segment_parts import results_table

    ph = make_phantom(96, seed=1)
    maps = {n: predict(n, ph.scan) for n in MODELS[:2]}
    thr = {MODELS[0]: 0.3, MODELS[1]: 0.55}
    stats = pd.DataFrame([{"model": n, "lesion area (mm²)": 1.0, "ground-glass (px)": None if n == "ground truth" else 168}
                          for n in [*maps, "ground truth"]]).set_index("model")
    table = results_table(maps, thr, ph.mask, ph.types, stats)
    assert list(table.index) == [*maps, "ground truth"]  # the viewer's order, not sorted by name
    assert ",168\n" in table.to_csv() and "168.0" not in table.to_csv()  # pixel counts stay integers
    assert list(table.columns[:2]) == ["threshold", "Dice"]
    assert table.loc[MODELS[0], "threshold"] == 0.3 and table.loc[MODELS[1], "threshold"] == 0.55
    assert np.isnan(table.loc["ground truth", "threshold"])
    assert table.loc[MODELS[1], "Dice"] == pytest.approx(dice(maps[MODELS[1]].mask(0.55), ph.mask))
    assert table.to_csv().splitlines()[0].startswith("model,threshold,Dice")


def test_uploaded_slice_and_mask_give_matching_dice(app_env):
    img, mask = blob_slice(96, seed=7)
    at = segment_app()
    at.file_uploader(key="scan_files").set_value(("case_7.png", png_bytes(img), "image/png"))
    at.file_uploader(key="mask_files").set_value(("case_7.png", png_bytes(mask), "image/png")).run()
    vh.set_view(at, threshold=0.5)
    assert not at.exception and not at.error
    assert len(overlay_captions(at)) == len(MODELS) + 2
    scan, truth = read_scan(png_bytes(img), "case_7.png"), mask > 0
    df = metrics_df(at)
    for n in MODELS:
        assert df.loc[n, "Dice"] == pytest.approx(dice(predict(n, scan).mask(0.5), truth), abs=1e-12)
        assert df.loc[n, "precision"] == pytest.approx(analysis.metric_row(predict(n, scan).mask(0.5), truth)["precision"])
    # Only two models: two overlays plus the disagreement panel.
    at.multiselect(key="models").set_value(["smallcovid-net", "segnet"]).run()
    assert overlay_captions(at)[1:] == ["smallcovid-net", "segnet", "disagreement: lesion votes per pixel"]
    assert list(metrics_df(at).index) == ["smallcovid-net", "segnet"]


def test_corrupt_upload_shows_one_sentence_and_the_app_keeps_working(app_env):
    at = segment_app()
    at.file_uploader(key="scan_files").set_value(("broken_scan.png", b"\x89PNG\r\n\x1a\n garbage", "image/png")).run()
    assert not at.exception
    assert len(at.error) == 1
    msg = at.error[0].value
    assert msg.startswith("broken_scan.png: ") and "\n" not in msg and "Traceback" not in msg
    img, _ = blob_slice(64)
    at.file_uploader(key="scan_files").set_value(("good.png", png_bytes(img), "image/png")).run()
    assert not at.exception and not at.error
    assert len(overlay_captions(at)) == len(MODELS) + 2


def test_mask_of_the_wrong_size_is_named(app_env):
    img, _ = blob_slice(64)
    _, other = blob_slice(48)
    at = segment_app()
    at.file_uploader(key="scan_files").set_value(("a.png", png_bytes(img), "image/png"))
    at.file_uploader(key="mask_files").set_value(("a_mask.png", png_bytes(other), "image/png")).run()
    assert not at.exception
    assert at.error and at.error[0].value.startswith("a_mask.png: ") and "48x48" in at.error[0].value
    assert len(overlay_captions(at)) == len(MODELS) + 2  # the scan is still segmented, without metrics
    assert vh.viewer_data(at)["truth"] is None


def test_a_mask_of_another_name_is_not_used(app_env):
    """A single mask whose name does not match the scan's is refused with a warning, not applied."""
    img, mask = blob_slice(64, seed=2)
    at = segment_app()
    at.file_uploader(key="scan_files").set_value(("patient_a.png", png_bytes(img), "image/png"))
    at.file_uploader(key="mask_files").set_value(("patient_b.png", png_bytes(mask), "image/png")).run()
    assert not at.exception and not at.error
    warnings = [w.value for w in at.warning]
    assert any("patient_b.png is not named like the scan patient_a.png" in w and "patient_a.png or "
               "patient_a_mask.png" in w for w in warnings), warnings
    assert vh.viewer_data(at)["truth"] is None and len(overlay_captions(at)) == len(MODELS) + 2
    at.file_uploader(key="mask_files").set_value(("patient_a_mask.png", png_bytes(mask), "image/png")).run()
    assert not any("is not named like" in w.value for w in at.warning)  # (a disc image may fail lung QC)
    assert vh.viewer_data(at)["truth"]["name"] == "patient_a_mask.png"


def test_nifti_volume_gets_a_slice_slider_and_window_presets(app_env):
    ph = make_phantom(64, seed=1)
    vol = np.stack([ph.scan.pixels + 10 * k for k in range(5)], axis=-1).astype(np.int16)
    img = nib.Nifti1Image(vol, np.diag([0.7, 0.7, 2.5, 1.0]))
    labels = nib.Nifti1Image(np.stack([ph.types] * 5, axis=-1), np.diag([0.7, 0.7, 2.5, 1.0]))
    at = segment_app()
    at.file_uploader(key="scan_files").set_value(("chest.nii.gz", img.to_bytes(), "application/gzip"))
    at.file_uploader(key="mask_files").set_value(("chest_labels.nii", labels.to_bytes(), "application/octet-stream"))
    at.run()
    assert not at.exception and not at.error
    slider = [s for s in at.slider if s.label.startswith("Slice")][0]
    assert slider.value == 2 and slider.max == 4
    assert at.radio(key="window").value == "lung"
    scan = read_scan(img.to_bytes(), "chest.nii.gz")
    df = metrics_df(at)
    t = vh.thresholds(at)["smallcovid-net"]  # the cards' default (0.5 for the tiny cards)
    expected = dice(predict("smallcovid-net", scan.slice(2), WINDOW_PRESETS["lung"]).mask(t), ph.mask)
    assert df.loc["smallcovid-net", "Dice"] == pytest.approx(expected, abs=1e-12)
    assert "ground-glass Dice" in df.columns  # the NIfTI labels carry lesion types

    n_cached = len(at.session_state["prob_cache"])
    at.radio(key="window").set_value("mediastinum").run()
    assert len(at.session_state["prob_cache"]) == n_cached  # the window is for display only: no new model run
    at.radio(key="window").set_value("custom").run()
    assert at.number_input(key="win_w").value == 1500 and at.number_input(key="win_l").value == -600
    slider = [s for s in at.slider if s.label.startswith("Slice")][0]
    slider.set_value(4).run()
    assert not at.exception and not at.error
    assert any(b.label.startswith("Segment all 5 slices") for b in at.button)


def test_dicom_upload_offers_window_presets(app_env):
    from pydicom.data import get_testdata_file

    data = Path(get_testdata_file("CT_small.dcm")).read_bytes()
    at = segment_app()
    at.file_uploader(key="scan_files").set_value(("CT_small.dcm", data, "application/dicom")).run()
    assert not at.exception and not at.error
    radio = at.radio(key="window")
    assert radio.value == "lung" and len(radio.options) == 3 and radio.options[0].startswith("lung (W 1500 / L -600)")
    assert len(overlay_captions(at)) == len(MODELS) + 2
    row = next(iter(vh.rows(at).values()))
    assert "lesion area (mm²)" in row and "% of lung" in row  # DICOM pixel spacing is known


def test_no_weights_means_a_clear_message(app_env, tmp_path, monkeypatch):
    monkeypatch.setenv("SMALLCOVID_WEIGHTS_DIR", str(tmp_path / "empty"))
    at = segment_app()
    at.button(key="example").click().run()
    assert not at.exception
    assert any("No trained weights are available yet" in i.value for i in at.info)
    at.switch_page("pages/models.py").run()
    assert not at.exception
    assert sum("Weights not shipped yet" in i.value for i in at.info) == len(MODELS)


# ------------------------------------------------------------------ Compare

def test_compare_folder_table_matches_evaluation(app_env, tmp_path):
    folder = make_labeled_folder(tmp_path / "set", n=4, size=48)
    at = new_app().switch_page("pages/compare.py").run()
    assert not at.exception
    # Rerun after typing: the Run button is enabled only once the folder exists (without
    # ../shared the default path is absent and the button starts disabled).
    at.text_input(key="cmp_path").set_value(str(folder)).run()
    at.multiselect(key="cmp_models").set_value(["smallcovid-net", "segnet"])
    at.slider(key="cmp_thr").set_value(0.5)
    at.button(key="cmp_run").click().run()
    assert not at.exception and not at.error
    table, more = at.dataframe[0].value, at.dataframe[1].value
    data = load_dataset(folder)
    for n in ("smallcovid-net", "segnet"):
        r = evaluate_maps(predict_set(load_predictor(n, device="cpu"), data), data.samples, 0.5)
        assert table.loc[n, "Dice"] == analysis.format_mean_std(r.summary.mean["dice"], r.summary.std["dice"])
        assert table.loc[n, "Paper Dice"] == f"{PAPER_TABLE1[n][0]:.3f}"
        assert float(more.loc[n, "Pooled recall"]) == pytest.approx(r.summary.pooled["recall"], abs=5e-4)
    # One capitalisation style in the headers (sentence case; Dice and IoU are names).
    for col in [*table.columns, *more.columns]:
        assert col == "n" or col[0].isupper(), col
    assert "Precision" in table.columns and "Pooled Dice" in more.columns and "pooled dice" not in more.columns
    assert len(at.get("plotly_chart")) == 2  # box/strip plot and threshold sweep
    gallery = image_captions(at)
    assert len(gallery) == 4 * 3 and gallery[0].endswith("ground truth")
    assert any(d.label == "Table 1 as CSV" for d in at.get("download_button"))
    shipped = at.table[-1].value
    assert "smallcovid-net" in shipped.index and "±" in shipped.loc["smallcovid-net", "Dice"]


def test_compare_zip_upload_and_unsafe_zip(app_env, tmp_path):
    folder = make_labeled_folder(tmp_path / "set", n=3, size=32)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for p in sorted(folder.rglob("*.png")):
            zf.write(p, "myset/" + str(p.relative_to(folder)))
    at = new_app().switch_page("pages/compare.py").run()
    at.radio(key="cmp_mode").set_value("Upload a zip").run()
    at.file_uploader(key="cmp_zip").set_value(("myset.zip", buf.getvalue(), "application/zip"))
    at.multiselect(key="cmp_models").set_value(["smallcovid-net"]).run()
    at.button(key="cmp_run").click().run()
    assert not at.exception and not at.error
    assert at.dataframe[0].value.loc["smallcovid-net", "n"] == 3

    # A slice without its mask is named by its path in the zip, not the server's session folder.
    at.file_uploader(key="cmp_zip").set_value(("medseg.zip", missing_mask_zip(), "application/zip")).run()
    at.button(key="cmp_run").click().run()
    assert not at.exception
    scratch = str(at.session_state["_scratch"].path)
    assert [e.value for e in at.error] == ["images/medseg_001.jpg in medseg.zip: has no mask masks/medseg_001.png"]
    shown = " ".join([e.value for e in at.error] + [c.value for c in at.caption])
    assert "/tmp" not in shown and "smallcovid-session" not in shown and scratch not in shown

    bad = io.BytesIO()
    with zipfile.ZipFile(bad, "w") as zf:
        zf.writestr("../../escape.png", b"x")
    at.file_uploader(key="cmp_zip").set_value(("evil.zip", bad.getvalue(), "application/zip")).run()
    assert not at.exception
    assert at.error and at.error[0].value.startswith("evil.zip: ") and "'..'" in at.error[0].value


# ------------------------------------------------------------------ Train

def _fill_form(at: AppTest, data: Path, **kw) -> AppTest:
    at.text_input(key="tr_data").set_value(str(data))
    at.number_input(key="tr_folds").set_value(kw.get("folds", 2))
    at.number_input(key="tr_epochs").set_value(kw.get("epochs", 1))
    at.selectbox(key="tr_size").set_value(kw.get("size", 32))
    at.text_input(key="tr_name").set_value(kw.get("name", "tiny"))
    return at


def test_train_submits_a_job_and_cancel_stops_its_process(app_env, tmp_path):
    data = make_labeled_folder(tmp_path / "set", n=6, size=32)
    at = new_app().switch_page("pages/train.py").run()
    assert not at.exception and "No training jobs yet." in [i.value for i in at.info]
    _fill_form(at, data, epochs=200).button[0].click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert "Submitted job(s) #1." in [s.value for s in at.success]
    job = JobStore(app_env / "jobs.db").get(1)
    assert job.name == "tiny" and job.model == MODELS[0] and job.status == "running"
    assert job.config["folds"] == 2 and job.config["epochs"] == 200 and job.config["image_size"] == 32
    assert job.config["data"] == str(data.resolve()) and job.config["final"] is True
    at.run()
    assert any("#1 tiny" in e.label and "running" in e.label for e in at.expander)
    at.button(key="cancel-1").click().run()
    assert not at.exception
    job = JobStore(app_env / "jobs.db").get(1)
    assert job.status == "cancelled", (job.status, job.error)
    # The worker records the cancel, then exits: on a loaded machine that takes a moment.
    deadline = time.monotonic() + 20
    while _alive(job.pid, job.id) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(job.pid, job.id)
    assert any(b.key == "resume-1" for b in at.button)
    # The user's own cancel is neutral news, not a failure: an info box, no red error.
    at.run()
    assert not at.error, [e.value for e in at.error]
    if job.error:
        assert any(job.error.splitlines()[0].rstrip(".")[1:] in i.value and "Resume" in i.value for i in at.info)


def test_a_cancelled_job_is_neutral_news_and_a_failed_one_an_error(app_env, tmp_path):
    from smallcovid.training.config import TrainConfig

    store = JobStore(app_env / "jobs.db")
    cfg = TrainConfig(model="smallcovid-net", data=str(tmp_path), folds=2, epochs=8, image_size=32, final=True)
    a = store.add("mine", cfg, tmp_path / "runs" / "a")
    store.update(a, status="cancelled", error="fold 1 cancelled at epoch 6", finished=time.time())
    b = store.add("broken", cfg, tmp_path / "runs" / "b")
    store.update(b, status="failed", error="fold 2: loss became nan at epoch 3; lower the learning rate",
                 finished=time.time())
    at = new_app().switch_page("pages/train.py").run()
    assert not at.exception
    assert [e.value for e in at.error] == ["fold 2: loss became nan at epoch 3; lower the learning rate"]
    assert any(i.value.startswith("Fold 1 cancelled at epoch 6. **Resume**") for i in at.info)


def test_compare_with_an_empty_folder_field_asks_for_one(app_env):
    """An empty data-folder field is not an error about a folder '' that does not exist."""
    at = new_app().switch_page("pages/compare.py").run()
    assert at.text_input(key="cmp_path").value == ""
    assert not at.error and at.button(key="cmp_run").disabled
    assert any("No data folder set" in c.value for c in at.caption)
    at.text_input(key="cmp_path").set_value("   ").run()
    assert not at.error and at.button(key="cmp_run").disabled
    assert not any("does not exist" in e.value for e in at.error)


def test_train_form_starts_a_semi_supervised_bf16_job(app_env, tmp_path):
    from PIL import Image

    data = make_labeled_folder(tmp_path / "set", n=6, size=32)
    pool = tmp_path / "pool" / "images"
    pool.mkdir(parents=True)
    at = new_app().switch_page("pages/train.py").run()
    _fill_form(at, data, epochs=200)
    at.text_input(key="tr_unlabeled").set_value(str(pool.parent))
    at.number_input(key="tr_keep").set_value(0.25)
    at.number_input(key="tr_s_epochs").set_value(7)
    at.number_input(key="tr_s_lr").set_value(0.0005)
    at.selectbox(key="tr_precision").set_value("bf16")
    at.button[0].click().run()
    assert at.error and "holds no PNG/JPEG/TIFF images" in at.error[0].value  # an empty pool is refused up front
    assert not JobStore(app_env / "jobs.db").list()
    Image.fromarray(np.full((40, 36), 90, np.uint8)).save(pool / "u1.png")
    at.button[0].click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    job = JobStore(app_env / "jobs.db").get(1)
    c = job.config
    assert c["unlabeled"] == str(pool.parent.resolve()) and c["pseudo_keep"] == 0.25 and c["student_epochs"] == 7
    assert c["student_lr"] == 0.0005 and c["precision"] == "bf16" and c["pseudo_select"] == "area-matched"
    at.run()
    at.button(key="cancel-1").click().run()
    assert JobStore(app_env / "jobs.db").get(1).status == "cancelled"


def test_train_form_starts_a_distillation_job_from_a_finished_job(app_env, tmp_path, copy_run):
    from PIL import Image

    from smallcovid.training.config import TrainConfig

    data = make_labeled_folder(tmp_path / "set", n=6, size=32)
    pool = tmp_path / "pool" / "images"
    pool.mkdir(parents=True)
    Image.fromarray(np.full((40, 36), 90, np.uint8)).save(pool / "u1.png")
    store = JobStore(app_env / "jobs.db")
    cfg = TrainConfig.from_dict(json.loads((copy_run / "config.json").read_text()))
    teacher = store.add("teacher", cfg, copy_run)
    store.update(teacher, status="done")
    store.add("unfinished", cfg, tmp_path / "elsewhere")  # queued: no summary, not offered
    at = new_app().switch_page("pages/train.py").run()
    assert at.multiselect(key="tr_teachers").options == [f"#{teacher} teacher (smallcovid-net)"]
    _fill_form(at, data)
    at.multiselect(key="tr_teachers").set_value([f"#{teacher} teacher (smallcovid-net)"])
    at.number_input(key="tr_d_epochs").set_value(3)
    at.button[0].click().run()
    assert at.error and "needs the unlabeled slices folder" in at.error[0].value  # teachers without a pool
    at.text_input(key="tr_unlabeled").set_value(str(pool.parent))
    at.button[0].click().run()
    assert at.error and "trained on other folds (seed 3, 2 folds)" in at.error[0].value
    at.number_input(key="tr_seed").set_value(3)
    at.button[0].click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    job = max(JobStore(app_env / "jobs.db").list(), key=lambda j: j.id)
    assert job.config["teachers"] == [str(copy_run)] and job.config["distill_epochs"] == 3
    at.run()
    at.button(key=f"cancel-{job.id}").click().run()


def test_train_rejects_a_missing_data_folder(app_env, tmp_path):
    at = new_app().switch_page("pages/train.py").run()
    _fill_form(at, tmp_path / "nope").button[0].click().run()
    assert not at.exception
    assert at.error and "does not exist" in at.error[0].value
    assert not JobStore(app_env / "jobs.db").list()


def test_train_asks_for_a_data_folder_when_the_field_is_empty(app_env):
    at = new_app().switch_page("pages/train.py").run()
    assert at.text_input(key="tr_data").value == ""
    assert any("No data folder set: type one, or set SMALLCOVID_DATA_DIR" in c.value for c in at.caption)
    at.button[0].click().run()
    assert not at.exception
    assert [e.value for e in at.error] == ["Enter a data folder: the path is empty"]
    assert not JobStore(app_env / "jobs.db").list()


def test_data_folder_setting_prefills_train_and_compare(app_env, tmp_path, monkeypatch):
    data = make_labeled_folder(tmp_path / "set", n=4, size=32)
    monkeypatch.setenv("SMALLCOVID_DATA_DIR", str(data))
    at = new_app().switch_page("pages/train.py").run()
    assert at.text_input(key="tr_data").value == str(data)
    assert not any("No data folder set" in c.value for c in at.caption)
    at.switch_page("pages/compare.py").run()
    assert at.text_input(key="cmp_path").value == str(data) and not at.button(key="cmp_run").disabled
    monkeypatch.delenv("SMALLCOVID_DATA_DIR")
    at = AppTest.from_file(APP, default_timeout=120)
    at.secrets["data_dir"] = str(data)  # the secrets key, when the variable is unset
    at.run().switch_page("pages/compare.py").run()
    assert at.text_input(key="cmp_path").value == str(data)


def test_finished_job_shows_results_and_its_weights_can_be_used(app_env, tiny_weights, tmp_path):
    job_id = finished_job(app_env, tmp_path, tiny_weights)
    at = new_app().switch_page("pages/train.py").run()
    assert not at.exception
    assert len(at.get("plotly_chart")) == 1  # loss and Dice curves per fold
    results = at.table[0].value
    assert list(results.index) == ["1", "2", "3", "mean", "std"]
    expected = fake_cv(0)["at_threshold"]["dice"]
    assert results.loc["mean", "Dice"] == pytest.approx(expected["mean"])
    assert results.loc["std", "Dice"] == pytest.approx(expected["std"])
    at.button(key=f"install-{job_id}").click().run()
    assert not at.exception and not at.error
    label = f"done-job-job{job_id}"
    assert (app_env / "installed" / f"{label}.safetensors").is_file()
    at.switch_page("pages/segment.py").run()
    assert f"{label} (trained here)" in at.multiselect(key="models").options


# ------------------------------------------------------------------ Models

def test_models_page_shows_cards_cv_and_the_paper(app_env, tiny_weights):
    at = new_app().switch_page("pages/models.py").run()
    assert not at.exception
    assert [h.value for h in at.subheader] == MODELS
    # Each card is a collapsible section (the first one open), and the disclaimer shows once (sidebar).
    assert [e.label.split("**")[1] for e in at.expander] == MODELS and at.expander[0].proto.expanded
    assert sum("not a medical device" in w.value for w in at.warning) == 1
    assert any("Research use only" in w.value for w in at.sidebar.warning)
    card = json.loads((tiny_weights / "smallcovid-net.json").read_text())
    facts = at.markdown[0].value
    assert f"- **parameters:** {card['params']:,}" in facts and "- **input size:** 64 px" in facts
    cv = at.table[0].value
    assert list(cv.index) == ["1", "2", "3", "mean", "std"]
    assert cv.loc["mean", "Dice"] == pytest.approx(card["cv"]["at_threshold"]["dice"]["mean"])
    assert "ground-glass Dice" in cv.columns
    paper = at.table[1].value
    assert paper.loc["dice", "paper (test split)"] == 0.701
    assert paper.loc["dice", "ours (CV mean)"] == pytest.approx(card["cv"]["at_threshold"]["dice"]["mean"])
    assert any("no cross-validation results" in c.value for c in at.caption)  # segnet's card has none
    refs = [m.value for m in at.markdown if "SmallCovid-Net" in m.value and "Inf-Net" in m.value]
    assert refs, "the paper and data references are listed"


def test_models_page_curves_and_calibration_from_cards_and_installed_runs(app_env, tiny_weights, tmp_path,
                                                                          monkeypatch):
    """A card with curves and reliability curves gets both plots; a model trained here shows its CV table
    and the curves of its run folder."""
    weights = tmp_path / "weights"
    shutil.copytree(tiny_weights, weights)
    card = json.loads((weights / "unet.json").read_text())
    card["histories"] = {"1": {"epoch": [1, 2], "train_loss": [1.0, 0.8], "val_loss": [1.1, 0.9],
                               "val_dice": [0.2, 0.4], "val_dice_best": [0.3, 0.5]}}
    rel = {"confidence": [0.05, 0.5, 0.95], "lesion_fraction": [0.02, 0.4, 0.9], "share": [0.9, 0.05, 0.05]}
    card["calibration"] = {"method": "platt", "a": 1.0, "b": 0.0, "threshold": 0.45, "ece_before": 0.081,
                           "ece_after": 0.012, "reliability": {"before": rel, "after": rel}}
    (weights / "unet.json").write_text(json.dumps(card))
    monkeypatch.setenv("SMALLCOVID_WEIGHTS_DIR", str(weights))
    job_id = finished_job(app_env, tmp_path, tiny_weights)
    at = new_app().switch_page("pages/train.py").run()
    at.button(key=f"install-{job_id}").click().run()
    at.switch_page("pages/models.py").run()
    assert not at.exception and not at.error
    charts = at.get("plotly_chart")
    assert len(charts) == 3  # unet curves + unet reliability + the installed model's run curves
    assert any("expected calibration error before 0.081, after 0.012" in m.value for m in at.markdown)
    assert any("Trained here" in h.value for h in at.header)
    installed = at.expander[-1]
    assert "done-job-job1" in installed.label
    cv = installed.table[0].value  # its card's CV table (it had none before)
    assert list(cv.index) == ["1", "2", "3", "mean", "std"]


def test_models_page_draws_the_slices_of_cards_that_have_them(app_env, tiny_weights, tmp_path, monkeypatch):
    weights = tmp_path / "weights"
    shutil.copytree(tiny_weights, weights)
    for name, dice in (("smallcovid-net", {"s1": 0.8, "s2": 0.3}), ("unet", {"s1": 0.7, "s2": 0.5})):
        card = json.loads((weights / f"{name}.json").read_text())
        card["cv"]["per_slice"] = [{"slice": s, "fold": 1, "dice": d, "precision": d, "recall": 1.0,
                                     "lesion_share": 0.1} for s, d in dice.items()]
        (weights / f"{name}.json").write_text(json.dumps(card))
    monkeypatch.setenv("SMALLCOVID_WEIGHTS_DIR", str(weights))
    at = new_app().switch_page("pages/models.py").run()
    assert not at.exception and not at.error
    assert at.subheader[0].value == "Where the models fail, slice by slice"
    table = at.dataframe[0].value
    assert list(table.index) == ["s2", "s1"] and list(table.columns[1:3]) == ["smallcovid-net", "unet"]
    assert table.loc["s2", "mean"] == pytest.approx(0.4)
    assert any(c.value.startswith("segnet, mask-rcnn: no per-slice record") for c in at.caption)


def test_whole_volume_nifti_download_and_example_then_upload(app_env):
    ph = make_phantom(64, seed=2)
    affine = np.diag([0.7, 0.7, 2.5, 1.0])
    vol_img = nib.Nifti1Image(np.stack([ph.scan.pixels] * 3, axis=-1).astype(np.int16), affine)
    at = segment_app()
    at.button(key="example").click().run()
    assert any("drawn procedurally" in i.value for i in at.info)
    at.file_uploader(key="scan_files").set_value(("vol.nii.gz", vol_img.to_bytes(), "application/gzip")).run()
    assert not any("drawn procedurally" in i.value for i in at.info)  # a new upload replaces the example
    at.button(key="volume_run").click().run()
    assert not at.exception and not at.error
    assert any(d.label == "Mask NIfTI" for d in at.get("download_button"))
    probs = list(at.session_state["volume_results"].values())[0].levels.full()
    assert probs.shape == (3, 64, 64) and probs.dtype == np.uint8
    # The NIfTI written for download keeps the input geometry.
    vol = read_scan(vol_img.to_bytes(), "vol.nii.gz")
    data = uploads.nifti_mask_bytes(probs >= 128, vol)
    out = nib.Nifti1Image.from_bytes(gzip.decompress(data))
    assert out.shape == (64, 64, 3) and np.allclose(out.affine, affine)
    np.testing.assert_array_equal(np.asarray(out.dataobj).transpose(2, 0, 1), (probs >= 128).astype(np.uint8))


SHARED = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "covid-semiseg" / "train"


def test_uploaded_jpeg_dice_matches_the_evaluate_cli(app_env, tiny_weights, tmp_path):
    """The acceptance check: per-model Dice in the app equals ``python -m smallcovid evaluate`` to 3 decimals."""
    import subprocess
    import sys

    folder = tmp_path / "one"
    (folder / "images").mkdir(parents=True)
    (folder / "masks").mkdir()
    if (SHARED / "images" / "medseg_003.jpg").is_file():
        stem, image = "medseg_003", (SHARED / "images" / "medseg_003.jpg").read_bytes()
        (folder / "images" / "medseg_003.jpg").write_bytes(image)
        mask = (SHARED / "masks" / "medseg_003.png").read_bytes()
        name = "medseg_003.jpg"
    else:  # a fresh clone without ../shared: a generated slice
        img, m = blob_slice(120, seed=11)
        stem, image, mask, name = "case_11", png_bytes(img), png_bytes(m), "case_11.png"
        (folder / "images" / name).write_bytes(image)
    (folder / "masks" / f"{stem}.png").write_bytes(mask)
    out = tmp_path / "eval.json"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    subprocess.run([sys.executable, "-m", "smallcovid", "evaluate", "--model", "all", "--data", str(folder),
                    "--threshold", "0.8", "--device", "cpu", "--json", str(out)],
                   check=True, env=env, cwd=Path(__file__).resolve().parent.parent, capture_output=True)
    cli = json.loads(out.read_text())["models"]

    at = segment_app()
    at.file_uploader(key="scan_files").set_value((name, image, "image/jpeg"))
    at.file_uploader(key="mask_files").set_value((f"{stem}.png", mask, "image/png")).run()
    vh.set_view(at, threshold=0.8)  # the viewer's "0.8 (paper)" button
    assert not at.exception and not at.error
    df = metrics_df(at)
    for n in MODELS:
        for metric, col in (("dice", "Dice"), ("precision", "precision"), ("recall", "recall"), ("iou", "IoU")):
            assert round(df.loc[n, col], 3) == round(cli[n]["per_image"][stem][metric], 3), (n, metric)


def test_slider_reruns_never_call_a_model(app_env, monkeypatch):
    """Issue 6: moving the threshold / opacity sliders or the type toggle re-renders without a forward pass."""
    from smallcovid.inference.predictor import Predictor

    calls = []
    real = Predictor.predict_images

    def counting(self, *a, **k):
        calls.append(self.name)
        return real(self, *a, **k)

    monkeypatch.setattr(Predictor, "predict_images", counting)
    img, _ = blob_slice(128, seed=5)
    at = segment_app()
    at.file_uploader(key="scan_files").set_value(("s.png", png_bytes(img), "image/png")).run()
    assert len(calls) == len(MODELS)
    for thr in (0.3, 0.55, 0.9):
        vh.set_view(at, threshold=thr)
    vh.set_view(at, opacity=0.8)
    vh.set_view(at, types=False)
    vh.set_view(at, cards=True)
    assert not at.exception and not at.error
    assert len(calls) == len(MODELS)
    assert len(overlay_captions(at)) == len(MODELS) + 2
