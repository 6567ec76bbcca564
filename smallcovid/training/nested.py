"""What a fold ensemble gains over one model, measured without touching the slices it is scored on.

Shipping a fold ensemble means: the k fold models of a cross-validation run (each
trained on (k-1)/k of the data) averaged, instead of the one final model trained on
all of it. The honest measurement repeats that choice inside each outer fold of a
finished run: the outer fold's training slices get their own inner k'-fold run with
the same recipe; the average of the inner fold models and the outer fold's own model
(trained on all the outer training slices, as the final model is on all data) then
predict the outer fold's validation slices, which neither has seen.

An inner run is an ordinary run folder (``<out>/outer_<k>/``), so an interrupted
measurement resumes where it stopped.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Sequence

import torch

from smallcovid.core.errors import SmallCovidError
from smallcovid.core.fsutil import atomic_write_text
from smallcovid.data.dataset import load_dataset, load_splits, make_splits, save_splits
from smallcovid.inference.ensemble import EnsemblePredictor
from smallcovid.inference.evaluation import DEFAULT_SWEEP, predict_set, threshold_sweep
from smallcovid.inference.predictor import Predictor
from smallcovid.models.calibration import Calibration
from smallcovid.models.checkpoint import load_weights
from smallcovid.training.config import TrainConfig
from smallcovid.training.runfolder import fold_dir
from smallcovid.training.loop import train

log = logging.getLogger(__name__)


def nested_ensemble(run: str | Path, out: str | Path, *, inner_folds: int = 4, outer: Sequence[int] | None = None,
                    data: str | None = None, device: str = "cpu") -> dict:
    """Train the inner runs (or resume them) and compare ensemble and single model per outer fold.

    Args:
        run: a finished cross-validation run folder (``config.json``, ``splits.json``, fold models).
        out: parent folder of the inner runs and of ``nested.json`` (the returned dict).
        inner_folds: folds of each inner run (the ensemble's size), at least 2.
        outer: 1-based outer folds to measure (default: all).
        data: the labeled folder, when it moved since the run (default: the run's config).

    Returns:
        ``{"outer": [{"fold", "n_val", "single", "ensemble"}...], "mean": {...}, ...}`` where
        ``single`` / ``ensemble`` map each threshold of the sweep to the mean per-image Dice
        on the outer fold's validation slices (full resolution, uncalibrated probabilities).

    Raises:
        SmallCovidError: the run folder is incomplete, or ``outer`` names a fold it lacks.
    """
    run, out = Path(run), Path(out)
    cfg = TrainConfig.from_dict(json.loads((run / "config.json").read_text()))
    if data:
        cfg = dataclasses.replace(cfg, data=str(data))
    labeled = load_dataset(cfg.data)
    splits = load_splits(run / "splits.json", labeled.stems)
    chosen = list(outer) if outer else list(range(1, len(splits) + 1))
    bad = [k for k in chosen if not 1 <= k <= len(splits)]
    if bad:
        raise SmallCovidError(f"outer fold(s) {bad} do not exist; the run has folds 1..{len(splits)}")
    if inner_folds < 2:
        raise SmallCovidError(f"inner_folds must be at least 2, got {inner_folds}")
    rows = []
    for k in chosen:
        outer_model = fold_dir(run, k) / f"{cfg.model}.safetensors"
        if not outer_model.is_file():
            raise SmallCovidError(f"{outer_model}: missing; finish the run first")
        inner_dir = out / f"outer_{k}"
        inner_dir.mkdir(parents=True, exist_ok=True)
        inner_splits = inner_dir / "inner_splits.json"
        if not inner_splits.is_file():
            save_splits(inner_splits, make_splits(splits[k - 1]["train"], inner_folds, cfg.seed), cfg.seed)
        inner_cfg = dataclasses.replace(cfg, folds=inner_folds, splits=str(inner_splits), final=False)
        log.info("outer fold %d: inner %d-fold run in %s", k, inner_folds, inner_dir)
        train(inner_cfg, inner_dir)
        val = labeled.subset(splits[k - 1]["val"])
        single = _predictor(outer_model, cfg, device)
        members = [_predictor(fold_dir(inner_dir, j) / f"{cfg.model}.safetensors", cfg, device)
                   for j in range(1, inner_folds + 1)]
        ens = EnsemblePredictor(members, card={}, threshold=cfg.threshold, calibration=Calibration())
        rows.append({"fold": k, "n_val": len(val),
                     "single": threshold_sweep(predict_set(single, val), val.samples),
                     "ensemble": threshold_sweep(predict_set(ens, val), val.samples)})
    result = {"run": str(run), "model": cfg.model, "inner_folds": inner_folds, "outer": rows,
              "mean": {kind: {t: sum(r[kind][t] for r in rows) / len(rows) for t in DEFAULT_SWEEP}
                       for kind in ("single", "ensemble")}}
    atomic_write_text(out / "nested.json", json.dumps(result, indent=1))
    return result


def _predictor(path: Path, cfg: TrainConfig, device: str) -> Predictor:
    model, _ = load_weights(path, device=device)
    return Predictor(model, image_size=cfg.image_size, threshold=cfg.threshold, device=torch.device(device),
                     calibration=Calibration())
