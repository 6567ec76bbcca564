"""scripts/replace_folds.py: a shipped run rebuilt with one fold trained again (train.py --only-folds)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from smallcovid.core.errors import SmallCovidError
from smallcovid.training.config import TrainConfig
from smallcovid.training.loop import train
from tinydata import load_script

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.usefixtures("one_thread")


def _ship(run: Path, out: Path) -> None:
    proc = subprocess.run([sys.executable, "scripts/ship_weights.py", str(run), "--out", str(out), "--folds"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr


def test_a_fold_trained_again_alone_rebuilds_the_same_run_and_ships(tiny_run, tiny_cfg, tmp_path):
    script = load_script("scripts/replace_folds.py")
    weights = tmp_path / "weights"
    _ship(tiny_run[0], weights)
    cfg = tiny_cfg(final=True)
    partial = tmp_path / "partial"
    train(cfg, partial, only_folds=[2])  # the same recipe and fold: the same fold-2 model
    data = Path(cfg.data)
    summary = script.rebuild(weights / "smallcovid-net.json", partial, data, tmp_path / "rebuilt")
    original = tiny_run[1]
    assert summary["tuned"]["dice"]["mean"] == pytest.approx(original["tuned"]["dice"]["mean"], abs=1e-6)
    assert summary["recommended_threshold"] == original["recommended_threshold"]
    assert [f["best_epoch"] for f in summary["plateau"]["per_fold"]] == [
        f["best_epoch"] for f in original["plateau"]["per_fold"]]
    assert summary["replaced_folds"]["folds"] == [2] and "--only-folds 2" in summary["command"]
    assert summary["command"].startswith(json.loads((weights / "smallcovid-net.json").read_text())["command"])
    # ... and it ships like any finished run: the card carries the rebuilt CV and the fold's curve
    _ship(tmp_path / "rebuilt", tmp_path / "weights2")
    card = json.loads((tmp_path / "weights2" / "smallcovid-net.json").read_text())
    assert card["cv"]["tuned"]["dice"]["mean"] == pytest.approx(summary["tuned"]["dice"]["mean"])
    assert card["replaced_folds"]["folds"] == [2] and set(card["histories"]) == {"0", "1", "2"}
    assert card["training"]["config"]["epochs"] == cfg.epochs
    assert (tmp_path / "weights2" / "smallcovid-net-folds" / "fold_2.safetensors").is_file()

    # refused: another recipe, other data, an existing output folder
    other = tmp_path / "other"
    train(TrainConfig.from_dict({**json.loads(cfg.to_json()), "lr": 5e-3}), other, only_folds=[1])
    with pytest.raises(SmallCovidError, match="lr"):
        script.rebuild(weights / "smallcovid-net.json", other, data, tmp_path / "x")
    with pytest.raises(SmallCovidError, match="exists"):
        script.rebuild(weights / "smallcovid-net.json", partial, data, tmp_path / "rebuilt")
    with pytest.raises(SmallCovidError, match="partial.json"):
        script.rebuild(weights / "smallcovid-net.json", tiny_run[0], data, tmp_path / "y")
