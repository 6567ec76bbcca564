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
from smallcovid.training.runfolder import EXTENSIONS_FILE, fold_dir, read_extensions
from smallcovid.training.schedule import plateau_epochs

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

    Returns ``{"share", "ok", "per_fold": [...], "final_epochs", "extensions"}``;
    ``final_epochs`` is the epoch count the final all-data model trains (the "restarts"
    schedule's plateau cycle end, else ``cfg.epochs``); ``extensions`` lists the run's
    raised caps (see :func:`extend_run`).
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
            "per_fold": per_fold, "final_epochs": final, "extensions": read_extensions(out)}


def folds_short_at_cap(out: Path, cfg: TrainConfig) -> list[int]:
    """The folds of run folder ``out`` that trained up to the cap ``cfg.epochs`` with their best
    epoch past :data:`PLATEAU_SHARE` of it: those an extension reopens (a fold still training,
    or stopped at its plateau, is not one of them)."""
    short = []
    for k in range(1, cfg.folds + 1):
        path = fold_dir(out, k) / "resume" / "resume.json"
        if path.is_file():
            meta = json.loads(path.read_text())["meta"]
            if meta["epoch"] >= cfg.epochs and not fold_plateau(meta)["ok"]:
                short.append(k)
    return short


def snapshot_dir(out: Path, cap: int) -> Path:
    """Where :func:`extend_run` keeps the finished run ``out`` as it stood at ``cap`` epochs:
    the sibling folder ``<run>.cap<cap>``."""
    return Path(out).parent / f"{Path(out).name}.cap{cap}"


def extend_run(out: Path, epochs: int) -> list[int]:
    """Raise the epoch cap of a finished or interrupted "restarts" run folder to ``epochs``.

    With warm restarts the learning rate of an epoch does not depend on the cap, so a fold
    that ran into the old cap while still improving goes on exactly as if the cap had been
    higher from the start. Only folds that reached the old cap *and* fail the plateau check
    (best epoch past :data:`PLATEAU_SHARE` of the epochs trained) reopen: they lose their
    ``metrics.json`` and train on when the run is resumed. Folds that pass the check, at the
    cap or before it, are kept as they are. The summary is removed, since it depends on every
    fold. The final model is kept: it trains to the end of the cycle holding the folds' median
    best epoch, which an extension can only move later, so the resumed run continues it from
    its last epoch to the new count (exact, for the same reason as the folds) or, when the
    count did not change, keeps it as it is instead of training it again. The extension is
    recorded in ``extensions.json``, so the run's command (summary, card) reproduces it.

    A finished run is first copied whole to :func:`snapshot_dir` (``<run>.cap<old cap>``),
    itself a finished run folder: what the old cap gave (summary, final model, curves) can
    still be compared, paired over folds, or shipped while the extension trains.

    Returns the folds that will train on.

    Raises:
        SmallCovidError: not a run folder, another schedule, a cap not above the old one,
            no fold that ran into the cap short of its plateau, or another process training it.
    """
    import dataclasses
    import shutil

    from smallcovid.core.errors import SmallCovidError
    from smallcovid.core.fsutil import atomic_write_text
    from smallcovid.training.runlock import LOCK_FILE, hold_run

    cfg_path = Path(out) / "config.json"
    if not cfg_path.is_file():
        raise SmallCovidError(f"{out}: not a run folder (no config.json)")
    with hold_run(out):
        cfg = TrainConfig.from_dict(json.loads(cfg_path.read_text()))
        if cfg.schedule != "restarts":
            raise SmallCovidError(f"{out}: only a run with --schedule restarts can be extended (its learning "
                                  f"rate does not depend on the cap); this one uses {cfg.schedule!r}")
        if epochs <= cfg.epochs:
            raise SmallCovidError(f"{out}: the new cap {epochs} must be above the run's {cfg.epochs} epochs")
        reopen = folds_short_at_cap(out, cfg)
        if not reopen:
            raise SmallCovidError(f"{out}: no fold ran into the {cfg.epochs}-epoch cap short of its plateau; "
                                  "nothing to extend")
        if (Path(out) / "summary.json").is_file():
            snap = snapshot_dir(out, cfg.epochs)
            shutil.rmtree(snap, ignore_errors=True)  # a copy left half-written by an interrupted extension
            shutil.copytree(out, snap, ignore=shutil.ignore_patterns(LOCK_FILE))
        for k in reopen:
            (fold_dir(out, k) / "metrics.json").unlink(missing_ok=True)
        record = read_extensions(out) + [{"from": cfg.epochs, "to": epochs, "folds": reopen}]
        atomic_write_text(Path(out) / EXTENSIONS_FILE, json.dumps(record, indent=1))
        atomic_write_text(cfg_path, dataclasses.replace(cfg, epochs=epochs).to_json())
        (Path(out) / "summary.json").unlink(missing_ok=True)
    return reopen
