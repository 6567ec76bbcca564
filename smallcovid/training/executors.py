"""Where a run's folds train: in this process (``"local"``, the default) or as Ray tasks (``"ray"``).

:func:`smallcovid.training.loop.train` hands the unfinished folds to a *fold runner*,
an object with ``name`` and ``run_folds(run, data, todo) -> dict``; the dict it
returns (which executor ran, and for Ray the job and task ids) goes into
``summary.json`` under ``"executor"``. Everything after the folds (out-of-fold
evaluation, calibration, the final model) runs on the caller's machine either way.

:class:`LocalFolds` is today's loop. :class:`smallcovid.training.ray_folds.RayFolds`
sends one Ray task per fold; that module imports Ray only when a run uses it.
"""

from __future__ import annotations

from typing import Any, Protocol

from smallcovid.core.cluster import check_executor
from smallcovid.core.errors import SmallCovidError
from smallcovid.data.dataset import LabeledSet
from smallcovid.training.context import FoldContext, RunContext
from smallcovid.training.ray_folds import RayFolds
from smallcovid.training.semi import train_model

__all__ = ["FoldRunner", "LocalFolds", "RayFolds", "make_runner"]

Todo = list[tuple[int, dict[str, list[str]]]]  # (1-based fold, {"train": stems, "val": stems})


class FoldRunner(Protocol):
    """Trains the given folds of a run into the run folder; returns what ran them (for summary.json)."""

    name: str

    def run_folds(self, run: RunContext, data: LabeledSet, todo: Todo) -> dict[str, Any]: ...


class LocalFolds:
    """One fold after the other in this process (progress and cancel go straight to ``run``)."""

    name = "local"

    def run_folds(self, run: RunContext, data: LabeledSet, todo: Todo) -> dict[str, Any]:
        """Train each fold of ``todo`` with :func:`smallcovid.training.semi.train_model`."""
        for k, split in todo:
            train_model(FoldContext(run, fold=k), data.subset(split["train"]), data.subset(split["val"]), run.pool)
        return {"name": self.name}


def make_runner(executor: str | FoldRunner = "local", ray_address: str | None = None) -> FoldRunner:
    """The fold runner for ``executor`` (``"local"`` or ``"ray"``), or ``executor`` itself if it is one.

    Raises:
        SmallCovidError: an unknown executor name, or ``ray_address`` given with the local executor.
    """
    if not isinstance(executor, str):
        return executor
    check_executor(executor)
    if executor == "local":
        if ray_address:
            raise SmallCovidError(f"ray_address {ray_address!r} needs executor 'ray', not 'local'")
        return LocalFolds()
    return RayFolds(address=ray_address or None)

