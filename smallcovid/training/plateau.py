"""The plateau check: did every fold stop improving before its schedule ended?

A fold passes when its best epoch (highest validation Dice, the one whose weights are
kept) lies in the first three quarters of the epochs it trained. A later best epoch
means the curve was still rising when the schedule ran out, so a longer schedule
could have given a better model. The summary and the final card carry this check and
the validation curves it rests on.
"""

from __future__ import annotations

import json
from pathlib import Path

from smallcovid.training.config import TrainConfig
from smallcovid.training.fold import fold_dir, plateau_epochs

PLATEAU_SHARE = 0.75  # the best epoch must fall in this leading share of the epochs trained


def fold_plateau(meta: dict) -> dict:
    """One fold's check from its resume record ``meta`` (``epoch``, ``best_epoch``, ``history``).

    Returns ``{"best_epoch", "epochs_run", "ok", "curve"}``; ``curve`` is the validation
    Dice (best over the selection thresholds) per epoch, rounded to 4 decimals.
    """
    run, best = int(meta["epoch"]), int(meta["best_epoch"])
    curve = [round(float(r["val_dice_best"]), 4) for r in meta.get("history", []) if r.get("val_dice_best") is not None]
    return {"best_epoch": best, "epochs_run": run, "ok": run > 0 and best <= PLATEAU_SHARE * run, "curve": curve}


def plateau_report(out: Path, cfg: TrainConfig, folds: int) -> dict:
    """The run's plateau check over its ``folds`` folds (read from each ``fold_<k>/resume``).

    Returns ``{"share", "ok", "per_fold": [...], "final_epochs"}``; ``final_epochs`` is the
    epoch count the final all-data model trains (the "restarts" schedule's plateau cycle
    end, else ``cfg.epochs``).
    """
    per_fold = []
    for k in range(1, folds + 1):
        path = fold_dir(out, k) / "resume" / "resume.json"
        if not path.is_file():
            continue
        per_fold.append({"fold": k, **fold_plateau(json.loads(path.read_text())["meta"])})
    bests = [f["best_epoch"] for f in per_fold]
    final = plateau_epochs(cfg, bests) or cfg.epochs
    return {"share": PLATEAU_SHARE, "ok": bool(per_fold) and all(f["ok"] for f in per_fold),
            "per_fold": per_fold, "final_epochs": final}
