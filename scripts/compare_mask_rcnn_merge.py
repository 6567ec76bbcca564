"""Which Mask R-CNN merge makes its lesion probability mean what the dense models' means?

Usage: python scripts/compare_mask_rcnn_merge.py RUN_DIR [--min-scores 0.3,0.5] [--json OUT]

RUN_DIR is a finished Mask R-CNN k-fold run (``fold_<k>/mask-rcnn.safetensors``,
``splits.json``, ``config.json``). Each fold's model predicts its own validation slices
(out of fold) once per merge: ``score_x_mask`` (the shipped rule: detection score x
mask probability) and ``mask`` (mask probability of instances scoring at least S), the
same weights every time. Prints, per merge, the mean over folds of the per-image Dice
at the paper's 0.8 and at the threshold chosen on the *other* folds' predictions, and
the paired difference to ``score_x_mask`` (mean ± std over folds). Also per merge: the
expected calibration error of the raw probabilities and after the card's Platt map (fitted
nested: fold k by a map fitted on the other folds), and the Dice of those calibrated maps at a
threshold chosen on the other folds (what the app shows).

Decision rule, fixed before the run: the merge with the higher calibrated Dice ships when it is
higher in at least 4 of 5 folds; otherwise the one with the lower raw ECE (its probability
means more without a map).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--min-scores", default="0.3,0.5")
    ap.add_argument("--json")
    a = ap.parse_args(argv)
    from smallcovid.data.dataset import load_dataset
    from smallcovid.inference.evaluation import best_threshold, evaluate_maps, predict_set, threshold_sweep
    from smallcovid.inference.predictor import Predictor
    from smallcovid.models.checkpoint import load_weights
    from smallcovid.training.calibrate import calibrate_folds
    from smallcovid.training.config import TrainConfig
    from smallcovid.training.runfolder import fold_dir

    cfg = TrainConfig.from_dict(json.loads((a.run / "config.json").read_text()))
    if cfg.model != "mask-rcnn":
        raise SystemExit(f"{a.run}: a {cfg.model} run, not mask-rcnn")
    data = load_dataset(cfg.data)
    splits = json.loads((a.run / "splits.json").read_text())["folds"]
    variants = [("score_x_mask", None)] + [("mask", float(s)) for s in a.min_scores.split(",")]
    maps: dict[str, list] = {}
    sets = []
    for k, split in enumerate(splits, start=1):
        val = data.subset(split["val"])
        sets.append(val)
        model, card = load_weights(fold_dir(a.run, k) / "mask-rcnn.safetensors")
        for merge, min_score in variants:
            name = merge if min_score is None else f"mask>={min_score:g}"
            changes = {"merge": merge} | ({} if min_score is None else {"merge_min_score": min_score})
            model.config = dataclasses.replace(model.config, **changes)
            pred = Predictor(model, image_size=int(card.get("input_size", cfg.image_size)), card=card)
            maps.setdefault(name, []).append(predict_set(pred, val))
            model, card = load_weights(fold_dir(a.run, k) / "mask-rcnn.safetensors")  # fresh (Predictor fuses)
    rows = {}
    for name, per_fold in maps.items():
        at08, tuned = [], []
        for k, (m, val) in enumerate(zip(per_fold, sets)):
            others = [x for j, f in enumerate(per_fold) if j != k for x in f]
            other_samples = [s for j, v in enumerate(sets) if j != k for s in v.samples]
            t = best_threshold(threshold_sweep(others, other_samples))
            at08.append(evaluate_maps(m, val.samples, 0.8).summary.mean["dice"])
            tuned.append(evaluate_maps(m, val.samples, t).summary.mean["dice"])
        # What the app shows: probabilities through the card's Platt map (fitted nested, fold k on the others).
        cal = calibrate_folds(per_fold, [v.samples for v in sets])
        rows[name] = {"dice_at_0.8": at08, "dice_tuned": tuned, "ece_raw": cal["ece_before"],
                      "ece_calibrated": cal["ece_after"],
                      "dice_calibrated": [f["dice_at_threshold"] for f in cal["per_fold"]]}
    base = rows["score_x_mask"]
    for name, r in rows.items():
        d = np.array(r["dice_tuned"]) - np.array(base["dice_tuned"])
        dc = np.array(r["dice_calibrated"]) - np.array(base["dice_calibrated"])
        print(f"{name:14s} Dice@0.8 {np.mean(r['dice_at_0.8']):.3f}  tuned {np.mean(r['dice_tuned']):.3f} ± "
              f"{np.std(r['dice_tuned']):.3f}  paired vs score_x_mask {d.mean():+.3f} ± {d.std():.3f}  |  "
              f"ECE raw {r['ece_raw']:.3f} -> calibrated {r['ece_calibrated']:.3f}, calibrated Dice "
              f"{np.mean(r['dice_calibrated']):.3f} (paired {dc.mean():+.3f} ± {dc.std():.3f})")
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
