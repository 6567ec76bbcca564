"""A run folder's layout: fold folders, the training history file, raised epoch caps.

``<run>/fold_<k>/`` per cross-validation fold, ``<run>/final/`` for the all-data model
(fold 0); each holds ``history.csv`` (:data:`HISTORY_COLUMNS`, one row per epoch). A run
whose cap was raised (:func:`smallcovid.training.plateau.extend_run`) records each raise in
``extensions.json``; one that trained only some of its folds (``train(only_folds=...)``)
records them and their plateau check in ``partial.json``.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from smallcovid.core.fsutil import atomic_write_text
from smallcovid.training.config import TrainConfig

HISTORY_COLUMNS = ["epoch", "train_loss", "val_loss", "val_dice", "val_dice_best", "lr"]
FINAL_MODEL = "final model (all data)"  # how messages name fold 0
EXTENSIONS_FILE = "extensions.json"  # a run folder's raised epoch caps (plateau.extend_run)
PARTIAL_FILE = "partial.json"  # the folds a run trained alone (train(only_folds=...)), no summary yet


def fold_name(fold: int) -> str:
    """``"fold 3"`` for a cross-validation fold, ``"final model (all data)"`` for fold 0."""
    return FINAL_MODEL if fold == 0 else f"fold {fold}"


def fold_dir(out: Path, fold: int) -> Path:
    """Folder of fold ``fold`` (1-based) in run folder ``out``; fold 0 is ``final/``."""
    return out / ("final" if fold == 0 else f"fold_{fold}")


def read_extensions(out: Path) -> list[dict]:
    """The caps a run folder was raised to, oldest first: ``[{"from", "to", "folds"}]`` ([] if none)."""
    path = Path(out) / EXTENSIONS_FILE
    return json.loads(path.read_text()) if path.is_file() else []


def fold_caps(out: Path, cfg: TrainConfig) -> dict[int, int]:
    """Each cross-validation fold's epoch cap: the run's first cap, raised for the folds an
    extension reopened (a fold that passed its plateau check keeps the cap it stopped at)."""
    ext = read_extensions(out)
    caps = {k: ext[0]["from"] if ext else cfg.epochs for k in range(1, cfg.folds + 1)}
    for e in ext:
        caps.update({k: e["to"] for k in e["folds"]})
    return caps


def read_partial(out: Path) -> dict | None:
    """What a run folder trained with ``only_folds`` (``{"folds", "plateau"}``), or None."""
    path = Path(out) / PARTIAL_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def write_history(path: Path, rows: list[dict]) -> None:
    """Write the epoch rows to ``path`` as CSV with :data:`HISTORY_COLUMNS` (atomically)."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=HISTORY_COLUMNS, extrasaction="ignore")
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(path, buf.getvalue())
