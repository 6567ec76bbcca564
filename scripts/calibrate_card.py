"""Fit a shipped model's calibration on a cross-validation run of its recipe and write it into its card.

    python scripts/calibrate_card.py RUN_DIR weights/segnet.json [--data DIR] [--method operating-point]

RUN_DIR is a finished ``train.py`` run (same command as the card's) with its fold
models. The fold models predict their own validation slices; the calibration is
fitted on those out-of-fold maps (nested figures for the report) and stored in the
card, with ``threshold`` set to the best out-of-fold threshold on calibrated maps. The weights file and
its sha256 do not change. Also records the run's cross-validated Dice as
``cv_rerun`` so the card shows that its command reproduces its figures, and the
run's per-fold training curves as ``histories``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from smallcovid.app.runview import card_histories
from smallcovid.core.fsutil import atomic_write_text
from smallcovid.data.dataset import load_dataset
from smallcovid.training.calibrate import calibrate_folds
from smallcovid.training.config import TrainConfig
from smallcovid.training.oof import oof_maps


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run")
    p.add_argument("card")
    p.add_argument("--data", help="labeled folder (default: the run's config)")
    p.add_argument("--method", default="platt", choices=["platt", "operating-point"])
    a = p.parse_args()
    run, card_path = Path(a.run), Path(a.card)
    summary = json.loads((run / "summary.json").read_text())
    cfg = TrainConfig.from_dict(json.loads((run / "config.json").read_text()))
    data = load_dataset(a.data or cfg.data)
    splits = json.loads((run / "splits.json").read_text())["folds"]
    card = json.loads(card_path.read_text())
    if card.get("architecture") != cfg.model:
        raise SystemExit(f"{card_path} is a {card.get('architecture')} card, the run trained {cfg.model}")
    fold_maps, fold_sets = oof_maps(run, cfg, data, splits)
    cal = calibrate_folds(fold_maps, [vs.samples for vs in fold_sets], method=a.method)
    card["threshold_uncalibrated"] = card.get("threshold_uncalibrated", card["threshold"])
    card["calibration"] = cal
    card["threshold"] = cal["threshold"]
    # Cards name the data, not this machine's path to it.
    command = summary["command"].replace(cfg.data, "data/" + "/".join(Path(cfg.data).resolve().parts[-2:]))
    card["cv_rerun"] = {"command": command, "tuned_dice": summary["tuned"]["dice"],
                        "recommended_threshold": summary["recommended_threshold"], "device": summary["device"],
                        "elapsed_s": summary["elapsed_s"]}
    # The rerun's per-fold training curves, for the Models page (fold -> column -> values).
    card["histories"] = card_histories(run)
    card["histories_from"] = "cv_rerun"
    atomic_write_text(card_path, json.dumps(card, indent=2) + "\n")
    print(f"{card_path}: a={cal['a']:.3f} b={cal['b']:.3f}  ECE {cal['ece_before']:.4f} -> {cal['ece_after']:.4f} "
          f"(Platt {cal['ece_platt']:.4f}); threshold {cal['threshold']}: Dice {cal['dice_at_threshold']['mean']:.3f} "
          f"± {cal['dice_at_threshold']['std']:.3f}; at {cal['target_threshold']}: "
          f"{cal['dice_at_target']['mean']:.3f} ± {cal['dice_at_target']['std']:.3f}; "
          f"rerun CV Dice {summary['tuned']['dice']['mean']:.4f} (card {card['cv']['tuned']['dice']['mean']:.4f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
