"""Learning-rate schedules: one warm-up + cosine, or cosine warm restarts in doubling cycles.

:func:`lr_at` gives the learning rate of a global step; :func:`cycle_ends` the last epochs
of the restart cycles, where a fold's plateau stop is decided; :func:`plateau_epochs` the
epochs the final all-data model of a restarts run trains.
"""

from __future__ import annotations

import math

from smallcovid.training.config import TrainConfig


def cycle_ends(cycle: int, upto: int) -> list[int]:
    """Last epochs of the "restarts" cycles (``cycle``, 2x, 4x ... epochs long) up to epoch ``upto``.

    >>> cycle_ends(10, 75)
    [10, 30, 70]
    """
    ends, length, end = [], cycle, cycle
    while end <= upto:
        ends.append(end)
        length *= 2
        end += length
    return ends


def plateau_epochs(cfg: TrainConfig, best_epochs: list[int]) -> int | None:
    """Epochs for the final all-data model of a "restarts" run: the end of the restart cycle
    holding the folds' median best epoch (capped at ``cfg.epochs``); None for other schedules."""
    if cfg.schedule != "restarts" or not best_epochs:
        return None
    median = sorted(best_epochs)[len(best_epochs) // 2]
    ends = cycle_ends(cfg.cycle_epochs, 10 * max(cfg.epochs, median) + cfg.cycle_epochs)
    return min(cfg.epochs, next(e for e in ends if e >= median))


def lr_at(cfg: TrainConfig, step: int, total: int, *, base: float | None = None,
          steps_per_epoch: int | None = None, schedule: str | None = None) -> float:
    """Learning rate at 0-based global ``step`` of ``total``: constant for the paper protocol,
    else linear warm-up over the first 5% of steps (of the first cycle with "restarts"), then
    cosine down to 2% of the peak ``base`` (default ``cfg.lr``) over the whole run, or over
    each restart cycle (``cfg.cycle_epochs`` x 1, 2, 4 ... epochs of ``steps_per_epoch``).
    ``schedule`` overrides ``cfg.schedule`` (a stage with its own schedule)."""
    peak = cfg.lr if base is None else base
    if cfg.protocol == "paper":
        return peak
    if (schedule or cfg.schedule) == "restarts":
        spe = steps_per_epoch or 1
        start, length = 0, cfg.cycle_epochs * spe
        while step >= start + length:
            start, length = start + length, length * 2
        warm = max(1, cfg.cycle_epochs * spe // 20) if start == 0 else 0
        if step < warm:
            return peak * (step + 1) / warm
        t = (step - start - warm) / max(1, length - warm)
        return peak * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * t)))
    warm = max(1, total // 20)
    if step < warm:
        return peak * (step + 1) / warm
    t = (step - warm) / max(1, total - warm)
    return peak * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * t)))
