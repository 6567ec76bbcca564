"""Console progress and summary tables for ``train.py`` (entry-point helpers, no logging setup)."""

from __future__ import annotations

import sys
from typing import TextIO

from smallcovid.training.cvsummary import threshold_text
from smallcovid.training.progress import Progress


def _hms(seconds: float | None) -> str:
    if seconds is None:
        return "--:--"
    s = int(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


class ConsoleProgress:
    """Prints one line per epoch; on a terminal also a live bar within the epoch."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty()

    def __call__(self, p: Progress) -> None:
        fold = "final" if p.fold == 0 else f"fold {p.fold}/{p.folds}"
        if p.kind == "batch" and self.tty:
            filled = int(20 * p.step / max(p.steps, 1))
            bar = "#" * filled + "." * (20 - filled)
            self.stream.write(f"\r{fold} epoch {p.epoch}/{p.epochs} [{bar}] loss {p.train_loss:.4f} "
                              f"elapsed {_hms(p.elapsed_s)} ETA {_hms(p.eta_s)}")
            self.stream.flush()
        elif p.kind == "epoch":
            val = "" if p.val_dice is None else f" val_loss {p.val_loss:.4f} val_dice {p.val_dice:.4f}"
            self.stream.write(f"{chr(13) if self.tty else ''}{fold} epoch {p.epoch}/{p.epochs} "
                              f"loss {p.train_loss:.4f}{val} elapsed {_hms(p.elapsed_s)} ETA {_hms(p.eta_s)}\n")
            self.stream.flush()


def format_summary(summary: dict) -> str:
    """Per-fold table and mean +- std, at the run's threshold and at the tuned threshold, then the
    threshold the model uses (on calibrated probabilities when a calibration was fitted).

    Raises:
        ValueError: ``summary`` holds no usable threshold (see :func:`smallcovid.training.cvsummary.threshold_text`).
    """
    lines = [f"\n{summary['model']}: {summary['folds']}-fold cross-validation on {summary['n_slices']} slices"]
    head = f"{'fold':<6}{'best ep':>8}{'thr':>6}{'Dice':>8}{'prec':>8}{'recall':>8}{'IoU':>8} | {'tuned thr':>9}{'Dice':>8}"
    lines += [head, "-" * len(head)]
    for f in summary["per_fold"]:
        a, t = f["at_threshold"], f["tuned"]
        lines.append(f"{f['fold']:<6}{str(f['best_epoch']):>8}{a['threshold']:>6.2f}{a['dice']:>8.3f}"
                     f"{a['precision']:>8.3f}{a['recall']:>8.3f}{a['iou']:>8.3f} | {t['threshold']:>9.2f}{t['dice']:>8.3f}")
    a, t = summary["at_threshold"], summary["tuned"]
    lines.append(f"{'mean':<6}{'':>8}{'':>6}" + "".join(f"{a[k]['mean']:>8.3f}" for k in ("dice", "precision", "recall", "iou"))
                 + f" | {'':>9}{t['dice']['mean']:>8.3f}")
    lines.append(f"{'± std':<6}{'':>8}{'':>6}" + "".join(f"{a[k]['std']:>8.3f}" for k in ("dice", "precision", "recall", "iou"))
                 + f" | {'':>9}{t['dice']['std']:>8.3f}")
    for typ in ("ground-glass", "consolidation"):
        key = f"dice_{typ}"
        if key in t and t[key]["mean"] is not None:
            lines.append(f"{typ} Dice (tuned): {t[key]['mean']:.3f} ± {t[key]['std']:.3f}")
    # The calibrated threshold is the one the model uses: print it first, so there is one answer.
    user = "the final model's card uses" if "final" in summary else "the fold models use"
    lines.append(f"recommended threshold (out-of-fold), the one {user}: {threshold_text(summary)}")
    if "final" in summary:
        lines.append(f"final model: {summary['final']['weights']}")
    return "\n".join(lines)
