"""The one training engine (CLI and app): k-fold loop, checkpoints, progress events.

Reading order: :func:`train` runs the folds, then :func:`finish_run` summarises
them and (``final=True``) trains the final model on all slices. Each fold writes
``fold_<k>/``: ``<model>.safetensors`` + ``.json`` (best epoch), ``history.csv``,
``metrics.json`` and ``resume/`` (last completed epoch, for resuming).
"""

from __future__ import annotations

import csv
import io as _io
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from smallcovid.data.augment import AugmentConfig, augment_batch
from smallcovid.data.dataset import UNKNOWN_TYPE, LabeledSet, load_dataset, load_splits, make_splits, read_groups, save_splits
from smallcovid.core.errors import SmallCovidError
from smallcovid.core.fsutil import atomic_write_text
from smallcovid.inference.predictor import resolve_device
from smallcovid.models import SegmentationModel, build_model
from smallcovid.training.config import TrainConfig
from smallcovid.training.state import load_state, save_state

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Progress:
    """A progress event. ``fold`` is 1-based; 0 means the final all-data model."""

    kind: str  # "batch" | "epoch" | "fold_done" | "final_done" | "done"
    fold: int
    folds: int
    epoch: int = 0
    epochs: int = 0
    step: int = 0
    steps: int = 0
    train_loss: float | None = None
    val_loss: float | None = None
    val_dice: float | None = None
    elapsed_s: float = 0.0
    eta_s: float | None = None


class TrainingCancelled(Exception):
    """Raised inside :func:`train` when ``should_stop()`` returned True between batches."""


ProgressFn = Callable[[Progress], None]
StopFn = Callable[[], bool]


def train(
    cfg: TrainConfig,
    out_dir: str | Path,
    *,
    progress: ProgressFn | None = None,
    should_stop: StopFn | None = None,
) -> dict:
    """Run (or resume) k-fold training into ``out_dir``; returns the summary dict.

    Resuming: call again with the same ``cfg`` and ``out_dir``; finished folds are
    kept, an unfinished fold continues after its last completed epoch.
    """
    out = Path(out_dir)
    cfg_path = out / "config.json"
    if cfg_path.is_file() and json.loads(cfg_path.read_text()) != json.loads(cfg.to_json()):
        raise SmallCovidError(f"{out}: holds a run with a different configuration; choose another --out")
    # Data and splits are checked before the run folder is made: a refused run leaves nothing behind.
    device = resolve_device(cfg.device)
    data = load_dataset(cfg.data)
    splits = _splits(cfg, data, out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(cfg_path, cfg.to_json())
    save_splits(out / "splits.json", splits, cfg.seed)
    clock = _Clock(total_epochs=cfg.epochs * (len(splits) + int(cfg.final)))
    for k, split in enumerate(splits, start=1):
        fold_dir = out / f"fold_{k}"
        if (fold_dir / "metrics.json").is_file():
            clock.skip(cfg.epochs)
            continue
        train_fold(cfg, data.subset(split["train"]), data.subset(split["val"]), fold_dir,
                   fold=k, folds=len(splits), device=device, clock=clock,
                   progress=progress, should_stop=should_stop)
    from smallcovid.training.cvsummary import finish_run

    return finish_run(cfg, data, splits, out, device=device, clock=clock,
                      progress=progress, should_stop=should_stop)


def _splits(cfg: TrainConfig, data: LabeledSet, out: Path) -> list[dict[str, list[str]]]:
    saved = out / "splits.json"
    if cfg.splits:
        splits = load_splits(cfg.splits, data.stems)
    elif saved.is_file():
        splits = load_splits(saved, data.stems)
    else:
        groups = read_groups(cfg.groups) if cfg.groups else None
        splits = make_splits(data.stems, cfg.folds, cfg.seed, groups)
    if len(splits) != cfg.folds:
        raise SmallCovidError(f"the splits file has {len(splits)} folds but --folds is {cfg.folds}")
    return splits


class _Clock:
    """Elapsed time and an ETA from the mean duration of the epochs run so far."""

    def __init__(self, total_epochs: int) -> None:
        self.start = time.perf_counter()
        self.total = total_epochs
        self.done = 0
        self.timed = 0
        self.timed_s = 0.0

    def skip(self, n: int) -> None:
        self.done += n

    def tick(self, seconds: float) -> None:
        self.done += 1
        self.timed += 1
        self.timed_s += seconds

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def eta(self) -> float | None:
        if not self.timed:
            return None
        return self.timed_s / self.timed * max(self.total - self.done, 0)


def to_tensors(data: LabeledSet, size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Resize a labeled set once: images (N,1,S,S) float, masks (N,1,S,S) float, types (N,S,S) int64."""
    imgs, masks, types = [], [], []
    for s in data.samples:
        x = torch.from_numpy(s.image)[None, None]
        imgs.append(F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)[0])
        m = torch.from_numpy(s.mask.astype("float32"))[None, None]
        masks.append(F.interpolate(m, size=(size, size), mode="nearest")[0])
        if s.types is None:
            t = torch.full((size, size), UNKNOWN_TYPE, dtype=torch.long)
            t[masks[-1][0] == 0] = 0
        else:
            tt = torch.from_numpy(s.types.astype("float32"))[None, None]
            t = F.interpolate(tt, size=(size, size), mode="nearest")[0, 0].long()
        types.append(t)
    return torch.stack(imgs), torch.stack(masks), torch.stack(types)


def make_optimizer(cfg: TrainConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=0.0, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)


def lr_at(cfg: TrainConfig, step: int, total: int) -> float:
    """Learning rate at a global step: constant for the paper protocol, else warm-up + cosine."""
    if cfg.protocol == "paper":
        return cfg.lr
    warm = max(1, total // 20)
    if step < warm:
        return cfg.lr * (step + 1) / warm
    t = (step - warm) / max(1, total - warm)
    return cfg.lr * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * t)))


def new_model(cfg: TrainConfig) -> SegmentationModel:
    overrides = dict(cfg.model_config)
    if cfg.model == "mask-rcnn":
        overrides.setdefault("image_size", cfg.image_size)
    return build_model(cfg.model, **overrides)


def train_fold(
    cfg: TrainConfig,
    train_set: LabeledSet,
    val_set: LabeledSet | None,
    fold_dir: Path,
    *,
    fold: int,
    folds: int,
    device: torch.device,
    clock: _Clock,
    progress: ProgressFn | None,
    should_stop: StopFn | None,
    card: dict | None = None,
) -> SegmentationModel:
    """Train one fold (``val_set=None``: the final all-data model); returns the chosen model."""
    from smallcovid.models.checkpoint import save_weights

    torch.manual_seed(cfg.seed * 1000 + fold)
    model = new_model(cfg).to(device)
    opt = make_optimizer(cfg, model)
    train_t = to_tensors(train_set, cfg.image_size)
    val_t = to_tensors(val_set, cfg.image_size) if val_set is not None else None
    steps = cfg.steps_per_epoch or math.ceil(len(train_set) / cfg.batch_size)
    meta = load_state(fold_dir / "resume", model, opt) or {"epoch": 0, "best": -1.0, "best_epoch": 0, "history": []}
    clock.skip(meta["epoch"])  # epochs finished before an interruption
    first = meta["epoch"] + 1
    if cfg.patience and val_set is not None and meta["epoch"] and meta["epoch"] - meta["best_epoch"] >= cfg.patience:
        first = cfg.epochs + 1  # this fold had stopped early: resuming must not train it further
        clock.skip(cfg.epochs - meta["epoch"])
    aug = AugmentConfig(enabled=cfg.augment)
    use_amp = device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    weights_path = fold_dir / f"{cfg.model}.safetensors"
    for epoch in range(first, cfg.epochs + 1):
        t0 = time.perf_counter()
        g = torch.Generator().manual_seed(hash((cfg.seed, fold, epoch)) % (2**31))
        model.train()
        losses = []
        order = torch.cat([torch.randperm(len(train_set), generator=g)
                           for _ in range(math.ceil(steps * cfg.batch_size / len(train_set)))])
        for step in range(steps):
            if should_stop is not None and should_stop():
                raise TrainingCancelled(f"fold {fold} cancelled at epoch {epoch}")
            idx = order[step * cfg.batch_size:(step + 1) * cfg.batch_size]
            x, m, t = augment_batch(train_t[0][idx], train_t[1][idx], train_t[2][idx], aug, g)
            for group in opt.param_groups:
                group["lr"] = lr_at(cfg, (epoch - 1) * steps + step, cfg.epochs * steps)
            with torch.autocast("cuda", enabled=use_amp):
                loss = model.loss(x.to(device), m.to(device), t.to(device))
            if not torch.isfinite(loss):
                raise SmallCovidError(f"fold {fold}: loss became {loss.item()} at epoch {epoch}; lower the learning rate")
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            losses.append(float(loss.detach()))
            if progress is not None:
                progress(Progress("batch", fold, folds, epoch, cfg.epochs, step + 1, steps,
                                  train_loss=sum(losses) / len(losses), elapsed_s=clock.elapsed(), eta_s=clock.eta()))
        row = {"epoch": epoch, "train_loss": sum(losses) / len(losses), "lr": opt.param_groups[0]["lr"]}
        if val_t is not None:
            row.update(validate(model, val_t, cfg.threshold, device))
        score = row.get("val_dice_best", epoch)  # all-data model: keep the last epoch
        improved = score > meta["best"]
        if improved:
            meta["best"], meta["best_epoch"] = score, epoch
            save_weights(model, weights_path, card={**(card or {}), "input_size": cfg.image_size,
                                                    "threshold": cfg.threshold, "epoch": epoch, "fold": fold})
        meta["history"].append(row)
        meta["epoch"] = epoch
        _write_history(fold_dir / "history.csv", meta["history"])
        save_state(fold_dir / "resume", model, opt, meta)
        clock.tick(time.perf_counter() - t0)
        if progress is not None:
            progress(Progress("epoch", fold, folds, epoch, cfg.epochs, steps, steps, row["train_loss"],
                              row.get("val_loss"), row.get("val_dice"), clock.elapsed(), clock.eta()))
        if cfg.patience and val_t is not None and epoch - meta["best_epoch"] >= cfg.patience:
            log.info("fold %d: early stop at epoch %d (best %d)", fold, epoch, meta["best_epoch"])
            clock.skip(cfg.epochs - epoch)
            break
    from smallcovid.models.checkpoint import load_weights

    best, _ = load_weights(weights_path, device=str(device))
    return best


@torch.no_grad()
def validate(model: SegmentationModel, val_t, threshold: float, device: torch.device) -> dict[str, float]:
    """Validation loss (BCE + soft Dice of the lesion probability), mean Dice at ``threshold`` and
    the best mean Dice over :data:`SELECTION_THRESHOLDS`, all at the model's input size."""
    model.eval()
    images, masks, _ = val_t
    probs = torch.cat([model.predict(images[i:i + 4].to(device)).lesion_prob.float().cpu()
                       for i in range(0, len(images), 4)])
    bce = F.binary_cross_entropy(probs.clamp(1e-6, 1 - 1e-6), masks)
    inter = (probs * masks).sum((1, 2, 3))
    soft = 1 - ((2 * inter + 1) / (probs.sum((1, 2, 3)) + masks.sum((1, 2, 3)) + 1)).mean()
    def mean_dice(t: float) -> float:
        pred = probs >= t
        tp = (pred & (masks > 0)).sum((1, 2, 3)).float()
        denom = pred.sum((1, 2, 3)).float() + masks.sum((1, 2, 3))
        return float(torch.where(denom > 0, 2 * tp / denom.clamp(min=1), torch.ones_like(denom)).mean())

    # Checkpoints are chosen on the best Dice over a threshold grid, not at one fixed
    # threshold: a model whose probabilities are still timid (Mask R-CNN's score x mask
    # early on) would otherwise score 0 at 0.8 and keep its first epoch.
    sweep = [mean_dice(t) for t in SELECTION_THRESHOLDS]
    return {"val_loss": float(bce + soft), "val_dice": mean_dice(threshold), "val_dice_best": max(sweep)}


SELECTION_THRESHOLDS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)


def _write_history(path: Path, rows: list[dict]) -> None:
    keys = ["epoch", "train_loss", "val_loss", "val_dice", "val_dice_best", "lr"]
    buf = _io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys, extrasaction="ignore")
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(path, buf.getvalue())
