"""scripts/record_per_slice.py: a card gets its own run's per-slice out-of-fold records, nothing else."""

from __future__ import annotations

import json

from tinydata import load_script


def _files(tmp_path, fold_dice=(0.6, 0.8), slice_dice=((0.5, 0.7), (0.8, 0.8)), card_tta=None, run_tta=None):
    rows = [{"slice": f"s{k}{i}", "fold": k, "dice": d, "precision": d, "recall": 1.0, "lesion_share": 0.1}
            for k, ds in enumerate(slice_dice, start=1) for i, d in enumerate(ds)]
    summary = {"per_fold": [{"fold": k, "tuned": {"dice": d}} for k, d in enumerate(fold_dice, start=1)],
               "per_slice": rows}
    if run_tta:
        summary["rescored"] = {"from": "run", "model_options": {"tta": run_tta}}
    run = tmp_path / "run-slices"
    run.mkdir(parents=True)
    (run / "summary.json").write_text(json.dumps(summary))
    card = {"config": {"tta": card_tta} if card_tta else {},
            "cv": {"per_fold": [{"fold": k, "tuned": {"dice": d}} for k, d in enumerate((0.6, 0.8), start=1)]},
            "sha256": "abc"}
    path = tmp_path / "card.json"
    path.write_text(json.dumps(card))
    return path, run, card


def test_records_the_runs_slices_and_changes_nothing_else(tmp_path, capsys):
    path, run, card = _files(tmp_path)
    assert load_script("scripts/record_per_slice.py").main([str(path), str(run)]) == 0
    new = json.loads(path.read_text())
    assert [r["slice"] for r in new["cv"].pop("per_slice")] == ["s10", "s11", "s20", "s21"]
    assert new == card
    assert "worst: s10 0.500 (fold 1)" in capsys.readouterr().out


def test_refuses_another_run_another_test_time_mode_or_slices_that_do_not_add_up(tmp_path, capsys):
    script = load_script("scripts/record_per_slice.py")
    cases = [({"fold_dice": (0.6, 0.81)}, "not the card's run"),
             ({"card_tta": "d4", "run_tta": "none"}, "scored with tta=none, the card runs with tta=d4"),
             ({"slice_dice": ((0.5, 0.5), (0.8, 0.8))}, "fold 1: its slices' mean Dice 0.5000")]
    for i, (kw, why) in enumerate(cases):
        path, run, card = _files(tmp_path / str(i), **kw)
        assert script.main([str(path), str(run)]) == 2
        assert why in capsys.readouterr().err
        assert json.loads(path.read_text()) == card
    path, run, _ = _files(tmp_path / "none")
    doc = json.loads((run / "summary.json").read_text())
    del doc["per_slice"]
    (run / "summary.json").write_text(json.dumps(doc))
    assert script.main([str(path), str(run)]) == 2 and "no per_slice records" in capsys.readouterr().err
