"""Training configuration: one frozen dataclass that serialises to JSON and travels with weights."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from smallcovid.core.errors import SmallCovidError
from smallcovid.models import list_models, make_config

PROTOCOLS = ("default", "paper")
PRECISIONS = ("auto", "bf16")
PSEUDO_SELECT = ("area-matched", "confidence")
SCHEDULES = ("cosine", "restarts")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a k-fold training run.

    ``steps_per_epoch=None`` means one pass over the training fold per epoch.
    ``lr`` / ``optimizer`` defaults are ours; ``protocol="paper"`` replaces them by the
    paper's (plain gradient descent, lr 1e-4, 20 epochs x 600 steps, threshold 0.8).
    """

    model: str
    data: str
    folds: int = 5
    epochs: int = 60
    steps_per_epoch: int | None = None
    batch_size: int = 4
    lr: float = 2e-3
    weight_decay: float = 1e-4
    optimizer: str = "adamw"
    image_size: int = 256
    threshold: float = 0.8
    patience: int = 0  # early stopping after this many epochs without improvement; 0 = off
    seed: int = 0
    device: str = "auto"
    augment: bool = True
    protocol: str = "default"
    final: bool = False
    groups: str | None = None
    splits: str | None = None
    model_config: dict[str, Any] = field(default_factory=dict)
    # "auto": fp16 autocast on CUDA, fp32 on CPU; "bf16": bf16 autocast (+ channels-last on CPU) everywhere.
    precision: str = "auto"
    unlabeled: str | None = None  # folder of unlabeled slices: semi-supervised (teacher -> student) training
    pseudo_keep: float = 0.5  # fraction of unlabeled slices kept, most confident first
    student_epochs: int | None = None  # student epochs per fold (None: same as epochs)
    student_lr: float | None = None  # the student's peak learning rate (None: same as lr)
    # Which pseudo-labeled slices the student keeps: "confidence" (most confident first) or
    # "area-matched" (most confident within each quartile of the labeled slices' lesion area).
    pseudo_select: str = "area-matched"
    # Learning-rate schedule: "cosine" (one warm-up + cosine over ``epochs``) or "restarts"
    # (cosine cycles of cycle_epochs, 2x, 4x ... epochs; a validated fold stops at the end of
    # the first whole cycle that did not improve its best epoch, so ``epochs`` is a cap).
    schedule: str = "cosine"
    cycle_epochs: int = 20
    # Augmentation recipe: lesion copy-paste probability (0 = off) and multi-scale zoom range
    # (None: the default 0.85-1.15 zoom).
    copy_paste: float = 0.0
    zoom_range: tuple[float, float] | None = None
    # Distillation (with ``unlabeled``): finished run folders on the same folds whose fold-k
    # models together label the unlabeled slices for fold k's student, which pretrains on
    # those soft labels for ``distill_epochs`` passes, then trains on the labeled slices.
    teachers: tuple[str, ...] | None = None
    distill_epochs: int = 10

    def __post_init__(self) -> None:
        if self.model not in list_models():
            raise SmallCovidError(f"unknown model {self.model!r}; choose one of: {', '.join(list_models())}")
        if self.protocol not in PROTOCOLS:
            raise SmallCovidError(f"protocol must be one of {', '.join(PROTOCOLS)}, got {self.protocol!r}")
        if self.precision not in PRECISIONS:
            raise SmallCovidError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.pseudo_select not in PSEUDO_SELECT:
            raise SmallCovidError(f"pseudo_select must be one of {', '.join(PSEUDO_SELECT)}, got {self.pseudo_select!r}")
        if self.schedule not in SCHEDULES:
            raise SmallCovidError(f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        if self.optimizer not in ("adamw", "sgd"):
            raise SmallCovidError(f"optimizer must be adamw or sgd, got {self.optimizer!r}")
        checks = [
            ("folds", self.folds >= 2, "at least 2"),
            ("epochs", self.epochs >= 1, "at least 1"),
            ("batch_size", self.batch_size >= 1, "at least 1"),
            ("lr", self.lr > 0, "positive"),
            ("image_size", 32 <= self.image_size <= 1024 and self.image_size % 32 == 0,
             "a multiple of 32 between 32 and 1024"),
            ("threshold", 0 < self.threshold < 1, "between 0 and 1"),
            ("steps_per_epoch", self.steps_per_epoch is None or self.steps_per_epoch >= 1, "at least 1"),
            ("patience", self.patience >= 0, "0 (off) or more"),
            ("cycle_epochs", self.cycle_epochs >= 1, "at least 1"),
            ("copy_paste", 0.0 <= self.copy_paste <= 1.0, "a probability in [0, 1]"),
            ("zoom_range", self.zoom_range is None or (len(self.zoom_range) == 2
                                                       and 0.1 <= self.zoom_range[0] <= self.zoom_range[1] <= 4.0),
             "None or (low, high) with 0.1 <= low <= high <= 4"),
            ("weight_decay", self.weight_decay >= 0, "0 or more"),
            ("pseudo_keep", 0 < self.pseudo_keep <= 1, "in (0, 1]"),
            ("student_epochs", self.student_epochs is None or self.student_epochs >= 1, "at least 1"),
            ("student_lr", self.student_lr is None or self.student_lr > 0, "positive"),
            ("distill_epochs", self.distill_epochs >= 1, "at least 1"),
            ("teachers", self.teachers is None or (len(self.teachers) >= 1 and self.unlabeled is not None),
             "None, or one or more run folders together with an unlabeled folder"),
        ]
        for name, ok, allowed in checks:
            if not ok:
                raise SmallCovidError(f"{name}={getattr(self, name)!r} is invalid; it must be {allowed}")
        # Unknown or invalid architecture options fail here, before a run folder is written.
        try:
            make_config(self.model, **self.model_config)
        except SmallCovidError:
            raise
        except (TypeError, ValueError) as exc:
            raise SmallCovidError(f"invalid {self.model} option(s) {self.model_config!r} ({exc})") from None

    @staticmethod
    def paper(**kw: Any) -> "TrainConfig":
        """The paper's protocol: gradient descent, lr 1e-4, 20 epochs x 600 steps, threshold 0.8."""
        base = dict(optimizer="sgd", lr=1e-4, epochs=20, steps_per_epoch=600, threshold=0.8,
                    weight_decay=0.0, protocol="paper", augment=False, patience=0)
        base.update(kw)
        return TrainConfig(**base)

    @property
    def epochs_per_fold(self) -> int:
        """Epochs one fold trains in all: pretraining + ``epochs`` with teachers, teacher and
        student with unlabeled data alone, else ``epochs``."""
        if self.teachers:
            return self.distill_epochs + self.epochs
        return self.epochs + ((self.student_epochs or self.epochs) if self.unlabeled else 0)

    def to_json(self) -> str:
        """The config as indented JSON: ``config.json`` of a run, and part of final model cards."""
        return json.dumps(dataclasses.asdict(self), indent=1)

    @staticmethod
    def from_dict(d: dict[str, Any]) -> "TrainConfig":
        """Inverse of :meth:`to_json` (after ``json.loads``); unknown keys raise :class:`SmallCovidError`."""
        fields = {f.name for f in dataclasses.fields(TrainConfig)}
        unknown = sorted(set(d) - fields)
        if unknown:
            raise SmallCovidError(f"unknown training option(s): {', '.join(unknown)}")
        for key in ("zoom_range", "teachers"):  # JSON has lists; the config holds tuples
            if d.get(key) is not None:
                d = {**d, key: tuple(d[key])}
        return TrainConfig(**d)
