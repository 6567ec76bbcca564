"""Distillation on unlabeled slices, in Semi-Inf-Net's order: teachers -> soft labels ->
the student pretrains on them -> the student fine-tunes on the labeled slices.

Per fold k, the teachers are the fold-k models of finished cross-validation runs
(``TrainConfig.teachers``, e.g. a U-Net run and a SmallCovid-Net run on the same folds):
each was trained on fold k's training slices only, so fold k's validation slices never
reach the student in any form. The final all-data student is taught by the teachers'
final models. Pool slices in a wider display window than the labeled slices are first
re-windowed (:mod:`smallcovid.data.rewindow`). The teachers' lesion probabilities (each at its own input size) are
averaged into soft labels for every unlabeled slice; a fresh student trains on them
alone for ``distill_epochs`` passes over the pool (cosine schedule, its last epoch kept),
then trains on the fold's labeled slices from those weights with the run's own schedule,
exactly as a supervised fold does (best epoch, plateau stop).

A fold folder gains ``pretrain/``: ``soft_labels.safetensors`` (the averaged labels, so a
resumed run does not label the pool again), the pretrained weights, ``history.csv`` and
``resume/``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from smallcovid.core.errors import SmallCovidError
from smallcovid.data.dataset import LabeledSet
from smallcovid.data.rewindow import reference_levels, rewindow
from smallcovid.models import SegmentationModel
from smallcovid.models.checkpoint import load_weights
from smallcovid.training.config import TrainConfig
from smallcovid.training.context import FoldContext
from smallcovid.training.fold import train_fold
from smallcovid.training.runfolder import fold_dir
from smallcovid.training.pseudo import unlabeled_files, unlabeled_hash
from smallcovid.training.tensors import Tensors, to_tensors

log = logging.getLogger(__name__)

SOFT_LABELS = "soft_labels.safetensors"
#: Pixels whose averaged probability lies strictly between these carry no lesion type.
UNSURE = (0.3, 0.7)


def teacher_weights(ctx: FoldContext, teacher_run: str | Path) -> Path:
    """The weights of ``teacher_run``'s model for ``ctx``'s fold, checked against the no-leak rule.

    Fold k's teacher must have trained on exactly fold k's training slices of this run (same
    stems in its ``splits.json``); the final model's teacher is the run's ``final/`` model.

    Raises:
        SmallCovidError: not a finished run folder, other folds, or no model for this fold.
    """
    run = Path(teacher_run)
    cfg_path, splits_path = run / "config.json", run / "splits.json"
    if not cfg_path.is_file() or not splits_path.is_file():
        raise SmallCovidError(f"teacher {run}: not a training run folder (needs config.json and splits.json)")
    model = json.loads(cfg_path.read_text())["model"]
    if ctx.fold:
        ours = json.loads((ctx.run.out / "splits.json").read_text())["folds"]
        theirs = json.loads(splits_path.read_text())["folds"]
        if len(theirs) != len(ours) or sorted(theirs[ctx.fold - 1]["train"]) != sorted(ours[ctx.fold - 1]["train"]):
            raise SmallCovidError(f"teacher {run}: its fold {ctx.fold} trained on other slices than this run's; "
                                  "a fold's validation slices must never reach its student (use the same "
                                  "--seed and --folds, or --splits)")
    path = fold_dir(run, ctx.fold) / f"{model}.safetensors"
    if not path.is_file():
        what = "a final model (train it with --final)" if ctx.fold == 0 else f"a fold {ctx.fold} model"
        raise SmallCovidError(f"teacher {run}: has no {what} at {path}")
    return path


@torch.no_grad()
def soft_labels(teachers: list[SegmentationModel], sizes: list[int], pool: torch.Tensor,
                device: torch.device, *, batch_size: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """The teachers' mean lesion probability and lesion type for every slice of ``pool``.

    Args:
        teachers: trained models; each sees the pool at its own input size (``sizes``).
        pool: (N, 1, S, S) float in [0, 1].

    Returns:
        ``(prob, types)``: (N, 1, S, S) float in [0, 1] and (N, S, S) int64 — 0 where the
        mean probability is at most 0.3, the more likely lesion type (1 ground-glass,
        2 consolidation) where it is at least 0.7, and -100 (ignored) in between.
    """
    if not teachers or len(teachers) != len(sizes):
        raise SmallCovidError("distillation needs at least one teacher, each with its input size")
    size = pool.shape[-1]
    probs, kinds = [], []
    for i in range(0, len(pool), batch_size):
        x = pool[i:i + batch_size]
        p_sum = torch.zeros(len(x), 1, size, size)
        t_sum = torch.zeros(len(x), 2, size, size)
        for model, s in zip(teachers, sizes):
            model.eval()
            xin = x if s == size else F.interpolate(x, size=(s, s), mode="bilinear", align_corners=False,
                                                   antialias=True)
            pred = model.predict(xin.to(device))
            maps = torch.cat([pred.lesion_prob.float(), pred.type_prob[:, 1:].float()], 1).cpu()
            if s != size:
                maps = F.interpolate(maps, size=(size, size), mode="bilinear", align_corners=False)
            p_sum += maps[:, :1]
            t_sum += maps[:, 1:]
        p = (p_sum / len(teachers)).clamp(0, 1)
        kind = t_sum.argmax(1) + 1
        kind[p[:, 0] <= UNSURE[0]] = 0
        kind[(p[:, 0] > UNSURE[0]) & (p[:, 0] < UNSURE[1])] = -100
        probs.append(p)
        kinds.append(kind)
    return torch.cat(probs), torch.cat(kinds).long()


def fold_soft_labels(ctx: FoldContext, pool: torch.Tensor, train_set: LabeledSet) -> Tensors:
    """Soft labels of the pool for ``ctx``'s fold from the run's teachers (cached in ``pretrain/``).

    Pool slices shown in a wider display window than the fold's labeled training slices
    are first brought into theirs (:func:`smallcovid.data.rewindow.rewindow`): in that
    window the teachers read the mediastinum as lesion.

    Returns ``(images, soft masks, types)`` as :data:`~smallcovid.training.tensors.Tensors`:
    the (re-windowed) pool, masks holding probabilities instead of 0/1.
    """
    images, mapped = rewindow(pool, reference_levels(to_tensors(train_set, ctx.cfg.image_size)[0]))
    cache = fold_dir(ctx.run.out, ctx.fold) / "pretrain" / SOFT_LABELS
    if cache.is_file():
        saved = load_file(str(cache))
        if saved["prob"].shape[0] == len(pool):
            return images, saved["prob"].float() / 255.0, _types_from_file(saved["types"])
        log.warning("%s: cached soft labels are for %d slices, not %d: labelling again", ctx.name,
                    saved["prob"].shape[0], len(pool))
    models, sizes = [], []
    for run in ctx.cfg.teachers or ():
        model, card = load_weights(teacher_weights(ctx, run), device=str(ctx.run.device))
        models.append(model)
        sizes.append(int(card.get("input_size") or ctx.cfg.image_size))
    prob, types = soft_labels(models, sizes, images, ctx.run.device)
    q = (prob * 255).round().to(torch.uint8)  # 1/255 steps: far below a teacher's own error
    cache.parent.mkdir(parents=True, exist_ok=True)
    save_file({"prob": q.contiguous(), "types": _types_to_file(types)}, str(cache))
    log.info("%s: %d of %d pool slices re-windowed; soft labels from %d teacher(s), %.1f%% of pixels at p >= 0.5",
             ctx.name, int(mapped.sum()), len(pool), len(models), 100 * float((q >= 128).float().mean()))
    return images, q.float() / 255.0, types


def _types_to_file(types: torch.Tensor) -> torch.Tensor:
    """Lesion types as uint8 for the cache (-100, ignored, stored as 255)."""
    return torch.where(types < 0, torch.full_like(types, 255), types).to(torch.uint8).contiguous()


def _types_from_file(stored: torch.Tensor) -> torch.Tensor:
    t = stored.long()
    return torch.where(t == 255, torch.full_like(t, -100), t)


def train_distilled(ctx: FoldContext, train_set: LabeledSet, val_set: LabeledSet | None,
                    pool: torch.Tensor) -> SegmentationModel:
    """The fold's student: soft labels -> pretraining on the pool -> fine-tuning on ``train_set``.

    ``val_set`` only chooses the fine-tuning's best epoch (as in a supervised fold); it is
    never trained on, never labeled and plays no part in pretraining.
    """
    soft = fold_soft_labels(ctx, pool, train_set)
    pre = FoldContext(ctx.run, ctx.fold, card=ctx.card, stage="pretrain")
    train_fold(pre, train_set, None, train_tensors=soft)
    return train_fold(ctx, train_set, val_set, init=pre.weights_path)


def check_teachers(teachers: tuple[str, ...]) -> None:
    """Fail fast, before any training, when a teacher run folder is missing or unfinished.

    Raises:
        SmallCovidError: a teacher folder without ``config.json`` and ``summary.json``.
    """
    for run in teachers:
        p = Path(run)
        if not (p / "config.json").is_file() or not (p / "summary.json").is_file():
            raise SmallCovidError(f"teacher {run}: not a finished training run (needs config.json and summary.json)")


def distill_recipe(cfg: TrainConfig) -> dict:
    """What a summary and model card record of a distillation run."""
    teachers = []
    for run in cfg.teachers or ():
        p = Path(run)
        summary = json.loads((p / "summary.json").read_text()) if (p / "summary.json").is_file() else {}
        dice = (summary.get("tuned") or {}).get("dice") or {}
        teachers.append({"run": p.name, "model": json.loads((p / "config.json").read_text())["model"],
                         "cv_dice": dice.get("mean")})
    return {"method": "distillation: the fold's teachers' mean lesion probability on the unlabeled slices "
                      "(those in a wider display window first re-windowed to the labeled slices' levels) "
                      "-> the student pretrains on these soft labels -> trains on the fold's labeled slices",
            "unlabeled": "/".join(Path(cfg.unlabeled).resolve().parts[-2:]),
            "n_unlabeled": len(unlabeled_files(cfg.unlabeled)), "unlabeled_sha256": unlabeled_hash(cfg.unlabeled),
            "teachers": teachers, "distill_epochs": cfg.distill_epochs,
            "per_fold_teacher": "fold k's teachers trained on fold k's training slices only; the final "
                                "student's teachers are their runs' final models"}
