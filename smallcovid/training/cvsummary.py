"""After the folds: out-of-fold evaluation, threshold choice, summary and the final model.

The recommended threshold is chosen on out-of-fold predictions only. Each fold's
reported metrics use a threshold chosen on the *other* folds' predictions, so no
reported number was tuned on the images it is measured on.

When a calibration is fitted, the model is used on calibrated probabilities, so the
threshold it uses is the calibration's own (``summary["calibration"]["threshold"]``),
not ``recommended_threshold`` (the one on raw probabilities):
:func:`operating_threshold` and :func:`threshold_text` say which, for the card, the
console and the app alike.
"""

from __future__ import annotations

import json
import logging
import shlex

from smallcovid.core.devices import describe_device
from smallcovid.data.dataset import LabeledSet
from smallcovid.data.fingerprint import fingerprint_record
from smallcovid.inference.evaluation import best_threshold, evaluate_maps, threshold_sweep
from smallcovid.core.fsutil import atomic_write_text
from smallcovid.models import num_parameters
from smallcovid.models.checkpoint import save_weights
from smallcovid.training.calibrate import calibrate_folds
from smallcovid.training.config import TrainConfig
from smallcovid.training.cvrows import fold_row, mean_std, slice_rows
from smallcovid.training.distill import distill_recipe
from smallcovid.training.context import FoldContext, RunContext
from smallcovid.training.runfolder import fold_dir, read_extensions
from smallcovid.training.oof import oof_maps
from smallcovid.training.plateau import plateau_report
from smallcovid.training.pseudo import recipe
from smallcovid.training.semi import train_model

log = logging.getLogger(__name__)
# The summary's cross-validation fields a card carries (``card["cv"]``).
CARD_CV_KEYS = ("at_threshold", "tuned", "per_fold", "per_slice", "recommended_threshold", "folds", "plateau")


def reproduce_command(cfg: TrainConfig, extensions: list[dict] | None = None, run_id: str | None = None) -> str:
    """The ``train.py`` command line that reruns ``cfg``.

    A run whose cap was raised (``extensions``, see :func:`smallcovid.training.plateau.extend_run`)
    reruns as its first command into ``runs/<run_id>``, then one ``--resume … --extend-epochs``
    per extension, since only the folds short of their plateau trained past the first cap.
    """
    first = extensions[0]["from"] if extensions else cfg.epochs
    parts = ["python", "train.py", "--model", cfg.model, "--data", cfg.data, "--folds", str(cfg.folds),
             "--epochs", str(first), "--image-size", str(cfg.image_size), "--batch-size",
             str(cfg.batch_size), "--lr", str(cfg.lr), "--seed", str(cfg.seed)]
    if cfg.protocol == "paper":
        parts += ["--protocol", "paper"]
    if cfg.steps_per_epoch:
        parts += ["--steps-per-epoch", str(cfg.steps_per_epoch)]
    if cfg.patience:
        parts += ["--patience", str(cfg.patience)]
    if cfg.schedule != "cosine":
        parts += ["--schedule", cfg.schedule, "--cycle-epochs", str(cfg.cycle_epochs)]
    if cfg.copy_paste:
        parts += ["--copy-paste", str(cfg.copy_paste)]
    if cfg.zoom_range is not None:
        parts += ["--zoom-range", str(cfg.zoom_range[0]), str(cfg.zoom_range[1])]
    if not cfg.augment:
        parts += ["--no-augment"]
    for k, v in cfg.model_config.items():
        parts += ["--model-option", f"{k}={json.dumps(v)}"]
    if cfg.precision != "auto":
        parts += ["--precision", cfg.precision]
    if cfg.teachers:
        parts += ["--unlabeled", cfg.unlabeled, "--teachers", *cfg.teachers, "--distill-epochs", str(cfg.distill_epochs)]
    elif cfg.unlabeled:
        parts += ["--unlabeled", cfg.unlabeled, "--pseudo-keep", str(cfg.pseudo_keep)]
        if cfg.student_epochs:
            parts += ["--student-epochs", str(cfg.student_epochs)]
        if cfg.student_lr:
            parts += ["--student-lr", str(cfg.student_lr)]
        parts += ["--pseudo-select", cfg.pseudo_select]
    if cfg.final:
        parts += ["--final"]
    if not extensions:
        return shlex.join(parts)
    rid = run_id or "RUN"
    steps = [shlex.join(parts + ["--out", "runs", "--run-id", rid])]
    steps += [shlex.join(["python", "train.py", "--resume", f"runs/{rid}", "--extend-epochs", str(e["to"])])
              for e in extensions]
    return " && ".join(steps)


def operating_threshold(summary: dict) -> tuple[float, float | None]:
    """``(threshold, raw)``: the threshold a model of this run uses, and the raw-probability one
    when they differ.

    With a calibration in ``summary`` the model runs on calibrated probabilities:
    ``threshold`` is the calibration's and ``raw`` the ``recommended_threshold`` (on
    raw probabilities); without one, ``threshold`` is ``recommended_threshold`` and
    ``raw`` is None. The final model's card stores exactly these (``threshold`` and
    ``threshold_uncalibrated``).

    Raises:
        ValueError: ``summary`` holds no usable recommended or calibrated threshold.
    """
    raw = _threshold_value(summary.get("recommended_threshold"), "recommended_threshold")
    calibration = summary.get("calibration")
    if not calibration:
        return raw, None
    if not isinstance(calibration, dict):
        raise ValueError(f"summary calibration must be a mapping, got {type(calibration).__name__}")
    return _threshold_value(calibration.get("threshold"), "calibration threshold"), raw


def _threshold_value(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < value < 1.0:
        raise ValueError(f"summary {what} must be a number between 0 and 1, got {value!r}")
    return float(value)


def threshold_text(summary: dict) -> str:
    """The threshold of :func:`operating_threshold` in words, e.g. ``"0.10 on calibrated
    probabilities (0.50 on raw probabilities)"`` or ``"0.50 on raw probabilities (no
    calibration fitted)"``.

    Raises:
        ValueError: as :func:`operating_threshold`.
    """
    threshold, raw = operating_threshold(summary)
    if raw is None:
        return f"{threshold:.2f} on raw probabilities (no calibration fitted)"
    return f"{threshold:.2f} on calibrated probabilities ({raw:.2f} on raw probabilities)"


def finish_run(run: RunContext, data: LabeledSet, splits: list[dict[str, list[str]]],
               executor: dict | None = None) -> dict:
    """Evaluate every fold's best model out of fold; write each ``metrics.json``, the final
    model (when ``cfg.final``) and ``summary.json``; returns the summary.

    ``splits`` holds one ``{"train": stems, "val": stems}`` per fold, in fold order.
    ``executor`` says what trained the folds (default ``{"name": "local"}``; a Ray run adds
    its job and task ids); it is stored as the summary's ``"executor"``.
    """
    summary = summarise_folds(run, data, splits, executor)
    if run.cfg.final:
        summary["final"], summary["elapsed_s"] = _train_final(run, data, summary)  # the card's total time
    atomic_write_text(run.out / "summary.json", json.dumps(summary, indent=1))
    run.report("done", 0, eta_s=0.0)
    return summary


def summarise_folds(run: RunContext, data: LabeledSet, splits: list[dict[str, list[str]]],
                    executor: dict | None = None) -> dict:
    """The summary of the trained folds in ``run.out`` (no final model, nothing written but each
    fold's ``metrics.json``): out-of-fold metrics, threshold, calibration, plateau check."""
    cfg, out, device = run.cfg, run.out, run.device
    steps = len(splits) + 3

    def phase(step: int, what: str) -> None:  # a "summary" progress event (its ETA: the epochs still to train)
        run.report("summary", 0, step=step, steps=steps, stage=what)

    phase(0, "out-of-fold predictions")
    fold_maps, fold_sets = oof_maps(out, cfg, data, splits, device)
    phase(1, "threshold choice")
    all_maps = [m for ms in fold_maps for m in ms]
    all_samples = [s for vs in fold_sets for s in vs.samples]
    sweep = threshold_sweep(all_maps, all_samples)
    chosen = best_threshold(sweep)
    per_fold, per_slice = [], []
    for k, (maps, val) in enumerate(zip(fold_maps, fold_sets), start=1):
        phase(1 + k, f"fold {k} metrics")
        others_maps = [m for j, ms in enumerate(fold_maps) if j != k - 1 for m in ms]
        others = [s for j, vs in enumerate(fold_sets) if j != k - 1 for s in vs.samples]
        thr_k = best_threshold(threshold_sweep(others_maps, others))
        at_paper = evaluate_maps(maps, val.samples, cfg.threshold)
        tuned = evaluate_maps(maps, val.samples, thr_k)
        hist = fold_dir(out, k) / "resume" / "resume.json"
        best_epoch = json.loads(hist.read_text())["meta"]["best_epoch"] if hist.is_file() else None
        metrics = {"fold": k, "n_val": len(val), "best_epoch": best_epoch,
                   "at_threshold": {"threshold": cfg.threshold, **at_paper.to_dict()},
                   "tuned": {"threshold": thr_k, **tuned.to_dict()}}
        atomic_write_text(fold_dir(out, k) / "metrics.json", json.dumps(metrics, indent=1))
        per_fold.append(metrics)
        per_slice += slice_rows(tuned, k)
    phase(steps - 1, "calibration")
    calibration, declined = _calibration(fold_maps, fold_sets)
    summary = {
        "model": cfg.model,
        "folds": len(splits),
        "n_slices": len(data),
        "threshold_sweep": sweep,
        "recommended_threshold": chosen,
        "at_threshold": mean_std(per_fold, "at_threshold"),
        "tuned": mean_std(per_fold, "tuned"),
        "per_fold": [{"fold": m["fold"], "best_epoch": m["best_epoch"],
                      "at_threshold": fold_row(m["at_threshold"]), "tuned": fold_row(m["tuned"])} for m in per_fold],
        "per_slice": per_slice,
        "calibration": calibration,
        **({"calibration_declined": declined} if declined else {}),
        "semi_supervised": _semi_record(cfg),
        "elapsed_s": run.clock.elapsed(),
        "device": describe_device(device),
        "command": reproduce_command(cfg, read_extensions(out), out.name),
        "executor": executor or {"name": "local"},
        "plateau": plateau_report(out, cfg, len(splits)),
    }
    return summary


def _semi_record(cfg: TrainConfig) -> dict | None:
    """The unlabeled-data recipe of the run (distillation or self-training), or None without one."""
    if cfg.teachers:
        return distill_recipe(cfg)
    if cfg.unlabeled:
        return recipe(cfg.unlabeled, cfg.pseudo_keep, cfg.student_epochs or cfg.epochs,
                      student_lr=cfg.student_lr or cfg.lr, select=cfg.pseudo_select)
    return None


def _calibration(fold_maps, fold_sets) -> tuple[dict | None, dict | None]:
    """``(calibration, declined)``: the nested out-of-fold calibration (see
    :mod:`smallcovid.training.calibrate`), or None when it cannot be fitted or would not
    lower the calibration error; ``declined`` records such a fit's figures."""
    try:
        cal = calibrate_folds(fold_maps, [vs.samples for vs in fold_sets])
    except ValueError as exc:  # e.g. a run whose validation slices hold no lesion at all
        log.warning("no calibration fitted: %s", exc)
        return None, None
    # A two-parameter map can fit the pooled pixels and still miscalibrate held-out folds (e.g.
    # maps averaged over test-time views are no longer a sigmoid of one logit): keep the raw
    # probabilities then, which are the better calibrated of the two.
    if cal["ece_after"] >= cal["ece_before"]:
        log.warning("no calibration: fitted on the other folds it raises the calibration error (%.4f -> %.4f)",
                    cal["ece_before"], cal["ece_after"])
        keep = ("method", "a", "b", "ece_before", "ece_after")
        return None, {**{k: cal[k] for k in keep if k in cal},
                      "why": "the nested calibration error was not lower than the raw probabilities'"}
    return cal, None


def final_card(run: RunContext, data: LabeledSet, summary: dict) -> dict:
    """The final model's card before training: the run's recipe, CV results and command
    (:func:`set_operating_point` adds its threshold, calibration, size and time)."""
    cfg = run.cfg
    operating_threshold(summary)  # before any training: a bad summary fails fast
    return {
        "model": cfg.model,
        "threshold_note": f"threshold chosen on out-of-fold predictions: {threshold_text(summary)}",
        "training": {"data": cfg.data, "n_slices": len(data), "protocol": cfg.protocol,
                     "config": json.loads(cfg.to_json()), "device": summary["device"]},
        "cv": {k: summary.get(k) for k in CARD_CV_KEYS},
        "semi_supervised": summary.get("semi_supervised"),
        "command": summary["command"],
        # which slices the weights saw: the app flags a score on one of them as in-sample
        "training_slices": fingerprint_record(s.image for s in data.samples),
    }


def set_operating_point(card: dict, summary: dict, *, input_size: int, params: int, training_time_s: float) -> dict:
    """Add to ``card`` (in place; also returned) the threshold the model runs at, with the
    calibration and the raw threshold when the summary has one, its input size, parameter
    count and training time (s)."""
    threshold, raw = operating_threshold(summary)
    card.update(input_size=input_size, threshold=threshold, params=params, training_time_s=training_time_s)
    if raw is not None:
        card.update(calibration=summary["calibration"], threshold_uncalibrated=raw)
    if summary.get("calibration_declined"):
        card["calibration_declined"] = summary["calibration_declined"]
    return card


def _train_final(run: RunContext, data: LabeledSet, summary: dict) -> tuple[dict, float]:
    """Train the final model on all slices; its card carries the CV results and the threshold.

    Returns ``({"weights", "sha256"}, training_time_s)``: the weights file and the run's whole
    training time (the card's ``training_time_s``).
    """
    card = final_card(run, data, summary)
    ctx = FoldContext(run, fold=0, card=card, epochs_override=summary.get("plateau", {}).get("final_epochs"))
    model = train_model(ctx, data, None, run.pool)
    # Saved again over the training checkpoint, which holds the config's threshold and no time yet.
    elapsed = run.clock.elapsed()
    set_operating_point(card, summary, input_size=run.cfg.image_size, params=num_parameters(model),
                        training_time_s=elapsed)
    final_card_saved = save_weights(model, ctx.weights_path, card=card)
    return {"weights": str(ctx.weights_path), "sha256": final_card_saved.get("sha256")}, elapsed
