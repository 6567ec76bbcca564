"""What a training run and each of its folds share: configuration, run folder, device, clock.

:class:`RunContext` is fixed for a whole run; :class:`FoldContext` names one fold (or
the final all-data model) and the stage of its recipe, and derives that stage's
epochs, learning rate, schedule and folder. The fold loop itself is in
:mod:`smallcovid.training.fold`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch

from smallcovid.training.config import TrainConfig
from smallcovid.training.progress import Clock, Progress, ProgressFn, StopFn, record_clock
from smallcovid.training.runfolder import fold_dir, fold_name


@dataclass(frozen=True)
class RunContext:
    """What every fold of one run shares and nothing changes during the run.

    ``folds`` is the number of cross-validation folds (reported in progress events,
    also by the final model). ``clock`` is the one mutable member: the run's ETA.
    ``keeps_time``: :meth:`save_clock` records the clock in the run folder. Only the
    process that owns the run's clock sets it: a Ray task's clock times its fold alone.
    """

    cfg: TrainConfig
    out: Path
    device: torch.device
    clock: Clock
    folds: int
    progress: ProgressFn | None = None
    should_stop: StopFn | None = None
    pool: torch.Tensor | None = None  # unlabeled slices (N, 1, S, S) for semi-supervised runs
    keeps_time: bool = False
    fold_caps: Mapping[int, int] | None = None  # per-fold epoch caps of an extended run (fold_caps)

    def save_clock(self) -> None:
        """Record the run's elapsed time in ``<out>/clock.json`` (see :func:`spent_seconds`), if ``keeps_time``.

        A failed write is logged, not raised: the time is for display, and the run's
        checkpoints, not this record, decide whether it can resume.
        """
        if self.keeps_time:
            record_clock(self.out, self.clock)

    def report(self, kind: str, fold: int, **fields: Any) -> None:
        """Send one :class:`Progress` event to the listener, if any, stamped with the run clock."""
        if self.progress is None:
            return
        elapsed = self.clock.elapsed()
        fields.setdefault("eta_s", self.clock.eta())
        self.progress(Progress(kind, fold, self.folds, elapsed_s=elapsed, **fields))


@dataclass(frozen=True)
class FoldContext:
    """One fold of a run: ``fold`` is 1-based, 0 is the final all-data model.

    ``card`` holds extra model-card fields for the fold's saved weights.
    """

    run: RunContext
    fold: int
    card: Mapping[str, Any] | None = None
    stage: str = ""  # "" (supervised), "teacher" or "student" (self-training), "pretrain" (distillation)
    epochs_override: int | None = None  # the final model of a "restarts" run: the folds' plateau epoch

    @property
    def cfg(self) -> TrainConfig:
        return self.run.cfg

    @property
    def name(self) -> str:
        """How messages name this fold: ``"fold 2"``, or ``"final model (all data)"`` for fold 0."""
        return fold_name(self.fold)

    @property
    def epochs(self) -> int:
        """Epochs of this stage: a student trains ``student_epochs`` (default ``epochs``)."""
        if self.epochs_override is not None:
            return self.epochs_override
        if self.stage == "pretrain":
            return self.cfg.distill_epochs
        if self.stage != "student" and self.run.fold_caps and self.fold in self.run.fold_caps:
            return self.run.fold_caps[self.fold]
        return (self.cfg.student_epochs or self.cfg.epochs) if self.stage == "student" else self.cfg.epochs

    @property
    def lr(self) -> float:
        """Peak learning rate of this stage: a student uses ``student_lr`` when set."""
        return (self.cfg.student_lr or self.cfg.lr) if self.stage == "student" else self.cfg.lr

    @property
    def dir(self) -> Path:
        """This fold's folder (see :func:`fold_dir`); a teacher lives in its ``teacher/``, a
        distillation student's pretraining in its ``pretrain/``."""
        base = fold_dir(self.run.out, self.fold)
        return base / self.stage if self.stage in ("teacher", "pretrain") else base

    @property
    def schedule(self) -> str:
        """Learning-rate schedule of this stage: distillation's pretraining is one cosine."""
        return "cosine" if self.stage == "pretrain" else self.cfg.schedule

    @property
    def weights_path(self) -> Path:
        """The best epoch's weights, ``<dir>/<model>.safetensors`` (card next to it)."""
        return self.dir / f"{self.cfg.model}.safetensors"

    def report(self, kind: str, epoch: int, step: int, steps: int, **losses: float | None) -> None:
        """A ``"batch"`` or ``"epoch"`` event of this fold."""
        self.run.report(kind, self.fold, epoch=epoch, epochs=self.epochs, step=step, steps=steps,
                        stage=self.stage, **losses)
