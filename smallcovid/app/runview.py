"""Read a training run folder for display: curves, summary, log tail and progress.

A run folder (see :mod:`smallcovid.training.loop`) holds ``fold_<k>/history.csv``
(columns epoch, train_loss, val_loss, val_dice, val_dice_best, lr; a missing column reads as NaN), ``final/history.csv`` for the
all-data model, ``summary.json`` when the folds are done, and ``train.log`` for jobs.
Everything here tolerates a run that is still being written: missing or partial
files give empty results, never an exception. The texts for the Train page's job
view (:func:`job_caption`, :func:`stop_reason`, :func:`cv_results_heading`,
:func:`results_caption`) live here too, so that their wording is tested without Streamlit.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

from smallcovid.training.cvsummary import threshold_text
from smallcovid.training.runfolder import FINAL_MODEL

HISTORY_COLUMNS = ("epoch", "train_loss", "val_loss", "val_dice", "val_dice_best", "lr")


def read_history(path: str | Path) -> dict[str, list[float]]:
    """``history.csv`` -> column name -> values (NaN for empty cells); {} when unreadable."""
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    except (OSError, csv.Error, UnicodeDecodeError):
        return {}
    out: dict[str, list[float]] = {c: [] for c in HISTORY_COLUMNS}
    for row in rows:
        for c in HISTORY_COLUMNS:
            try:
                out[c].append(float(row.get(c) or "nan"))
            except ValueError:
                out[c].append(math.nan)
    return out if rows else {}


def read_histories(run_dir: str | Path) -> dict[int, dict[str, list[float]]]:
    """Fold number -> its history (fold 0 is the final all-data model); folds without history are left out."""
    run = Path(run_dir)
    out = {}
    for d in sorted(run.glob("fold_*")):
        try:
            k = int(d.name.removeprefix("fold_"))
        except ValueError:
            continue
        h = read_history(d / "history.csv")
        if h:
            out[k] = h
    final = read_history(run / "final" / "history.csv")
    if final:
        out[0] = final
    return out


def card_histories(run_dir: str | Path) -> dict[str, dict[str, list[float | None]]]:
    """:func:`read_histories` as a model card stores them: string fold keys, values rounded
    to 5 decimals, NaN as null (JSON has no NaN)."""
    return {str(k): {c: [None if v != v else round(v, 5) for v in vals] for c, vals in cols.items()}
            for k, cols in read_histories(run_dir).items()}


def read_summary(run_dir: str | Path) -> dict | None:
    """``summary.json`` of a finished run, or None."""
    try:
        data = json.loads((Path(run_dir) / "summary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def log_tail(path: str | Path, lines: int = 20, max_bytes: int = 64 * 1024) -> str:
    """The last ``lines`` lines of a log (reads at most ``max_bytes`` from its end); "" when missing."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, 2)
            size = fh.tell()
            fh.seek(max(0, size - max_bytes))
            text = fh.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    # Progress bars rewrite one line with carriage returns: keep the last state of each line.
    rows = [r.rstrip("\r").rsplit("\r", 1)[-1] for r in text.rstrip("\n").split("\n")]
    return "\n".join(rows[-lines:])


def progress_fraction(progress: dict | None, config: dict) -> float:
    """Share of the whole job done (0..1) from the latest progress event and the job's config."""
    if not progress:
        return 0.0
    if progress.get("kind") == "done":
        return 1.0
    folds = int(progress.get("folds") or config.get("folds") or 1)
    epochs = int(progress.get("epochs") or config.get("epochs") or 1)
    total = (folds + int(bool(config.get("final")))) * epochs
    if progress.get("kind") == "summary":  # between the last fold and the final model
        return max(0.0, min(1.0, folds * epochs / max(1, total)))
    fold = int(progress.get("fold") or 0)
    position = folds if fold == 0 else fold - 1  # fold 0 = the final model, trained last
    steps = max(1, int(progress.get("steps") or 1))
    within = max(0, int(progress.get("epoch") or 1) - 1) + min(1.0, int(progress.get("step") or 0) / steps)
    return max(0.0, min(1.0, (position * epochs + within) / max(1, total)))


def progress_text(progress: dict | None) -> str:
    """``fold 2/5 · epoch 3/60 · step 7/12 · train loss 0.412 · val Dice 0.655 · ETA 4 min``.

    Between the last fold and the final model (``"summary"`` events of
    :func:`smallcovid.training.cvsummary.finish_run`): ``summary: calibration (step 8/8) · elapsed 3 min · then the final model, about 40 s``.
    """
    if not progress:
        return "waiting to start"
    if progress.get("kind") == "done":
        return "finished"
    if progress.get("kind") == "summary":
        step, steps = int(progress.get("step") or 0), int(progress.get("steps") or 1)
        parts = [f"summary: {progress.get('stage') or 'out-of-fold evaluation'} (step {step + 1}/{steps})"]
        if progress.get("elapsed_s") is not None:
            parts.append(f"elapsed {_duration(progress['elapsed_s'])}")
        # The clock times epochs only: its ETA here is the final model's training, after this phase.
        if progress.get("eta_s"):
            parts.append(f"then the final model, about {_duration(progress['eta_s'])}")
        return " · ".join(parts)
    fold = progress.get("fold")
    parts = ["final model (all data)" if fold == 0 else f"fold {fold}/{progress.get('folds')}",
             f"epoch {progress.get('epoch')}/{progress.get('epochs')}"]
    if progress.get("steps"):
        parts.append(f"step {progress.get('step')}/{progress.get('steps')}")
    for key, label in (("train_loss", "train loss"), ("val_loss", "val loss"), ("val_dice", "val Dice")):
        if progress.get(key) is not None:
            parts.append(f"{label} {progress[key]:.3f}")
    eta = progress.get("eta_s")
    if eta is not None:
        parts.append(f"ETA {_duration(eta)}")
    return " · ".join(parts)


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


def plural(n: Any, word: str) -> str:
    """``"1 epoch"``, ``"2 epochs"``; a count that is not a whole number keeps the plural (``"? epochs"``)."""
    try:
        one = float(n) == 1
    except (TypeError, ValueError):
        one = False
    return f"{n} {word}" if one else f"{n} {word}s"


def job_caption(config: dict, run_dir: str | Path) -> str:
    """The one-line recipe of a job: ``2 folds · 1 epoch · image 32 px · batch 2 · lr 0.001 · ...``."""
    return (f"{plural(config.get('folds'), 'fold')} · {plural(config.get('epochs'), 'epoch')} · "
            f"image {config.get('image_size')} px · batch {config.get('batch_size')} · lr {config.get('lr')} · "
            f"protocol {config.get('protocol')} · data {config.get('data')} · run folder {run_dir}")


def stop_reason(error: str | None, default: str, *, sentence: bool = True) -> str:
    """The first line of a stopped job's error (``default`` when there is none).

    ``sentence=True`` makes it the start of a sentence (first letter upper case, no final
    period), to be followed by more text; ``False`` keeps the line as recorded. Jobs
    recorded before the final model had its own name say ``fold 0``; either way they
    read as the final model here.
    """
    text = (error or "").strip()
    reason = text.splitlines()[0] if text else default
    if reason.startswith(("fold 0 ", "fold 0:")):
        reason = FINAL_MODEL + reason[len("fold 0"):]
    if not sentence:
        return reason
    reason = reason.rstrip(".")
    return reason[:1].upper() + reason[1:]


def cluster_text(executor: dict | None, cluster: dict | None, *, active: bool) -> str:
    """The Ray line of a job: ``Runs on Ray (HEAD:6379) · Ray job 02000000 · tasks fold 1: 3a…, fold 2: 9c…``;
    "" for a job that runs on this machine.

    Without task ids yet, an ``active`` (queued or running) job is ``waiting for the cluster``;
    a job that stopped before any fold task started says so instead (its error is shown beside).
    """
    if not executor or executor.get("name") != "ray":
        return ""
    where = executor.get("address") or "a local Ray instance"
    info = cluster if isinstance(cluster, dict) else {}
    tasks = ", ".join(f"fold {t.get('fold')}: {str(t.get('task_id', ''))[:12]}…" for t in info.get("tasks") or [])
    text = f"Runs on Ray ({where})"
    if info.get("ray_job_id"):
        text += f" · Ray job {info['ray_job_id']}"
    if tasks:
        return f"{text} · tasks {tasks}"
    return f"{text} · " + ("waiting for the cluster" if active else "no fold task started on the cluster")


def cv_results_heading(threshold: Any, image_size: Any) -> str:
    """Markdown heading of the per-fold table, saying which thresholds its numbers are at and how
    they relate to the Dice panel.

    The table (:func:`smallcovid.app.cardview.cv_operating_rows`, as on the Models page) scores
    each fold at its tuned threshold, chosen on the other folds' out-of-fold predictions, the
    way the model's own threshold is chosen (:func:`smallcovid.training.cvsummary.finish_run`);
    its last column is Dice at the run's fixed ``threshold``. Each fold's model is its best
    epoch by ``val_dice_best`` (the dotted line), see :func:`smallcovid.training.fold.train_fold`;
    the table scores that model again on the validation slices at their own size, whereas the
    curves were measured on ``image_size`` x ``image_size`` inputs and masks, so the last
    column is close to the solid line at that epoch but not the same number.
    """
    if isinstance(threshold, (int, float)) and not isinstance(threshold, bool):
        at = f"threshold {threshold:g}"
    else:
        at = "the run's threshold" if threshold is None else f"threshold {threshold}"
    size = f"{image_size} px" if image_size else "the model's input size"
    return (f"**Cross-validation results** at each fold's tuned threshold (the threshold column, on raw "
            f"probabilities), chosen on the other folds' out-of-fold predictions as the model's own threshold "
            f"is; the last column is Dice at {at}. Each fold's model is its best epoch: the highest point of "
            f"the dotted line (best-threshold Dice) in the Dice panel. The table scores that model again on the "
            f"fold's validation slices at their own size, so its last column can differ a little from the solid "
            f"line (Dice at {at}, measured at {size}) at that epoch.")


def results_caption(summary: dict, final: bool) -> str:
    """The line under the per-fold table: the threshold the model uses, the device and the training time.

    ``final``: the run trains a final model, whose card carries that threshold; else the
    run's fold models use it. An old or partial summary without a usable threshold leaves
    that part out.
    """
    parts = []
    try:
        text = threshold_text(summary)
    except ValueError:
        text = ""
    if text:
        who = "the model card uses" if final else "the fold models use"
        parts.append(f"Threshold {who}: {text}, chosen on out-of-fold predictions")
    if summary.get("device"):
        parts.append(str(summary["device"]))
    elapsed = summary.get("elapsed_s")
    if isinstance(elapsed, (int, float)) and not isinstance(elapsed, bool) and elapsed >= 0:
        parts.append(f"training time {_duration(elapsed)}")
    return " · ".join(parts)
