"""Model catalog (shipped + installed models), card rows (cardview) and run-folder reading for the Train page."""

from __future__ import annotations

import json
import shutil

import pytest

from apphelpers import fake_cv
from smallcovid.app import cardview, catalog
from smallcovid.app import runview
from smallcovid.models import list_models


def test_available_models_lists_shipped_then_installed(app_env, tiny_weights):
    shipped = catalog.available_models()
    assert [e.name for e in shipped] == list_models() and all(e.source == "shipped" for e in shipped)
    assert shipped[0].weights == tiny_weights / "smallcovid-net.safetensors" and shipped[0].mtime > 0
    inst = app_env / "installed"
    inst.mkdir(parents=True)
    shutil.copy(tiny_weights / "unet.safetensors", inst / "my-unet.safetensors")
    shutil.copy(tiny_weights / "unet.json", inst / "my-unet.json")
    (inst / "broken.safetensors").write_bytes(b"x")  # no card: skipped
    entries = catalog.available_models()
    assert entries[-1].key == "job:my-unet" and entries[-1].name == "unet" and entries[-1].label == "my-unet (trained here)"
    assert len(entries) == len(list_models()) + 1


def test_missing_cards_are_none(tmp_path, monkeypatch):
    monkeypatch.setenv("SMALLCOVID_WEIGHTS_DIR", str(tmp_path))
    monkeypatch.setenv("SMALLCOVID_JOBS_DIR", str(tmp_path / "jobs"))
    assert catalog.shipped_cards() == {n: None for n in list_models()}
    assert catalog.available_models() == []
    (tmp_path / "x.json").write_text("{not json")
    assert catalog.read_card(tmp_path / "x.json") is None


def test_card_rows():
    card = {"cv": fake_cv(1), "params": 1234567, "input_size": 192, "threshold": 0.55,
            "training": {"data": "d", "n_slices": 50, "protocol": "paper", "device": "cpu",
                         "config": {"epochs": 20, "lr": 1e-4, "optimizer": "sgd", "batch_size": 4}}}
    rows = cardview.cv_table_rows(card)
    assert [r["fold"] for r in rows] == ["1", "2", "3", "mean", "std"]
    assert rows[3]["dice"] == pytest.approx(card["cv"]["at_threshold"]["dice"]["mean"])
    assert rows[3]["ground-glass Dice"] == pytest.approx(0.6)
    facts = cardview.card_facts(card)
    assert facts["parameters"] == "1,234,567" and facts["input size"] == "192 px"
    assert facts["protocol"].startswith("paper: 20 epochs, lr 0.0001, sgd") and "3-fold" in facts["protocol"]
    pv = cardview.paper_vs_ours("unet", card, {"unet": (0.72, 0.519, 0.767)})
    assert [r["metric"] for r in pv] == ["dice", "precision", "recall"]
    assert pv[0]["paper (test split)"] == 0.72 and pv[0]["ours (CV mean)"] == rows[3]["dice"]
    assert cardview.paper_vs_ours("unet", None, {})[0]["ours (CV mean)"] is None
    assert cardview.cv_table_rows({}) == []
    # A warm-restarts run says what each fold and the final model trained, not only its cap.
    restarts = {**card, "cv": {**card["cv"], "plateau": {"final_epochs": 775, "per_fold": [
        {"fold": 1, "epochs_run": 1575}, {"fold": 2, "epochs_run": 775}, {"fold": 3, "epochs_run": 1575}]}},
        "training": {**card["training"], "config": {**card["training"]["config"], "epochs": 1575,
                                                    "schedule": "restarts", "cycle_epochs": 25}}}
    assert cardview.card_facts(restarts)["protocol"].startswith(
        "paper: warm restarts (cycles of 25 epochs, doubling), cap 1575; folds trained 1575, 775, 1575 epochs, "
        "the final model 775, lr 0.0001")
    assert facts["test-time augmentation"] == "none (one pass)" and "calibration" not in facts
    tta = cardview.card_facts({**card, "config": {"tta": "d4"}, "calibration_declined": {
        "method": "platt", "ece_before": 0.019, "ece_after": 0.034}})
    assert tta["test-time augmentation"] == "8 views (every flip and quarter turn), averaged"
    measured = cardview.card_facts({**card, "tta_cv": {"d4": {"dice": {"mean": 0.7826, "paired": {
        "mean": 0.0096, "sd": 0.0084, "better_folds": 4, "folds": 5}}}}})
    assert measured["test-time augmentation"] == ("none (one pass); measured on the same folds: 8 views: CV Dice "
                                                  "0.783 (+0.010 ± 0.008 paired, better in 4 of 5 folds)")
    assert tta["calibration"].startswith("none: Platt scaling fitted on the other folds raised the calibration "
                                         "error (0.019 -> 0.034)")


def test_operating_rows_are_at_the_tuned_threshold_with_the_protocol_dice_beside():
    """A model that finds almost nothing at the paper's 0.8 is shown at its tuned threshold, 0.8 beside it."""
    cv = fake_cv(2)
    for f in cv["per_fold"]:
        f["at_threshold"] = dict(f["at_threshold"], dice=0.01)
        f["tuned"] = dict(f["tuned"], dice=0.55, threshold=0.25)
    cv["at_threshold"] = dict(cv["at_threshold"], dice={"mean": 0.01, "std": 0.0})
    cv["tuned"] = dict(cv["tuned"], dice={"mean": 0.55, "std": 0.0})
    card = {"cv": cv}
    assert cardview.protocol_threshold(card) == 0.8 and cardview.protocol_threshold({}) is None
    rows = cardview.cv_operating_rows(card)
    assert [r["fold"] for r in rows] == ["1", "2", "3", "mean", "std"]
    assert [r["threshold"] for r in rows[:3]] == [0.25] * 3
    assert rows[0]["dice"] == 0.55 and rows[0]["Dice at 0.8"] == 0.01
    assert rows[3]["dice"] == pytest.approx(0.55) and rows[3]["Dice at 0.8"] == pytest.approx(0.01)
    assert cardview.paper_vs_ours("mask-rcnn", card, {})[0]["ours (CV mean)"] == pytest.approx(0.55)
    assert cardview.cv_operating_rows({}) == []


def test_runview_reads_partial_runs(tmp_path):
    assert runview.read_histories(tmp_path) == {} and runview.read_summary(tmp_path) is None
    (tmp_path / "fold_1").mkdir()
    (tmp_path / "fold_1" / "history.csv").write_text("epoch,train_loss,val_loss,val_dice,lr\n1,1.5,1.2,0.4,0.001\n2,1.0,,0.5,0.001\n")
    (tmp_path / "fold_2").mkdir()  # started, no history yet
    (tmp_path / "final").mkdir()
    (tmp_path / "final" / "history.csv").write_text("epoch,train_loss,lr\n1,0.9,0.001\n")
    h = runview.read_histories(tmp_path)
    assert sorted(h) == [0, 1] and h[1]["val_dice"] == [0.4, 0.5] and h[1]["val_loss"][1] != h[1]["val_loss"][1]
    (tmp_path / "summary.json").write_text(json.dumps({"folds": 2}))
    assert runview.read_summary(tmp_path) == {"folds": 2}
    (tmp_path / "train.log").write_text("".join(f"line {i}\n" for i in range(50)) + "50%\r60%\r70%\n")
    tail = runview.log_tail(tmp_path / "train.log", 3)
    assert tail.splitlines() == ["line 48", "line 49", "70%"]
    assert runview.log_tail(tmp_path / "missing.log") == ""


def test_progress_fraction_and_text():
    cfg = {"folds": 2, "epochs": 4, "final": True}
    assert runview.progress_fraction(None, cfg) == 0.0
    p = {"kind": "batch", "fold": 2, "folds": 2, "epoch": 3, "epochs": 4, "step": 5, "steps": 10,
         "train_loss": 0.5, "eta_s": 300.0}
    assert runview.progress_fraction(p, cfg) == pytest.approx((4 + 2.5) / 12)
    assert runview.progress_fraction({**p, "fold": 0, "epoch": 4, "step": 10}, cfg) == pytest.approx(1.0)
    assert runview.progress_fraction({"kind": "done"}, cfg) == 1.0
    text = runview.progress_text(p)
    assert text == "fold 2/2 · epoch 3/4 · step 5/10 · train loss 0.500 · ETA 5 min"
    assert runview.progress_text({**p, "fold": 0}).startswith("final model (all data)")


def test_summary_phase_is_reported_and_shown(tiny_cfg, tmp_path):
    """Between the last fold and the final model the run reports "summary" steps (no stale ETA), so the
    Train page's progress moves on instead of freezing at the last fold's "ETA 9 s"."""
    import torch

    from smallcovid.training.loop import train

    events = []
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(tiny_cfg(final=True, epochs=1), tmp_path / "run", progress=events.append)
    finally:
        torch.set_num_threads(before)
    kinds = [(e.kind, e.fold) for e in events]
    first_summary = kinds.index(("summary", 0))
    last_fold_epoch = max(i for i, k in enumerate(kinds) if k[0] == "epoch" and k[1] == 2)
    first_final = min(i for i, k in enumerate(kinds) if k[1] == 0 and k[0] in ("batch", "epoch"))
    assert last_fold_epoch < first_summary < first_final
    summary = [e for e in events if e.kind == "summary"]
    assert [e.step for e in summary] == list(range(len(summary)))
    assert summary[0].stage == "out-of-fold predictions" and summary[-1].stage == "calibration"
    p = {**summary[1].__dict__}
    text = runview.progress_text(p)
    # No "ETA" that ignores this phase: the remaining epochs are named as what comes after it.
    assert text.startswith("summary: threshold choice (step 2/") and "ETA" not in text
    assert runview.progress_text({**p, "eta_s": 40.0}).endswith("then the final model, about 40 s")
    assert "final model" not in runview.progress_text({**p, "eta_s": 0.0})
    assert runview.progress_fraction(p, {"folds": 2, "epochs": 1, "final": True}) == pytest.approx(2 / 3)


def test_default_threshold_is_the_median_card_threshold_rounded_to_005(app_env, tiny_weights):
    assert catalog.default_threshold([0.3, 0.5, 0.45, 0.25]) == 0.4  # median 0.375 -> 0.40
    assert catalog.default_threshold([{"threshold": 0.33}]) == 0.35
    assert catalog.default_threshold([{"threshold": 0.31}, {"threshold": 0.42}, {"no": 1}]) == 0.35
    assert catalog.default_threshold([]) == catalog.PAPER_THRESHOLD == 0.8  # nothing known: the paper's
    assert catalog.default_threshold([{"threshold": "x"}, None, 7]) == 0.8
    assert catalog.default_threshold([0.01]) == 0.05 and catalog.default_threshold([0.99]) == 0.95
    # entries read their cards (the tiny cards all say 0.5)
    assert catalog.default_threshold(catalog.available_models()) == 0.5


def test_default_threshold_of_the_shipped_cards():
    """The app's starting value follows the shipped cards (recalibration moves it), never a fixed 0.8."""
    from pathlib import Path

    weights = Path(__file__).resolve().parent.parent / "weights"
    cards = [json.loads(p.read_text()) for p in sorted(weights.glob("*.json"))]
    if not cards:
        pytest.skip("no shipped cards")
    values = sorted(float(c["threshold"]) for c in cards)
    n = len(values)
    median = values[n // 2] if n % 2 else (values[n // 2 - 1] + values[n // 2]) / 2
    assert abs(catalog.default_threshold(cards) - median) <= 0.025 + 1e-9
