"""Training one fold: start or resume, run epochs, validate, keep the best, stop early.

Reading order: :func:`train_fold` is the whole story in a few lines; each step below
it owns one concern — :func:`_resume_or_start` (resume), :func:`_run_epoch` and
:func:`_train_step` (batches, learning-rate schedule, mixed precision via
:class:`MixedPrecision`), :func:`_after_epoch` (validation, best-epoch choice,
checkpointing, the epoch's progress event) and :func:`_stopped_early` (patience).

A fold folder (:func:`~smallcovid.training.runfolder.fold_dir`) holds ``<model>.safetensors`` + ``.json`` (best epoch),
``history.csv`` and ``resume/`` (last completed epoch). The run folder's ``clock.json``
(:data:`smallcovid.training.progress.CLOCK_FILE`) holds the run's training time so far, so that a resumed run's
elapsed time (summary ``elapsed_s``, card ``training_time_s``) counts every part of it.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from smallcovid.core.errors import SmallCovidError
from smallcovid.data.augment import AugmentConfig, augment_batch
from smallcovid.data.dataset import LabeledSet
from smallcovid.data.fingerprint import fingerprint_record
from smallcovid.models import SegmentationModel, build_model
from smallcovid.models.checkpoint import load_weights, save_weights
from smallcovid.training.config import TrainConfig
from smallcovid.training.context import FoldContext
from smallcovid.models.fuse import uses_channels_last
from smallcovid.training.precision import MixedPrecision
from smallcovid.training.progress import TrainingCancelled
from smallcovid.training.pseudo import STRONG_AUGMENT
from smallcovid.training.runfolder import write_history
from smallcovid.training.schedule import cycle_ends, lr_at
from smallcovid.training.state import load_state, save_state
from smallcovid.training.tensors import Tensors, to_tensors, validate

log = logging.getLogger(__name__)


@dataclass
class FoldState:
    """What changes while a fold trains.

    ``meta`` is the JSON half of the resume record (keys ``epoch`` — last completed,
    0 before the first — ``best``, ``best_epoch`` and ``history``, one row per epoch);
    its layout is part of the run-folder format.
    """

    model: SegmentationModel
    optimizer: torch.optim.Optimizer
    amp: MixedPrecision
    train_t: Tensors
    val_t: Tensors | None  # None: the final all-data model, nothing to validate on
    steps: int  # batches per epoch
    meta: dict[str, Any]
    pseudo: Tensors | None = None  # a student's pseudo-labeled slices, mixed into every batch


def train_fold(ctx: FoldContext, train_set: LabeledSet, val_set: LabeledSet | None, *,
               pseudo: Tensors | None = None, init: Path | None = None,
               train_tensors: Tensors | None = None) -> SegmentationModel:
    """Train (or finish training) one fold; returns its chosen model on the run's device.

    ``val_set=None`` trains the final all-data model, which keeps its last epoch.
    A student gets ``pseudo`` (pseudo-labeled slices) and starts from the weights at ``init``.
    ``train_tensors`` replaces ``train_set`` as what it trains on (distillation's soft labels:
    masks of probabilities, cut at 0.5 for a model without ``soft_targets``).
    """
    if "training_slices" not in (ctx.card or {}):  # which slices the weights saw (the app flags in-sample scores)
        ctx = dataclasses.replace(ctx, card={**(ctx.card or {}), "training_slices": fingerprint_record(
            s.image for s in train_set.samples)})
    state = _resume_or_start(ctx, train_set, val_set, init, train_tensors)
    state.pseudo = pseudo
    while state.meta["epoch"] < ctx.epochs and not _stopped_early(ctx, state):
        started = time.perf_counter()
        row = _run_epoch(ctx, state)
        _after_epoch(ctx, state, row, started)
    if state.meta["epoch"] < ctx.epochs:
        log.info("%s: early stop at epoch %d (best %d)", ctx.name, state.meta["epoch"], state.meta["best_epoch"])
        ctx.run.clock.skip(ctx.epochs - state.meta["epoch"])
    best, _ = load_weights(ctx.weights_path, device=str(ctx.run.device))
    return best


def _resume_or_start(ctx: FoldContext, train_set: LabeledSet, val_set: LabeledSet | None,
                     init: Path | None = None, train_tensors: Tensors | None = None) -> FoldState:
    """Build the model (from ``init``'s weights if given) and optimizer, then restore the
    last completed epoch if ``resume/`` has one."""
    cfg, device = ctx.cfg, ctx.run.device
    # Seeded per fold, before the model is built, so a fold's initial weights do not
    # depend on which folds ran (or were skipped) before it in this process.
    torch.manual_seed(cfg.seed * 1000 + ctx.fold)
    model = new_model(cfg)
    if init is not None:
        start, _ = load_weights(init)
        model.load_state_dict(start.state_dict())
    model = model.to(device)
    if uses_channels_last(model, device):
        model = model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(cfg, model)
    train_t = to_tensors(train_set, cfg.image_size) if train_tensors is None else train_tensors
    if train_tensors is not None and not model.soft_targets:
        train_t = (train_t[0], (train_t[1] >= 0.5).float(), train_t[2].clamp(min=0))
    val_t = to_tensors(val_set, cfg.image_size) if val_set is not None else None
    steps = cfg.steps_per_epoch or math.ceil(len(train_t[0]) / cfg.batch_size)
    if ctx.stage == "pretrain":  # one pass over the pool, whatever the labeled epochs' length
        steps = math.ceil(len(train_t[0]) / cfg.batch_size)
    meta = load_state(ctx.dir / "resume", model, optimizer) or {"epoch": 0, "best": -1.0, "best_epoch": 0, "history": []}
    ctx.run.clock.skip(meta["epoch"])  # epochs finished before an interruption
    return FoldState(model, optimizer, MixedPrecision(device, cfg.precision), train_t, val_t, steps, meta)


def _stopped_early(ctx: FoldContext, state: FoldState) -> bool:
    """Patience ran out (``patience`` epochs since the best one), or, with the "restarts"
    schedule, a whole restart cycle ended without beating the best epoch before it. Also
    true for a resumed fold that had stopped early, so resuming never trains it further."""
    patience, m = ctx.cfg.patience, state.meta
    if state.val_t is None or m["epoch"] == 0:
        return False
    if patience and m["epoch"] - m["best_epoch"] >= patience:
        return True
    if ctx.cfg.schedule == "restarts":
        ends = cycle_ends(ctx.cfg.cycle_epochs, m["epoch"])
        # Only at a cycle's end (the learning rate's low point) is the cycle's best known.
        return len(ends) >= 2 and ends[-1] == m["epoch"] and m["best_epoch"] <= ends[-2]
    return False


def _run_epoch(ctx: FoldContext, state: FoldState) -> dict[str, Any]:
    """Train one epoch; returns its history row without validation columns."""
    cfg = ctx.cfg
    epoch = state.meta["epoch"] + 1
    # One generator per (seed, fold, epoch) drives batch order and augmentation, so a
    # resumed epoch replays exactly the batches an uninterrupted run would have seen.
    # Ints only: str hashes are salted per process, which would break resume and Ray retries.
    stage = {"student": 1, "pretrain": 2}.get(ctx.stage)  # supervised and teacher keys stay as they were
    key = (cfg.seed, ctx.fold, epoch) if stage is None else (cfg.seed, ctx.fold, epoch, stage)
    g = torch.Generator().manual_seed(hash(key) % (2**31))
    state.model.train()
    n = len(state.train_t[0])
    order = torch.cat([torch.randperm(n, generator=g) for _ in range(math.ceil(state.steps * cfg.batch_size / n))])
    # Copy-paste needs 0/1 lesion masks: soft labels (pretraining) would paste whole slices.
    aug = AugmentConfig(enabled=cfg.augment, copy_paste=0.0 if ctx.stage == "pretrain" else cfg.copy_paste,
                        zoom_range=cfg.zoom_range)
    losses: list[float] = []
    for step in range(state.steps):
        if ctx.run.should_stop is not None and ctx.run.should_stop():
            raise TrainingCancelled(f"{ctx.name} cancelled at epoch {epoch}")
        idx = order[step * cfg.batch_size:(step + 1) * cfg.batch_size]
        batch = augment_batch(state.train_t[0][idx], state.train_t[1][idx], state.train_t[2][idx], aug, g)
        if state.pseudo is not None:
            batch = _with_pseudo(batch, state.pseudo, cfg.batch_size, g)
        losses.append(_train_step(ctx, state, batch, epoch, (epoch - 1) * state.steps + step))
        ctx.report("batch", epoch, step + 1, state.steps, train_loss=sum(losses) / len(losses))
    return {"epoch": epoch, "train_loss": sum(losses) / len(losses), "lr": state.optimizer.param_groups[0]["lr"]}


def _with_pseudo(batch: Tensors, pseudo: Tensors, n: int, g: torch.Generator) -> Tensors:
    """``batch`` plus ``n`` pseudo-labeled slices drawn at random, strongly augmented."""
    idx = torch.randint(0, len(pseudo[0]), (n,), generator=g)
    extra = augment_batch(pseudo[0][idx], pseudo[1][idx], pseudo[2][idx], STRONG_AUGMENT, g)
    return tuple(torch.cat([a, b]) for a, b in zip(batch, extra))  # type: ignore[return-value]


def _train_step(ctx: FoldContext, state: FoldState, batch: Tensors, epoch: int, global_step: int) -> float:
    """One optimiser step on ``batch`` (images, masks, types); returns the loss."""
    cfg, device = ctx.cfg, ctx.run.device
    for group in state.optimizer.param_groups:
        group["lr"] = lr_at(cfg, global_step, ctx.epochs * state.steps, base=ctx.lr, steps_per_epoch=state.steps,
                            schedule=ctx.schedule)
    x, m, t = batch
    x = x.to(device)
    if uses_channels_last(state.model, device):
        x = x.contiguous(memory_format=torch.channels_last)
    with state.amp.autocast():
        loss = state.model.loss(x, m.to(device), t.to(device))
    if not torch.isfinite(loss):
        raise SmallCovidError(f"{ctx.name}: loss became {loss.item()} at epoch {epoch}; lower the learning rate")
    state.amp.backward_and_step(loss, state.optimizer)
    return float(loss.detach())


def _after_epoch(ctx: FoldContext, state: FoldState, row: dict[str, Any], started: float) -> None:
    """Validate, keep the best epoch, checkpoint, then report the epoch."""
    cfg, meta, epoch = ctx.cfg, state.meta, row["epoch"]
    if state.val_t is not None:
        row.update(validate(state.model, state.val_t, cfg.threshold, ctx.run.device))
    score = row.get("val_dice_best", epoch)  # all-data model: the latest epoch always wins
    improved = score > meta["best"]
    if improved:
        meta["best"], meta["best_epoch"] = score, epoch
    meta["history"].append(row)
    meta["epoch"] = epoch
    _checkpoint(ctx, state, save_best=improved)
    ctx.run.clock.tick(time.perf_counter() - started)
    ctx.run.save_clock()  # a process killed without a chance to clean up still keeps its time up to here
    ctx.report("epoch", epoch, state.steps, state.steps, train_loss=row["train_loss"],
               val_loss=row.get("val_loss"), val_dice=row.get("val_dice"))


def _checkpoint(ctx: FoldContext, state: FoldState, *, save_best: bool) -> None:
    """Write the epoch to disk: best weights (when it improved), ``history.csv``, then ``resume/``.

    ``resume/`` goes last: if a write fails, the fold resumes from the previous epoch
    and rewrites the files before it.
    """
    epoch = state.meta["epoch"]
    if save_best:
        card = {**(ctx.card or {}), "input_size": ctx.cfg.image_size, "threshold": ctx.cfg.threshold,
                "epoch": epoch, "fold": ctx.fold}
        save_weights(state.model, ctx.weights_path, card=card)
    write_history(ctx.dir / "history.csv", state.meta["history"])
    save_state(ctx.dir / "resume", state.model, state.optimizer, state.meta)


def new_model(cfg: TrainConfig) -> SegmentationModel:
    """A freshly initialised model of ``cfg.model`` with ``cfg.model_config`` (uses the torch RNG)."""
    overrides = dict(cfg.model_config)
    if cfg.model == "mask-rcnn":
        overrides.setdefault("image_size", cfg.image_size)
    return build_model(cfg.model, **overrides)


def make_optimizer(cfg: TrainConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    """AdamW, or plain SGD (no momentum) for the paper's "gradient descent"."""
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=0.0, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
