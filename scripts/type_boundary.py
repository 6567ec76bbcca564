"""Measure the lesion-type boundary: ground-glass vs consolidation Dice when a lesion pixel is
called consolidation at p_cons / (p_ggo + p_cons) >= tau instead of the more likely type (tau 0.5).

    python scripts/type_boundary.py RUN [--data DIR]

Out of fold, on a finished run's fold models: each fold's validation slices through the app's
path (``predict_set``: framed on the lungs, gated) at that fold's tuned threshold, so tau 0.5
reproduces the run's per-type Dice. Prints the per-type Dice for each tau, then tau chosen
per fold on the other four folds only (nested) and its paired difference against tau 0.5.
Inference only: the weights are not changed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from smallcovid.data.dataset import load_dataset  # noqa: E402
from smallcovid.inference.evaluation import predict_set  # noqa: E402
from smallcovid.inference.metrics import confusion_counts, scores  # noqa: E402
from smallcovid.inference.predictor import Predictor  # noqa: E402
from smallcovid.models.checkpoint import load_weights  # noqa: E402

TAUS = tuple(round(float(t), 2) for t in np.arange(0.2, 0.81, 0.05))


def type_dice_at(maps, samples, threshold: float, tau: float) -> dict[int, float]:
    """Mean per-image Dice of each lesion type (1, 2) over the images holding it, type by ``tau``."""
    per: dict[int, list[float]] = {1: [], 2: []}
    for m, s in zip(maps, samples):
        if s.types is None:
            continue
        share = m.types[2] / np.maximum(m.types[1] + m.types[2], 1e-12)
        pred = np.where(m.lesion >= threshold, np.where(share >= tau, 2, 1), 0)
        for t in per:
            c = confusion_counts(pred == t, s.types == t)
            if (c.tp + c.fn)[0] > 0:
                per[t].append(float(scores(c)["dice"][0]))
    return {t: float(np.mean(v)) if v else float("nan") for t, v in per.items()}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("run", type=Path)
    p.add_argument("--data", help="the labeled folder (default: the run's)")
    a = p.parse_args()
    summary = json.loads((a.run / "summary.json").read_text())
    cfg = json.loads((a.run / "config.json").read_text())
    data = load_dataset(a.data or cfg["data"])
    splits = json.loads((a.run / "splits.json").read_text())["folds"]
    res: dict[int, dict[float, dict[int, float]]] = {}
    for f in summary["per_fold"]:
        k, thr = f["fold"], f["tuned"]["threshold"]
        model, _ = load_weights(a.run / f"fold_{k}" / f"{summary['model']}.safetensors")
        val = data.subset(splits[k - 1]["val"])
        maps = predict_set(Predictor(model, image_size=cfg["image_size"]), val)
        res[k] = {tau: type_dice_at(maps, val.samples, thr, tau) for tau in TAUS}
        print(f"fold {k}: threshold {thr}; tau 0.5 ground-glass {res[k][0.5][1]:.4f}, consolidation "
              f"{res[k][0.5][2]:.4f} (the run's: {f['tuned'].get('dice_ground-glass', float('nan')):.4f}, "
              f"{f['tuned'].get('dice_consolidation', float('nan')):.4f})")
    print("tau   ground-glass  consolidation  (mean over folds)")
    for tau in TAUS:
        print(f"{tau:.2f}  {np.mean([res[k][tau][1] for k in res]):.3f}         {np.mean([res[k][tau][2] for k in res]):.3f}")
    picks, dg, dc = [], [], []
    for k in res:  # nested: tau that maximises the mean of both types on the other folds
        others = [j for j in res if j != k]
        tau = max(TAUS, key=lambda t: np.mean([(res[j][t][1] + res[j][t][2]) / 2 for j in others]))
        picks.append(tau)
        dg.append(res[k][tau][1] - res[k][0.5][1])
        dc.append(res[k][tau][2] - res[k][0.5][2])
    print(f"nested tau per fold {picks}: ground-glass {np.mean(dg):+.3f} ± {np.std(dg, ddof=1):.3f}, "
          f"consolidation {np.mean(dc):+.3f} ± {np.std(dc, ddof=1):.3f} (paired over folds against tau 0.5)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
