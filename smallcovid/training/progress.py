"""Progress events, cancellation and the run clock: what a training run tells its caller.

This module imports nothing else from :mod:`smallcovid.training`, so the console,
the job queue and the app can listen to a run without importing the engine.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Progress:
    """A progress event. ``fold`` is 1-based; 0 means the final all-data model.

    ``step`` / ``steps`` count batches within the epoch; losses and Dice are means
    over the epoch so far (``val_*`` only on ``"epoch"`` events of a validated fold);
    ``elapsed_s`` and ``eta_s`` are seconds (``eta_s`` is None until one epoch was timed).
    """

    kind: str  # "batch" | "epoch" | "done"
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
    stage: str = ""  # semi-supervised runs: "teacher" or "student"


class TrainingCancelled(Exception):
    """Raised inside ``train`` when ``should_stop()`` returned True between batches."""


ProgressFn = Callable[[Progress], None]
StopFn = Callable[[], bool]


class Clock:
    """Elapsed time and an ETA from the mean duration of the epochs run so far.

    Epochs that will not run here (finished before a resume, or cut by early
    stopping) are :meth:`skip`-ped: they count as done but not as timed, so the
    ETA is neither inflated by them nor reaches 0 before the run does.
    """

    def __init__(self, total_epochs: int) -> None:
        self.start = time.perf_counter()
        self.total = total_epochs
        self.done = 0
        self.timed = 0
        self.timed_s = 0.0

    def skip(self, n: int) -> None:
        """Count ``n`` epochs as done without timing them."""
        self.done += n

    def tick(self, seconds: float) -> None:
        """Count one epoch that took ``seconds`` of wall time."""
        self.done += 1
        self.timed += 1
        self.timed_s += seconds

    def elapsed(self) -> float:
        """Seconds since the clock was made."""
        return time.perf_counter() - self.start

    def eta(self) -> float | None:
        """Seconds left, or None before the first epoch was timed."""
        if not self.timed:
            return None
        return self.timed_s / self.timed * max(self.total - self.done, 0)
