"""App behaviours that were wrong once, each checked where its logic lives (unit tests) and on its page (AppTest).

- Train: a finished job's CV table is at each fold's tuned threshold, as on the Models page and in
  the log, with the paper's fixed threshold in the last column; a Ray job that stopped before its
  fold tasks started does not say "waiting for the cluster"; short runs get whole-epoch ticks.
- Public mode: an upload over the public cap reaches the app, which names the file, its size and
  the limit (the uploader does not refuse it on its own with a red mark only).
- Segment: an image without contrast gets a note instead of black panels; library messages end at
  a word boundary; several bad uploads give one line per file.
- Models: the paper is cited with its authors; each card shows its plateau check (or says it has none).
"""

from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

import viewerhelpers as vh
from apphelpers import blob_slice, fake_cv, finished_job, png_bytes
from bad_inputs import bad_inputs
from smallcovid.app import figures, plateauview, runview, uploads, viz
from smallcovid.app.cardview import PAPER_CITATION, cv_operating_rows
from smallcovid.io import Slice, read_scan
from smallcovid.io.validate import one_line

APP = str(Path(__file__).resolve().parent.parent / "app.py")
AUTHORS = "Salazar Urbina, Ventura Molina, Flores Cortes, Méndez Agüero, Jiménez Alcantar"


def page(path: str = "pages/segment.py") -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120).run()
    if path != "pages/segment.py":
        at.switch_page(path).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def plateau(ok2: bool = False) -> dict:
    """A ``cv.plateau`` block as training writes it: fold 1 plateaued, fold 2 only when ``ok2``."""
    return {"share": 0.75, "ok": ok2, "final_epochs": 8, "per_fold": [
        {"fold": 1, "best_epoch": 3, "epochs_run": 8, "ok": True,
         "curve": [0.2, 0.4, 0.6, 0.55, 0.5, 0.52, 0.5, 0.51]},
        {"fold": 2, "best_epoch": 4 if ok2 else 8, "epochs_run": 8, "ok": ok2,
         "curve": [0.1, 0.3, 0.4, 0.45, 0.45, 0.47, 0.48, 0.5]}]}


# ------------------------------------------------------------------ 1. Train: CV table threshold

def test_train_table_is_at_the_tuned_threshold_like_the_models_page(app_env, tiny_weights, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    finished_job(app_env, data, tiny_weights)
    at = page("pages/train.py")
    (table,) = at.table
    df = table.value
    summary = json.loads(next((app_env / "runs").glob("*/summary.json")).read_text())
    expected = cv_operating_rows({"cv": summary})
    assert [f"{r['threshold']:.2f}" for r in expected[:3]] == ["0.60"] * 3
    assert "Dice at 0.8" in df.columns
    # the table's fold rows are the tuned ones (threshold 0.60, not the run's 0.8)
    assert [round(float(v), 2) for v in df["threshold"].iloc[:3]] == [0.6, 0.6, 0.6]
    heading = next(m.value for m in at.markdown if m.value.startswith("**Cross-validation results**"))
    assert "each fold's tuned threshold" in heading and "last column is Dice at threshold 0.8" in heading


def test_cv_heading_names_the_tuned_thresholds_and_the_fixed_one():
    text = runview.cv_results_heading(0.8, 64)
    assert text.startswith("**Cross-validation results** at each fold's tuned threshold")
    assert "the last column is Dice at threshold 0.8" in text


# ------------------------------------------------------------------ 6. Train: Ray caption, epoch ticks

RAY = {"name": "ray", "address": "10.0.0.1:6379"}


def test_cluster_text_reflects_a_job_that_never_reached_the_cluster():
    assert runview.cluster_text(None, None, active=True) == ""
    assert runview.cluster_text({"name": "local"}, None, active=False) == ""
    assert runview.cluster_text(RAY, None, active=True).endswith("waiting for the cluster")
    stopped = runview.cluster_text(RAY, {}, active=False)
    assert "waiting" not in stopped and stopped.endswith("no fold task started on the cluster")
    tasks = {"ray_job_id": "02000000", "tasks": [{"fold": 1, "task_id": "a" * 40}]}
    assert runview.cluster_text(RAY, tasks, active=False) == (
        "Runs on Ray (10.0.0.1:6379) · Ray job 02000000 · tasks fold 1: aaaaaaaaaaaa…")


def test_train_page_failed_ray_job_caption(app_env, tmp_path):
    from smallcovid.training.config import TrainConfig
    from smallcovid.training.jobs import JobStore

    store = JobStore(app_env / "jobs.db")
    cfg = TrainConfig(model="smallcovid-net", data=str(tmp_path), folds=2, epochs=2, image_size=32)
    job = store.add("on-ray", cfg, tmp_path / "runs" / "r", executor=RAY)
    store.update(job, status="failed", error="no Ray cluster answers at 10.0.0.1:6379", finished=time.time())
    at = page("pages/train.py")
    captions = " ".join(c.value for c in at.caption)
    assert "Runs on Ray (10.0.0.1:6379)" in captions and "no fold task started on the cluster" in captions
    assert "waiting for the cluster" not in captions
    assert any("no Ray cluster answers" in e.value for e in at.error)


@pytest.mark.parametrize("epochs, dtick", [(1, 1), (2, 1), (12, 1), (40, None)])
def test_epoch_axis_has_whole_number_ticks(epochs, dtick):
    h = {1: {"epoch": list(map(float, range(1, epochs + 1))), "train_loss": [1.0] * epochs,
             "val_loss": [1.0] * epochs, "val_dice": [0.5] * epochs}}
    fig = figures.training_curves_figure(h, threshold=0.5)
    for axis in (fig.layout.xaxis, fig.layout.xaxis2):
        assert axis.tickformat == "d" and axis.dtick == dtick


# ------------------------------------------------------------------ 3. public upload cap

def test_public_upload_over_the_cap_names_file_size_and_limit(app_env, monkeypatch):
    monkeypatch.setenv("SMALLCOVID_PUBLIC", "1")
    monkeypatch.setenv("SMALLCOVID_PUBLIC_MAX_UPLOAD_MB", "0.05")
    big = png_bytes(np.random.default_rng(1).integers(0, 256, (256, 256), dtype=np.uint8))
    at = page()
    uploader = at.file_uploader(key="scan_files")
    assert uploader.proto.max_upload_size_mb == 400  # the uploader lets it through to the app's check
    uploader.set_value(("ct_60.png", big, "image/png")).run()
    assert [e.value for e in at.error] == [
        f"ct_60.png: is {len(big) / 2**20:.3g} MB; this public demo accepts uploads of at most 0.05 MB"]
    assert not any("Upload a CT slice" in i.value for i in at.info)


# ------------------------------------------------------------------ 4. blank image, messages, many bad files

def test_no_contrast_note():
    flat = Slice(np.zeros((64, 64), np.float32), "raw", None, None, "zeros.png")
    assert uploads.no_contrast_note(flat, "zeros.png") == (
        "zeros.png: this image has no contrast (every pixel has the same value); there is nothing to segment.")
    assert uploads.no_contrast_note(flat, "vol.nii.gz", 4).startswith("vol.nii.gz: slice 5 has no contrast")
    img, _ = blob_slice(64)
    assert uploads.no_contrast_note(read_scan(png_bytes(img), name="a.png"), "a.png") is None


def test_blank_png_gets_a_note_not_black_panels(app_env):
    at = page()
    at.file_uploader(key="scan_files").set_value(("zeros.png", png_bytes(np.zeros((64, 64), np.uint8)),
                                                   "image/png")).run()
    assert not at.exception and not at.error
    assert any("this image has no contrast (every pixel has the same value); there is nothing to segment"
               in w.value for w in at.warning)
    assert vh.viewer_data(at) is None  # nothing segmented


@pytest.mark.parametrize("text", [
    "The number of bytes of pixel data is less than expected (13303 vs 32768 bytes) - the dataset may be "
    "corrupted, have an invalid group 0028 element value, or the transfer syntax may be incorrect",
    "word " * 60,
])
def test_one_line_never_ends_mid_word(text):
    short = one_line(ValueError(text))
    assert len(short) <= 160
    assert text.startswith(short.removesuffix("…")) and text[len(short.removesuffix("…"))] in " ,.;-"


def test_truncated_dicom_message_ends_at_a_word_boundary():
    case = next(b for b in bad_inputs() if b.name == "truncated.dcm")
    msg = uploads.scan_error(case.data, case.name)
    assert msg.startswith("truncated.dcm: is truncated or corrupt DICOM data (")
    assert not re.search(r"\w\.\.\.\)?$", msg) and msg.endswith(")"), msg


def test_six_bad_files_each_get_their_line(app_env):
    cases = [b for b in bad_inputs() if b.name in ("truncated.png", "truncated.dcm", "random.jpg", "page.png",
                                                   "tiny.png", "volume_4d.nii")]
    assert len(cases) == 6
    at = page()
    at.file_uploader(key="scan_files").set_value([(b.name, b.data, "application/octet-stream") for b in cases]).run()
    assert not at.exception
    (box,) = at.error
    lines = box.value.split("  \n")
    assert len(lines) == 6, lines
    for b, line in zip(cases, lines):
        assert line.replace("\\", "").startswith(f"{b.name}: "), line
    assert uploads.markdown_lines(["bad_1.png: x", "bad_2.png: y"]) == "bad\\_1.png: x  \nbad\\_2.png: y"


# ------------------------------------------------------------------ 5. Models: authors, plateau

def test_paper_citation_names_authors_and_institute():
    assert PAPER_CITATION.startswith(f"{AUTHORS}; Instituto Politécnico Nacional. SmallCovid-Net")


def test_plateau_view():
    assert plateauview.card_plateau({"cv": fake_cv(0)}) is None
    assert plateauview.plateau_text(None) == "No plateau record (trained before plateau checks)."
    p = plateauview.card_plateau({"cv": {"plateau": plateau()}})
    assert p["ok"] is False and [f["best_epoch"] for f in p["per_fold"]] == [3, 8]
    assert plateauview.plateau_text(p).startswith("Plateau not reached in fold 2:")
    assert plateauview.plateau_text(plateauview.card_plateau({"cv": {"plateau": plateau(True)}})).startswith(
        "Plateau reached in every fold")
    fig = plateauview.plateau_figure(p)
    stars = [t for t in fig.data if t.mode == "markers"]
    assert [(list(t.x), list(t.y)) for t in stars] == [([3], [0.6]), ([8], [0.5])]
    assert [t.marker.symbol for t in stars] == ["star", "star-open"]
    assert fig.layout.xaxis.dtick == 1
    extended = plateauview.card_plateau({"cv": {"plateau": {**plateau(True), "extensions": [
        {"from": 775, "to": 1575, "folds": [1, 2]}, {"bad": 1}]}}})
    assert extended["extensions"] == [{"from": 775, "to": 1575, "folds": [1, 2]}]
    assert "folds 1, 2, short of a plateau at 775 epochs, trained on up to 1575" in plateauview.plateau_text(extended)
    again = plateauview.card_plateau({"cv": {"plateau": plateau(True)}, "replaced_folds": {"folds": [2], "epochs": 3175}})
    assert again["replaced"] == {"folds": [2], "epochs": 3175}
    assert "fold 2 trained again alone with the same recipe, up to 3175 epochs" in plateauview.plateau_text(again)
    assert plateauview.card_plateau({"cv": {"plateau": plateau(True)}, "replaced_folds": "x"})["replaced"] is None
    # Folds of different lengths: the longest gets the shaded last quarter, each shorter one a dotted line.
    uneven = plateau()
    uneven["per_fold"][0] = {**uneven["per_fold"][0], "epochs_run": 4, "curve": [0.2, 0.4, 0.6, 0.55]}
    fig = plateauview.plateau_figure(plateauview.card_plateau({"cv": {"plateau": uneven}}))
    lines = [sh for sh in fig.layout.shapes if sh.type == "line"]
    rects = [sh for sh in fig.layout.shapes if sh.type == "rect"]
    assert [ln.x0 for ln in lines] == [3.0] and [r.x0 for r in rects] == [6.0]
    assert "75% of 4" in [a.text for a in fig.layout.annotations]


def test_models_page_cites_authors_and_shows_plateau(app_env, tiny_weights, tmp_path, monkeypatch):
    weights = tmp_path / "weights"
    shutil.copytree(tiny_weights, weights)
    card = json.loads((weights / "smallcovid-net.json").read_text())
    card["cv"]["plateau"] = plateau()
    (weights / "smallcovid-net.json").write_text(json.dumps(card))
    monkeypatch.setenv("SMALLCOVID_WEIGHTS_DIR", str(weights))
    at = page("pages/models.py")
    assert any(AUTHORS in m.value and "Instituto Politécnico Nacional" in m.value for m in at.markdown)
    captions = [c.value for c in at.caption]
    assert sum(c.startswith("Plateau not reached in fold 2") for c in captions) == 1
    assert sum(c == "No plateau record (trained before plateau checks)." for c in captions) >= 1  # unet's card
    assert any(p.key == "plateau-smallcovid-net" for p in at.get("plotly_chart"))
