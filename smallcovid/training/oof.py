"""Out-of-fold predictions of a cross-validation run: each fold's model on its own validation slices."""

from __future__ import annotations

from pathlib import Path

import torch

from smallcovid.data.dataset import LabeledSet
from smallcovid.inference.evaluation import predict_set
from smallcovid.inference.predictor import Predictor, ProbMaps
from smallcovid.models.calibration import Calibration
from smallcovid.models.checkpoint import load_weights
from smallcovid.training.config import TrainConfig
from smallcovid.training.runfolder import fold_dir


def oof_maps(out: Path, cfg: TrainConfig, data: LabeledSet, splits: list[dict[str, list[str]]],
             device: torch.device | str = "cpu") -> tuple[list[list[ProbMaps]], list[LabeledSet]]:
    """Raw (uncalibrated) maps of every fold's best model on that fold's validation slices.

    Args:
        out: the run folder holding ``fold_<k>/<model>.safetensors``.
        cfg: the run's config (model name, input size, threshold).
        data: the labeled set the run was trained on.
        splits: one ``{"train": stems, "val": stems}`` per fold, in fold order.

    Returns:
        ``(fold_maps, fold_sets)``: per fold, the maps and the validation subset, in the same order.
    """
    fold_maps: list[list[ProbMaps]] = []
    fold_sets: list[LabeledSet] = []
    for k, split in enumerate(splits, start=1):
        val = data.subset(split["val"])
        fold_maps.append(raw_maps(fold_dir(out, k) / f"{cfg.model}.safetensors", cfg.image_size, val, device,
                                  threshold=cfg.threshold))
        fold_sets.append(val)
    return fold_maps, fold_sets


def raw_maps(weights: Path, image_size: int, val: LabeledSet, device: torch.device | str = "cpu",
             threshold: float = 0.5) -> list[ProbMaps]:
    """Raw (uncalibrated) maps of the model in ``weights`` on the slices of ``val``, at ``image_size`` px
    (``threshold`` only sets the predictor's default; the maps are probabilities)."""
    model, _ = load_weights(weights, device=str(device))
    pred = Predictor(model, image_size=image_size, threshold=threshold, device=device, calibration=Calibration())
    return predict_set(pred, val)
