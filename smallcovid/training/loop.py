"""The one training engine (CLI and app): :func:`train` runs a whole k-fold run.

Reading order: :func:`train` checks the run folder, makes or reloads the splits,
trains each unfinished fold with :func:`smallcovid.training.fold.train_fold` (here, or one
Ray task per fold: :mod:`smallcovid.training.executors`), then
:func:`smallcovid.training.cvsummary.finish_run` summarises the folds and
(``final=True``) trains the final model on all slices.

A run folder holds ``config.json``, ``splits.json``, ``clock.json`` (training time so far,
so that a resumed run counts the time spent before it stopped), ``fold_<k>/``
(``<model>.safetensors`` + ``.json`` of the best epoch, ``history.csv``, ``metrics.json``
and ``resume/`` with the last completed epoch), ``summary.json`` and, with
``final=True``, ``final/``.

Imports point one way: ``progress`` <- ``tensors`` / ``state`` <- ``fold`` <- ``cvsummary``
/ ``executors`` <- ``loop``. :class:`Progress` and :class:`TrainingCancelled` are re-exported here for
callers that only import this module.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from smallcovid.core.devices import resolve_device
from smallcovid.core.errors import SmallCovidError
from smallcovid.core.fsutil import atomic_write_text
from smallcovid.data.dataset import LabeledSet, load_dataset, load_splits, make_splits, read_groups, save_splits
from smallcovid.training.config import TrainConfig
from smallcovid.training.distill import check_teachers
from smallcovid.training.cvsummary import finish_run
from smallcovid.training.executors import FoldRunner, make_runner
from smallcovid.training.context import RunContext
from smallcovid.training.runfolder import PARTIAL_FILE, fold_caps, fold_dir
from smallcovid.training.plateau import fold_plateau
from smallcovid.training.pseudo import load_unlabeled
from smallcovid.training.runlock import hold_run
from smallcovid.training.progress import Clock, Progress, ProgressFn, StopFn, TrainingCancelled, spent_seconds
from smallcovid.training.tensors import to_tensors

__all__ = ["Progress", "TrainingCancelled", "train", "to_tensors"]


def train(
    cfg: TrainConfig,
    out_dir: str | Path,
    *,
    progress: ProgressFn | None = None,
    should_stop: StopFn | None = None,
    executor: str | FoldRunner = "local",
    ray_address: str | None = None,
    only_folds: Sequence[int] | None = None,
) -> dict:
    """Run (or resume) k-fold training into ``out_dir``; returns the summary dict.

    Resuming: call again with the same ``cfg`` and ``out_dir``; finished folds are
    kept, an unfinished fold continues after its last completed epoch, and the
    elapsed time (progress events, summary ``elapsed_s``, the final card's
    ``training_time_s``) counts on from the time the run had already trained.

    Args:
        progress: called with each :class:`Progress` event (batches, epochs, the end).
        should_stop: polled before every batch; True raises :class:`TrainingCancelled`
            and leaves a resumable run folder.
        executor: where the folds train: ``"local"`` (this process, one after the other),
            ``"ray"`` (one Ray task per fold, see :mod:`smallcovid.training.ray_folds`) or a
            fold runner object (:class:`smallcovid.training.executors.FoldRunner`, e.g. a
            configured ``RayFolds``). The summary's ``"executor"`` records which one ran.
        ray_address: with ``executor="ray"``: ``None`` starts a local Ray instance for the
            run, ``"auto"`` or ``"HOST:6379"`` joins a running cluster.
        only_folds: train just these folds (1-based) and stop before the summary and the
            final model, which need every fold: e.g. one fold trained again to a later cap.
            The folds and their plateau check go to ``partial.json``, and the returned dict is
            ``{"partial": True, "folds", "plateau"}``. Resuming without ``only_folds`` later
            trains the other folds and finishes the run.

    Raises:
        SmallCovidError: ``out_dir`` holds a run with another config, bad data / splits, an
            unknown executor, or a fold in ``only_folds`` outside 1..folds;
            :class:`~smallcovid.training.runlock.RunBusyError` when another process is training
            ``out_dir``.
        TrainingCancelled: ``should_stop()`` returned True.
    """
    out = Path(out_dir)
    runner = make_runner(executor, ray_address)
    cfg_path = out / "config.json"
    # Compared as configs, not as text: a run folder written before a field existed holds its default.
    if cfg_path.is_file() and TrainConfig.from_dict(json.loads(cfg_path.read_text())) != cfg:
        raise SmallCovidError(f"{out}: holds a run with a different configuration; choose another --out")
    # Data and splits are checked before the run folder is made: a refused run leaves nothing behind.
    device = resolve_device(cfg.device)
    data = load_dataset(cfg.data)
    if cfg.teachers:
        check_teachers(cfg.teachers)
    splits = _splits(cfg, data, out)
    if only_folds is not None:
        bad = sorted(set(only_folds) - set(range(1, len(splits) + 1)))
        if bad or not only_folds:
            raise SmallCovidError(f"only_folds {list(only_folds)}: folds must be in 1..{len(splits)}")
    out.mkdir(parents=True, exist_ok=True)
    with hold_run(out):
        atomic_write_text(cfg_path, cfg.to_json())
        save_splits(out / "splits.json", splits, cfg.seed)
        # A partial run's ETA counts only its folds (no final model).
        n_models = len(splits) + int(cfg.final) if only_folds is None else len(set(only_folds))
        clock = Clock(total_epochs=cfg.epochs_per_fold * n_models, spent_s=spent_seconds(out))
        pool = load_unlabeled(cfg.unlabeled, cfg.image_size) if cfg.unlabeled else None
        run = RunContext(cfg, out, device, clock, folds=len(splits), progress=progress, should_stop=should_stop,
                         pool=pool, keeps_time=True, fold_caps=fold_caps(out, cfg))
        todo = []
        for k, split in enumerate(splits, start=1):
            # metrics.json is written only by finish_run, after every fold's training ended.
            if only_folds is not None and k not in only_folds:
                continue
            if (fold_dir(out, k) / "metrics.json").is_file():
                clock.skip(cfg.epochs_per_fold)
            else:
                todo.append((k, split))
        try:
            ran_by = runner.run_folds(run, data, todo)
            if only_folds is not None:
                return _finish_partial(out, sorted(set(only_folds)))
            return finish_run(run, data, splits, executor=ran_by)
        finally:
            # Also on a cancel or an error: the resumed run adds the partial epoch's time too.
            run.save_clock()


def _finish_partial(out: Path, folds: list[int]) -> dict:
    """Record the folds a partial run trained, with each one's plateau check."""
    rows = []
    for k in folds:
        meta = json.loads((fold_dir(out, k) / "resume" / "resume.json").read_text())["meta"]
        check = fold_plateau(meta)
        rows.append({"fold": k, **{key: check[key] for key in ("best_epoch", "epochs_run", "ok")},
                     "best": round(float(meta["best"]), 4)})
    record = {"partial": True, "folds": folds, "plateau": rows}
    atomic_write_text(out / PARTIAL_FILE, json.dumps(record, indent=1))
    return record


def _splits(cfg: TrainConfig, data: LabeledSet, out: Path) -> list[dict[str, list[str]]]:
    """The run's folds: ``cfg.splits`` if given, else the run's own ``splits.json`` (resume), else new ones."""
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
