"""Progress events, cancellation and the run clock: what a training run tells its caller.

This module imports nothing else from :mod:`smallcovid.training`, so the console,
the job queue and the app can listen to a run without importing the engine.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from smallcovid.core.fsutil import atomic_write_text

log = logging.getLogger(__name__)
CLOCK_FILE = "clock.json"  # in a run folder: its training time so far (see spent_seconds)


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


class TrainingCancelled(BaseException):
    """Raised inside ``train`` when ``should_stop()`` returned True between batches, or by
    the worker's SIGTERM handler.

    A BaseException, like KeyboardInterrupt: a signal can arrive anywhere, e.g. while an
    image decoder runs, and code that turns any ``Exception`` into an input error there must
    not report a cancel as a corrupt file.
    """


ProgressFn = Callable[[Progress], None]
StopFn = Callable[[], bool]


class Clock:
    """Elapsed time and an ETA from the mean duration of the epochs run so far.

    Epochs that will not run here (finished before a resume, or cut by early
    stopping) are :meth:`skip`-ped: they count as done but not as timed, so the
    ETA is neither inflated by them nor reaches 0 before the run does.

    ``spent_s`` is the training time of the same run before it was stopped and
    resumed: :meth:`elapsed` counts on from it, so a resumed run reports its
    whole training time, not only the part since the resume.
    """

    def __init__(self, total_epochs: int, spent_s: float = 0.0) -> None:
        if not (isinstance(spent_s, (int, float)) and 0.0 <= spent_s < float("inf")):
            raise ValueError(f"spent_s must be a finite number of seconds >= 0, got {spent_s!r}")
        self.start = time.perf_counter()
        self.spent_s = float(spent_s)
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
        """Seconds of the run: ``spent_s`` plus the seconds since the clock was made."""
        return self.spent_s + time.perf_counter() - self.start

    def eta(self) -> float | None:
        """Seconds left, or None before the first epoch was timed."""
        if not self.timed:
            return None
        return self.timed_s / self.timed * max(self.total - self.done, 0)


def spent_seconds(out: Path) -> float:
    """Training seconds recorded in run folder ``out`` by earlier (stopped) runs; 0.0 if none.

    An unreadable record only costs the time display, so it gives 0.0 with a warning.
    """
    path = Path(out) / CLOCK_FILE
    if not path.is_file():
        return 0.0
    try:
        value = json.loads(path.read_text(encoding="utf-8"))["elapsed_s"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("%s: unreadable (%s); the run's earlier training time is not counted", path, exc)
        return 0.0
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < float("inf"):
        log.warning("%s: elapsed_s %r is not a number of seconds; the run's earlier training time is not counted",
                    path, value)
        return 0.0
    return float(value)


def record_clock(out: Path, clock: Clock) -> None:
    """Write ``clock``'s elapsed time to ``<out>/clock.json`` for :func:`spent_seconds`.

    A failed write is logged, not raised: the time is for display, and the run's
    checkpoints, not this record, decide whether it can resume.
    """
    try:
        atomic_write_text(Path(out) / CLOCK_FILE, json.dumps({"elapsed_s": round(clock.elapsed(), 3)}))
    except OSError as exc:
        log.warning("could not record the training time in %s: %s", Path(out) / CLOCK_FILE, exc)
