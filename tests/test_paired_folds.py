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
