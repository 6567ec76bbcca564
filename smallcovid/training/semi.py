"""Train one fold's model: supervised, teacher -> pseudo-labels -> student with unlabeled data
(self-training), or teachers' soft labels -> pretraining -> fine-tuning (distillation).

:func:`train_model` is what the run loop and the final model call; without an
unlabeled pool it is exactly :func:`~smallcovid.training.fold.train_fold`.
"""

from __future__ import annotations

import torch

from smallcovid.data.dataset import LabeledSet
from smallcovid.data.rewindow import reference_levels, rewindow
from smallcovid.models import SegmentationModel
from smallcovid.training.distill import train_distilled
from smallcovid.training.context import FoldContext
from smallcovid.training.fold import train_fold
from smallcovid.training.pseudo import pseudo_label
from smallcovid.training.tensors import to_tensors


def train_set_fractions(train_set: LabeledSet, size: int) -> torch.Tensor:
    """Lesion area fraction of each labeled training slice at input size ``size``: (N,) float."""
    _, masks, _ = to_tensors(train_set, size)
    return masks.flatten(1).mean(1)


def train_model(ctx: FoldContext, train_set: LabeledSet, val_set: LabeledSet | None,
                pool: torch.Tensor | None = None) -> SegmentationModel:
    """The fold's model (saved at ``ctx.weights_path``).

    With ``pool`` and ``cfg.teachers``: distillation
    (:func:`smallcovid.training.distill.train_distilled`). With ``pool`` alone
    ((N, 1, S, S) unlabeled slices at the run's input size): a teacher
    trains on ``train_set`` only (in ``<fold>/teacher/``), labels the pool, and a
    student started from the teacher trains on ``train_set`` plus the kept
    pseudo-labeled slices. ``val_set`` only chooses each stage's best epoch; it is
    never trained on and never labeled.
    """
    if pool is None:
        return train_fold(ctx, train_set, val_set)
    if ctx.cfg.teachers:
        return train_distilled(ctx, train_set, val_set, pool)
    # The pool's slices in a wider display window, brought into the labeled slices' (see
    # smallcovid.data.rewindow): in theirs the teacher reads the mediastinum as lesion.
    pool, _ = rewindow(pool, reference_levels(to_tensors(train_set, ctx.cfg.image_size)[0]))
    teacher_ctx = FoldContext(ctx.run, ctx.fold, card=ctx.card, stage="teacher")
    teacher = train_fold(teacher_ctx, train_set, val_set)
    reference = None
    if ctx.cfg.pseudo_select == "area-matched":
        reference = train_set_fractions(train_set, ctx.cfg.image_size)
    pseudo = pseudo_label(teacher, pool, ctx.run.device, keep=ctx.cfg.pseudo_keep, area_reference=reference)
    del teacher
    student_ctx = FoldContext(ctx.run, ctx.fold, card=ctx.card, stage="student")
    return train_fold(student_ctx, train_set, val_set, pseudo=pseudo, init=teacher_ctx.weights_path)
