"""Fold ensembles: the k fold models of one architecture, probabilities averaged.

A cross-validation run leaves one model per fold; averaging their probability
maps usually beats the single final model. Members run uncalibrated; the
ensemble applies one calibration (the architecture card's) to the average.
Shipped fold models live in ``weights/<name>-folds/fold_<k>.safetensors`` (+ card);
a training run folder's ``fold_<k>/`` works too.
"""

from __future__ import annotations

import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from smallcovid.core.devices import resolve_device
from smallcovid.core.errors import SmallCovidError
from smallcovid.data.preprocess import Window
from smallcovid.inference.framing import segment_slice
from smallcovid.inference.predictor import DEFAULT_THRESHOLD, Predictor, ProbMaps, load_predictor, weights_dir
from smallcovid.models.calibration import Calibration
from smallcovid.models.checkpoint import load_weights, read_card

log = logging.getLogger(__name__)

ENSEMBLES = ("none", "folds")


class EnsemblePredictor:
    """Averages the maps of several :class:`Predictor` s of one architecture.

    Has the predictor interface the app, CLI and evaluation use: ``name``,
    ``threshold``, ``card``, ``image_size``, ``params``, :meth:`predict_images`,
    :meth:`predict_scan`.
    """

    def __init__(self, members: Sequence[Predictor], *, card: dict, threshold: float,
                 calibration: Calibration | None = None, min_members: int = 2) -> None:
        if len(members) < min_members:
            raise SmallCovidError(f"a fold ensemble needs at least {min_members} models, got {len(members)}")
        names = {m.name for m in members}
        if len(names) != 1:
            raise SmallCovidError(f"a fold ensemble mixes architectures: {', '.join(sorted(names))}")
        sizes = {m.image_size for m in members}
        if len(sizes) != 1:
            raise SmallCovidError(f"a fold ensemble mixes input sizes: {', '.join(map(str, sorted(sizes)))}")
        self.members = list(members)
        self.name = members[0].name
        self.card = card
        self.threshold = float(threshold)
        self.calibration = calibration or Calibration()
        self.image_size = members[0].image_size
        self.params = sum(m.params for m in members)
        self.device = members[0].device
        self._pool: ThreadPoolExecutor | None = None  # created on first use (CPU only)

    def _resize_in(self, chunk: Sequence[np.ndarray]) -> torch.Tensor:
        """The members' common model input, resized once for all of them."""
        return self.members[0]._resize_in(chunk)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 1, s, s) -> (N, 4, s, s): the mean of the members' raw maps, lesion channel then calibrated.

        On a CPU with two or more torch threads the members run two at a time: a small
        model's forward pass does not keep both cores busy (one paired measurement: five
        SmallCovid-Nets in 29 ms instead of 33 ms per 512x512 slice on two cores). The sum is taken in
        member order either way, so the result does not depend on which finished first.
        """
        if self.device.type == "cpu" and torch.get_num_threads() >= 2 and len(self.members) > 1:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="ensemble")
            maps = list(self._pool.map(lambda m: m._forward(x), self.members))
        else:
            maps = [m._forward(x) for m in self.members]
        probs = maps[0]
        for m in maps[1:]:
            probs += m
        probs /= len(self.members)
        probs[:, :1] = self.calibration.apply_torch(probs[:, :1])
        return probs

    def with_members(self, members: Sequence[Predictor]) -> "EnsemblePredictor":
        """Some of the members (one or more) with this ensemble's card, threshold and calibration,
        e.g. the fold model that held a slice out (:mod:`smallcovid.inference.outoffold`)."""
        sub = EnsemblePredictor(members, card=self.card, threshold=self.threshold, calibration=self.calibration,
                                min_members=1)
        sub._pool = self._pool  # two threads at most, however many subsets run
        return sub

    @property
    def tta(self) -> str:
        """The members' test-time augmentation (the first member's, as all share one card's recipe)."""
        return self.members[0].tta

    def with_tta(self, mode: str | None) -> "EnsemblePredictor":
        """This ensemble with every member's test-time augmentation set to ``mode`` (None: the cards')."""
        return self.with_members([m.with_tta(mode) for m in self.members])

    # One resize in and one resize back for the whole ensemble: the single model's code
    # running on the averaged maps (a fold ensemble costs members x the forward pass only).
    predict_images = Predictor.predict_images
    predict_levels = Predictor.predict_levels

    def predict_scan(self, scan, window: Window | None = None) -> ProbMaps:
        """Predict one :class:`smallcovid.io.Slice` like :meth:`Predictor.predict_scan` (``window``: display only)."""
        return segment_slice(self, scan)[0]


def fold_weight_files(source: str | os.PathLike, name: str) -> list[Path]:
    """The fold models' weights files in ``source`` (a run folder or a shipped ``<name>-folds/``).

    Raises:
        SmallCovidError: fewer than two fold models found.
    """
    src = Path(source)
    files = sorted(src.glob(f"fold_*/{name}.safetensors")) or sorted(src.glob("fold_*.safetensors"))
    files = [f for f in files if f.with_suffix(".json").is_file()]
    if len(files) < 2:
        raise SmallCovidError(
            f"{src}: no fold models of {name!r} found (expected fold_<k>/{name}.safetensors or "
            f"fold_<k>.safetensors, each with its .json card)"
        )
    return files


def shipped_folds_dir(name: str) -> Path:
    """Where the shipped fold models of ``name`` live: ``weights/<name>-folds/``."""
    return weights_dir() / f"{name}-folds"


def load_ensemble(name: str, *, weights: str | os.PathLike | None = None, device: str = "auto") -> EnsemblePredictor:
    """The fold ensemble of ``name``: shipped fold models, or those of a training run folder.

    The ensemble's threshold and calibration come from the architecture's card:
    the shipped ``weights/<name>.json``, or the run's ``final/`` card when ``weights``
    is a finished run folder (else fold 1's card, uncalibrated).

    Raises:
        SmallCovidError: fewer than two fold models, or unreadable weights.
    """
    dev = resolve_device(device)
    source = Path(weights) if weights is not None else shipped_folds_dir(name)
    members = []
    for path in fold_weight_files(source, name):
        model, card = load_weights(path, device=str(dev))
        if card.get("architecture") != name:
            raise SmallCovidError(f"{path}: holds a {card.get('architecture')!r} model, not {name!r}")
        members.append(Predictor(model, image_size=int(card.get("input_size", 256)), card=card,
                                 device=dev, calibration=Calibration()))
    if weights is None:  # the architecture's shipped card, or (fold models alone) fold 1's
        card = read_card(weights_dir() / f"{name}.json") or members[0].card
    else:
        final = source / "final" / f"{name}.json"
        card = read_card(final) if final.is_file() else _run_card(source) or members[0].card
    return EnsemblePredictor(members, card=card, threshold=float(card.get("threshold", DEFAULT_THRESHOLD)),
                             calibration=Calibration.from_dict(card.get("calibration")))


def _run_card(run: Path) -> dict | None:
    """For a finished run folder without a final model: its fold models' threshold and calibration
    from ``summary.json`` (the calibrated threshold when calibrated); None when there is no summary."""
    try:
        summary = json.loads((run / "summary.json").read_text())
    except (OSError, ValueError):
        return None
    cal = summary.get("calibration")
    threshold = cal["threshold"] if cal else summary.get("recommended_threshold", DEFAULT_THRESHOLD)
    return {"architecture": summary.get("model"), "threshold": threshold, "calibration": cal}


def load_model(name: str | None = None, *, weights: str | os.PathLike | None = None, device: str = "auto",
               ensemble: str = "none") -> Predictor | EnsemblePredictor:
    """:func:`~smallcovid.inference.predictor.load_predictor` or, with ``ensemble="folds"``, :func:`load_ensemble`."""
    if ensemble not in ENSEMBLES:
        raise SmallCovidError(f"ensemble must be one of {', '.join(ENSEMBLES)}, got {ensemble!r}")
    if ensemble == "none":
        return load_predictor(name, weights=weights, device=device)
    if name is None:
        raise SmallCovidError("a fold ensemble needs a model name (--model)")
    return load_ensemble(name, weights=weights, device=device)
