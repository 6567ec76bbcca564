"""The Train page's job view: wording of captions, thresholds and stop reasons, and curves of one-epoch runs.

The helpers of :mod:`smallcovid.app.runview` are tested directly; one AppTest renders
the Train page with a finished one-epoch job and a job cancelled in its final model.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from apphelpers import fake_cv
from smallcovid.app import runview
from smallcovid.app import figures

APP = str(Path(__file__).resolve().parent.parent / "app.py")
CALIBRATION = {"a": 2.0, "b": -1.0, "method": "platt", "threshold": 0.1}


# ------------------------------------------------------------------ texts

@pytest.mark.parametrize("n, text", [(1, "1 epoch"), (2, "2 epochs"), (0, "0 epochs"), ("1", "1 epoch"),
                                     (None, "None epochs")])
def test_plural(n, text):
    assert runview.plural(n, "epoch") == text


def test_job_caption_says_1_epoch_not_1_epochs():
    cfg = {"folds": 2, "epochs": 1, "image_size": 32, "batch_size": 2, "lr": 0.001, "protocol": "default",
           "data": "/d"}
    text = runview.job_caption(cfg, "/runs/a")
    assert text.startswith("2 folds · 1 epoch · image 32 px") and "epochs" not in text
    assert runview.job_caption({**cfg, "epochs": 3}, "/runs/a").startswith("2 folds · 3 epochs · ")


@pytest.mark.parametrize("error, sentence, expected", [
    ("final model (all data) cancelled at epoch 37", True, "Final model (all data) cancelled at epoch 37"),
    ("fold 0 cancelled at epoch 37", True, "Final model (all data) cancelled at epoch 37"),  # older job rows
    ("fold 2 cancelled at epoch 3.\ndetails", True, "Fold 2 cancelled at epoch 3"),
    (None, True, "Cancelled"),
    ("", True, "Cancelled"),
    ("fold 0: loss became nan at epoch 3; lower the learning rate", False,
     "final model (all data): loss became nan at epoch 3; lower the learning rate"),
    ("fold 2: loss became nan at epoch 3; lower the learning rate", False,
     "fold 2: loss became nan at epoch 3; lower the learning rate"),
])
def test_stop_reason(error, sentence, expected):
    assert runview.stop_reason(error, "cancelled", sentence=sentence) == expected


def test_results_caption_names_the_threshold_the_card_uses():
    calibrated = {"recommended_threshold": 0.5, "calibration": CALIBRATION, "device": "cpu (2 threads)",
                  "elapsed_s": 95.0}
    assert runview.results_caption(calibrated, final=True) == (
        "Threshold the model card uses: 0.10 on calibrated probabilities (0.50 on raw probabilities), chosen on "
        "out-of-fold predictions · cpu (2 threads) · training time 95 s")
    raw = {"recommended_threshold": 0.55, "calibration": None, "elapsed_s": 300.0}
    assert runview.results_caption(raw, final=False) == (
        "Threshold the fold models use: 0.55 on raw probabilities (no calibration fitted), chosen on out-of-fold "
        "predictions · training time 5 min")
    # a partial or old summary: no threshold part, no exception
    assert runview.results_caption({"device": "cpu"}, final=True) == "cpu"
    assert runview.results_caption({"recommended_threshold": "?", "elapsed_s": "x"}, final=True) == ""


def test_cv_heading_says_the_best_epoch_is_chosen_on_the_dotted_line():
    text = runview.cv_results_heading(0.5, 32)
    assert "dotted line (best-threshold Dice)" in text
    assert "solid line (Dice at threshold 0.5, measured at 32 px)" in text
    assert "their own size" in text
    assert "the solid line of the Dice panel)" not in text
    assert "at the run's threshold" in runview.cv_results_heading(None, None)


# ------------------------------------------------------------------ curves

def _one_epoch_histories() -> dict:
    fold = {"epoch": [1.0], "train_loss": [2.0], "val_loss": [1.6], "val_dice": [0.3], "val_dice_best": [0.4],
            "lr": [0.001]}
    final = {"epoch": [1.0], "train_loss": [1.9], "val_loss": [float("nan")], "val_dice": [float("nan")],
             "val_dice_best": [float("nan")], "lr": [0.001]}
    return {1: fold, 2: dict(fold), 0: final}


def test_one_epoch_curves_draw_every_point():
    fig = figures.training_curves_figure(_one_epoch_histories(), threshold=0.5)
    assert fig.data
    for trace in fig.data:
        assert "markers" in trace.mode, (trace.name, trace.mode)
    dotted = [t for t in fig.data if t.line.dash == "dot"]
    assert {t.name for t in dotted} == {"fold 1 validation loss", "fold 1 best-threshold Dice",
                                        "fold 2 validation loss", "fold 2 best-threshold Dice"}
    assert all(t.marker.symbol == "circle-open" and t.marker.color == t.line.color for t in dotted)


def test_curves_with_two_epochs_keep_plain_dotted_lines():
    h = {1: {"epoch": [1.0, 2.0], "train_loss": [2.0, 1.5], "val_loss": [1.6, 1.2], "val_dice": [0.3, 0.5],
             "val_dice_best": [0.4, 0.6], "lr": [0.001, 0.001]}}
    fig = figures.training_curves_figure(h, threshold=0.5)
    assert [t.mode for t in fig.data if t.line.dash == "dot"] == ["lines", "lines"]
    # a value between missing ones would be invisible too
    h[1]["val_loss"] = [float("nan"), 1.2]
    fig = figures.training_curves_figure(h, threshold=0.5)
    assert next(t for t in fig.data if t.name == "fold 1 validation loss").mode == "lines+markers"


def test_long_curves_are_lines_without_per_epoch_markers():
    n = figures.MARKED_EPOCHS + 1
    h = {1: {"epoch": [float(e) for e in range(1, n + 1)], "train_loss": [1.0] * n, "val_loss": [1.0] * n,
             "val_dice": [0.5] * n, "val_dice_best": [0.6] * n, "lr": [0.001] * n}}
    assert {t.mode for t in figures.training_curves_figure(h, threshold=0.5).data} == {"lines"}
    short = {1: {k: v[:figures.MARKED_EPOCHS] for k, v in h[1].items()}}
    assert "lines+markers" in {t.mode for t in figures.training_curves_figure(short, threshold=0.5).data}


# ------------------------------------------------------------------ the Train page

def _one_epoch_job(store, data: Path, run: Path) -> int:
    from smallcovid.training.config import TrainConfig

    cfg = TrainConfig(model="smallcovid-net", data=str(data), folds=2, epochs=1, image_size=32, final=True)
    job_id = store.add("one-epoch", cfg, run)
    for k in (1, 2):
        (run / f"fold_{k}").mkdir(parents=True, exist_ok=True)
        (run / f"fold_{k}" / "history.csv").write_text(
            "epoch,train_loss,val_loss,val_dice,val_dice_best,lr\n1,2.0,1.6,0.3,0.4,0.001\n")
    (run / "final").mkdir()
    (run / "final" / "history.csv").write_text("epoch,train_loss,val_loss,val_dice,val_dice_best,lr\n1,1.9,,,,0.001\n")
    summary = {**fake_cv(0), "recommended_threshold": 0.5, "calibration": CALIBRATION, "device": "cpu (2 threads)",
               "elapsed_s": 95.0}
    (run / "summary.json").write_text(json.dumps(summary))
    store.update(job_id, status="done", run_dir=str(run), finished=time.time())
    return job_id


def test_train_page_one_epoch_job_and_final_model_cancel(app_env, tmp_path):
    from smallcovid.training.config import TrainConfig
    from smallcovid.training.jobs import JobStore

    store = JobStore(app_env / "jobs.db")
    cfg = TrainConfig(model="smallcovid-net", data=str(tmp_path), folds=2, epochs=40, image_size=32, final=True)
    old = store.add("old", cfg, tmp_path / "runs" / "old")  # recorded before the final model had its name
    store.update(old, status="cancelled", error="fold 0 cancelled at epoch 37", finished=time.time())
    new = store.add("new", cfg, tmp_path / "runs" / "new")
    store.update(new, status="cancelled", error="final model (all data) cancelled at epoch 37", finished=time.time())
    _one_epoch_job(store, tmp_path, tmp_path / "runs" / "one")

    at = AppTest.from_file(APP, default_timeout=120).run().switch_page("pages/train.py").run()
    assert not at.exception and not at.error, [e.value for e in at.exception]
    infos = [i.value for i in at.info]
    assert sum(i.startswith("Final model (all data) cancelled at epoch 37. **Resume**") for i in infos) == 2
    assert not any("Fold 0" in i or "fold 0" in i for i in infos)

    captions = [c.value for c in at.caption]
    assert any(c.startswith("2 folds · 1 epoch · image 32 px") for c in captions)
    assert not any("1 epochs" in c for c in captions)
    assert any(c.startswith("2 folds · 40 epochs · ") for c in captions)
    assert ("Threshold the model card uses: 0.10 on calibrated probabilities (0.50 on raw probabilities), chosen "
            "on out-of-fold predictions · cpu (2 threads) · training time 95 s") in captions
    assert not any("Recommended threshold" in c for c in captions)
    heading = next(m.value for m in at.markdown if m.value.startswith("**Cross-validation results**"))
    assert "dotted line" in heading and "the solid line of the Dice panel)" not in heading

    (chart,) = at.get("plotly_chart")
    traces = json.loads(chart.proto.spec)["data"]
    names = {t["name"] for t in traces}
    assert {"fold 1 validation loss", "fold 1 best-threshold Dice"} <= names
    assert all("markers" in t["mode"] for t in traces), [(t["name"], t["mode"]) for t in traces]
