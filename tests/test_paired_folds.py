"""scripts/paired_folds.py: two runs compared fold by fold."""

from __future__ import annotations

import json
import math

import pytest

from tinydata import load_script


def _summary(path, dice, ggo=None, splits=None):
    rows = [{"fold": k, "tuned": {"dice": d, **({"dice_ground-glass": ggo[k - 1]} if ggo else {})}}
            for k, d in enumerate(dice, start=1)]
    path.mkdir()
    (path / "summary.json").write_text(json.dumps({"per_fold": rows}))
    if splits is not None:
        (path / "splits.json").write_text(json.dumps({"seed": 0, "folds": splits}))
    return path


def test_paired_differences_sd_t_and_wins(tmp_path, capsys):
    script = load_script("scripts/paired_folds.py")
    a = _summary(tmp_path / "a", [0.70, 0.60, 0.80], ggo=[0.5, 0.5, 0.5], splits=[{"val": ["x"]}])
    b = _summary(tmp_path / "b", [0.72, 0.61, 0.79], ggo=[0.6, 0.5, 0.55], splits=[{"val": ["x"]}])
    r = script.paired(script.load_folds(a)[0], script.load_folds(b)[0], "dice")
    assert r["diffs"] == pytest.approx([0.02, 0.01, -0.01]) and r["wins"] == 2
    assert r["mean"] == pytest.approx(0.02 / 3)
    sd = math.sqrt(sum((d - 0.02 / 3) ** 2 for d in [0.02, 0.01, -0.01]) / 2)
    assert r["sd"] == pytest.approx(sd) and r["t"] == pytest.approx((0.02 / 3) / (sd / math.sqrt(3)))
    assert script.main([str(a), str(b)]) == 0
    out = capsys.readouterr().out
    assert "dice: A 0.7000, B 0.7067; B − A +0.0067" in out and "B better in 2 of 3 folds" in out
    assert "dice_consolidation: not in both" in out
    # a card's cv.per_fold reads the same way
    card = tmp_path / "card.json"
    card.write_text(json.dumps({"cv": {"per_fold": json.loads((a / "summary.json").read_text())["per_fold"]}}))
    assert script.paired(script.load_folds(card)[0], script.load_folds(a)[0], "dice")["mean"] == 0.0


def test_other_folds_are_refused(tmp_path, capsys):
    script = load_script("scripts/paired_folds.py")
    a = _summary(tmp_path / "a", [0.7, 0.6], splits=[{"val": ["x"]}])
    b = _summary(tmp_path / "b", [0.7, 0.6], splits=[{"val": ["y"]}])
    assert script.main([str(a), str(b)]) == 2 and "splits.json differ" in capsys.readouterr().err
    c = _summary(tmp_path / "c", [0.7, 0.6, 0.5])
    assert script.main([str(a), str(c)]) == 2 and "different folds" in capsys.readouterr().err
    assert script.main([str(a), str(tmp_path / "nowhere")]) == 2


def test_worst_slices_scores_each_slice_out_of_fold_and_draws_a_sheet(tiny_run, tmp_path, capsys):
    from PIL import Image

    script = load_script("scripts/worst_slices.py")
    run, summary = tiny_run
    data_dir = json.loads((run / "config.json").read_text())["data"]
    out = tmp_path / "sheet.png"
    assert script.main([str(run), str(run), "--data", data_dir, "--n", "2", "--out", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = [ln.split() for ln in lines if ln.startswith("slice_")]
    n = sum(len(s["val"]) for s in json.loads((run / "splits.json").read_text())["folds"])
    assert len(rows) == n and all(r[1] == r[2] for r in rows)  # the same run twice: the same Dice
    dice = [float(r[1]) for r in rows]
    assert dice == sorted(dice)  # worst first
    assert Image.open(out).size == (256 * 3, 274 * 2)


def _history_run(path, curves, splits):
    path.mkdir()
    (path / "splits.json").write_text(json.dumps({"seed": 0, "folds": splits}))
    for k, curve in enumerate(curves, start=1):
        (path / f"fold_{k}").mkdir()
        lines = ["epoch,train_loss,val_loss,val_dice,val_dice_best,lr"]
        lines += [f"{e},1,1,0,{d},0.001" for e, d in enumerate(curve, start=1)]
        (path / f"fold_{k}" / "history.csv").write_text("\n".join(lines) + "\n")
    return path


def test_by_epoch_pairs_the_best_validation_dice_within_the_first_n_epochs(tmp_path, capsys):
    script = load_script("scripts/paired_folds.py")
    splits = [{"val": ["x"]}, {"val": ["y"]}]
    # a runs on past epoch 3 (a cap-150 run); b stopped at 3 (the cap-70 arm)
    a = _history_run(tmp_path / "a", [[0.2, 0.5, 0.4, 0.9], [0.1, 0.3, 0.6, 0.9]], splits)
    b = _history_run(tmp_path / "b", [[0.3, 0.6, 0.5], [0.2, 0.2, 0.5]], splits)
    rows, _ = script.load_history_folds(a, 3)
    assert [r["tuned"]["dice"] for r in rows] == [0.5, 0.6]  # epoch 4's 0.9 is past N
    assert script.main([str(a), str(b), "--by-epoch", "3"]) == 0
    out = capsys.readouterr().out
    assert "dice: A 0.5500, B 0.5500; B − A +0.0000" in out and "B better in 1 of 2 folds: +0.100, -0.100" in out
    # a fold short of epoch N, and another run's folds, are refused
    assert script.main([str(a), str(b), "--by-epoch", "4"]) == 2
    assert "fold 1 has 3 of the 4 epochs" in capsys.readouterr().err
    c = _history_run(tmp_path / "c", [[0.3, 0.6, 0.5], [0.2, 0.2, 0.5]], [{"val": ["y"]}, {"val": ["x"]}])
    assert script.main([str(a), str(c), "--by-epoch", "3"]) == 2 and "splits.json differ" in capsys.readouterr().err


def test_record_tta_writes_the_measured_modes_into_the_card(tmp_path, capsys):
    script = load_script("scripts/record_tta.py")
    splits = [{"val": ["x"]}, {"val": ["y"]}]
    run = _summary(tmp_path / "run", [0.70, 0.80], ggo=[0.5, 0.6], splits=splits)
    d4 = _summary(tmp_path / "run-tta-d4", [0.72, 0.79], ggo=[0.55, 0.6], splits=splits)
    doc = json.loads((d4 / "summary.json").read_text())
    doc["rescored"] = {"from": "run", "model_options": {"tta": "d4"}}
    (d4 / "summary.json").write_text(json.dumps(doc))
    card_path = tmp_path / "card.json"
    card_path.write_text(json.dumps({"cv": {"per_fold": json.loads((run / "summary.json").read_text())["per_fold"]}}))
    assert script.main([str(card_path), str(run), str(d4)]) == 0
    rec = json.loads(card_path.read_text())["tta_cv"]["d4"]
    assert rec["from"] == "run-tta-d4" and rec["dice"]["mean"] == 0.755
    assert rec["dice"]["paired"] == {"mean": 0.005, "sd": 0.0212, "better_folds": 1, "folds": 2}
    assert rec["dice_ground-glass"]["paired"]["mean"] == 0.025 and "dice_consolidation" not in rec
    assert "d4: CV Dice 0.755 (+0.0050" in capsys.readouterr().out
    # another run than the card's, or a summary that is not a rescored run, is refused
    other = _summary(tmp_path / "other", [0.6, 0.8], splits=splits)
    assert script.main([str(card_path), str(other), str(d4)]) == 2
    assert "not the run the card came from" in capsys.readouterr().err
    assert script.main([str(card_path), str(run), str(run)]) == 2
    assert "not run rescored" in capsys.readouterr().err
