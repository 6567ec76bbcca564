"""scripts/ship_weights.py: a run's final model and fold models into a weights folder."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from smallcovid.data.dataset import load_dataset
from smallcovid.data.fingerprint import card_fingerprints, slice_fingerprint
from smallcovid.inference.ensemble import load_ensemble
from smallcovid.models.checkpoint import load_weights
from tinydata import load_script

REPO = Path(__file__).resolve().parent.parent


def test_ships_final_and_fp16_fold_models_that_load_as_an_ensemble(copy_run, tmp_path, monkeypatch):
    out = tmp_path / "weights"
    proc = subprocess.run([sys.executable, "scripts/ship_weights.py", str(copy_run), "--out", str(out),
                           "--folds", "--folds-fp16"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    card = json.loads((out / "smallcovid-net.json").read_text())
    assert card["weights_dtype"] == "float32" and str(copy_run) not in json.dumps(card)  # no machine paths
    assert set(card["histories"]) == {"0", "1", "2"} and len(card["histories"]["1"]["val_dice"]) == 2
    folds = sorted((out / "smallcovid-net-folds").glob("fold_*.safetensors"))
    assert [f.name for f in folds] == ["fold_1.safetensors", "fold_2.safetensors"]
    splits = json.loads((copy_run / "splits.json").read_text())["folds"]
    data = load_dataset(json.loads((copy_run / "config.json").read_text())["data"])
    prints = {s.stem: slice_fingerprint(s.image) for s in data.samples}
    assert card_fingerprints(card) == set(prints.values())  # the final model trained on every slice
    for k, f in enumerate(folds, start=1):
        _, fcard = load_weights(f)
        assert fcard["weights_dtype"] == "float16" and fcard["fold"] == k and fcard["val_stems"] == splits[k - 1]["val"]
        assert card_fingerprints(fcard) == {prints[s] for s in splits[k - 1]["train"]}

    # Cards shipped before they listed their training slices get them from the data they name.
    script = load_script("scripts/card_fingerprints.py")
    for path in [out / "smallcovid-net.json", *(out / "smallcovid-net-folds").glob("fold_*.json")]:
        c = json.loads(path.read_text())
        del c["training_slices"]
        path.write_text(json.dumps(c, indent=2) + "\n")
    other = json.loads((out / "smallcovid-net-folds" / "fold_2.json").read_text())
    (out / "smallcovid-net-folds" / "fold_2.json").write_text(json.dumps({**other, "data_sha256": "0" * 64}))
    data_dir = Path(json.loads((copy_run / "config.json").read_text())["data"])
    lines = script.add_fingerprints(data_dir, out)
    assert sum("training slices listed" in ln for ln in lines) == 2 and sum("other data" in ln for ln in lines) == 1
    assert card_fingerprints(json.loads((out / "smallcovid-net.json").read_text())) == set(prints.values())
    assert card_fingerprints(json.loads((out / "smallcovid-net-folds" / "fold_1.json").read_text())) == {
        prints[s] for s in splits[0]["train"]}
    assert card_fingerprints(json.loads((out / "smallcovid-net-folds" / "fold_2.json").read_text())) == frozenset()
    assert all("already" in ln for ln in script.add_fingerprints(data_dir, out) if "fold_2" not in ln)
    assert proc.stdout.count("out-of-fold Dice") == 2
    monkeypatch.setenv("SMALLCOVID_WEIGHTS_DIR", str(out))
    ens = load_ensemble("smallcovid-net", device="cpu")
    assert len(ens.members) == 2 and ens.threshold == card["threshold"]


def test_folds_only_ships_a_cv_run_without_final_model(copy_run, tmp_path):
    import shutil

    shutil.rmtree(copy_run / "final")
    out = tmp_path / "weights"
    proc = subprocess.run([sys.executable, "scripts/ship_weights.py", str(copy_run), "--out", str(out),
                           "--folds-only", "--folds-fp16"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert not (out / "smallcovid-net.safetensors").exists()
    _, card = load_weights(out / "smallcovid-net-folds" / "fold_2.safetensors")
    assert card["weights_dtype"] == "float16" and card["input_size"] == 32 and card["data_sha256"]
    assert str(copy_run) not in json.dumps(card) and "--data" in card["command"]


def test_training_time_adds_the_cv_part_only_when_the_card_lacks_it(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("ship_weights", Path(__file__).parent.parent / "scripts" / "ship_weights.py")
    ship = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ship)
    assert ship._training_time(tmp_path, {"training_time_s": 100.0}) == 100.0  # no summary.cv.json
    (tmp_path / "summary.cv.json").write_text(json.dumps({"elapsed_s": 500.0}))
    assert ship._training_time(tmp_path, {"training_time_s": 100.0}) == 600.0  # final model alone on the card
    assert ship._training_time(tmp_path, {"training_time_s": 620.0}) == 620.0  # the clock counted the CV part
    assert ship._training_time(tmp_path, {}) is None
