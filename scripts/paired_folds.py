"""Two runs on the same folds, compared fold by fold (the what-was-tried table's "paired" figures).

    python scripts/paired_folds.py A B [--by-epoch N]

A and B are each a finished run folder (``summary.json``), a ``summary.json`` itself, or a
model card (``weights/<name>.json``). The folds must be the same (same data, same seed): the
script checks the fold count and, for run folders, that ``splits.json`` matches.

``--by-epoch N`` compares two run folders as they stood at epoch N instead, e.g. a cap-150 run
under warm restarts against a cap-N run, whose first N epochs follow the same schedule: per fold,
the best validation Dice (``val_dice_best``: the best over thresholds, the checkpoint's selection
figure) of ``fold_<k>/history.csv`` within epochs 1..N. Runs may be unfinished, but every fold
must have reached epoch N.

Prints, for Dice (at each fold's threshold chosen on the other folds, the card's CV figure) and
for the two lesion types: B − A per fold, the mean ± sample standard deviation of those
differences, t = mean / (sd / √k), and in how many folds B is better.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from pathlib import Path

METRICS = ("dice", "dice_ground-glass", "dice_consolidation")


def load_folds(source: Path) -> tuple[list[dict], Path | None]:
    """Per-fold rows (``{"fold", "tuned": {...}}``) of a run folder, summary file or card; plus
    the run's ``splits.json`` when there is one."""
    source = Path(source)
    path = source / "summary.json" if source.is_dir() else source
    if not path.is_file():
        raise ValueError(f"{source}: neither a finished run folder nor a summary or card file")
    doc = json.loads(path.read_text())
    rows = doc.get("per_fold") or (doc.get("cv") or {}).get("per_fold")
    if not rows:
        raise ValueError(f"{path}: no per-fold results (per_fold or cv.per_fold)")
    splits = path.parent / "splits.json"
    return sorted(rows, key=lambda r: r["fold"]), (splits if splits.is_file() else None)


def load_history_folds(run: Path, epochs: int) -> tuple[list[dict], Path]:
    """Per-fold rows like :func:`load_folds`'s, each fold's best ``val_dice_best`` in epochs 1..N."""
    splits = Path(run) / "splits.json"
    if not splits.is_file():
        raise ValueError(f"{run}: not a run folder (no splits.json)")
    rows = []
    for k in range(1, len(json.loads(splits.read_text())["folds"]) + 1):
        path = Path(run) / f"fold_{k}" / "history.csv"
        if not path.is_file():
            raise ValueError(f"{path}: missing (fold {k} has not started)")
        with path.open(newline="") as fh:
            hist = [r for r in csv.DictReader(fh) if int(r["epoch"]) <= epochs]
        if len(hist) < epochs:
            raise ValueError(f"{path}: fold {k} has {len(hist)} of the {epochs} epochs")
        rows.append({"fold": k, "tuned": {"dice": max(float(r["val_dice_best"]) for r in hist)}})
    return rows, splits


def paired(a: list[dict], b: list[dict], metric: str) -> dict:
    """B − A per fold for ``metric`` (tuned), with mean, sample sd, t and B's wins."""
    if [r["fold"] for r in a] != [r["fold"] for r in b]:
        raise ValueError(f"the runs have different folds: {[r['fold'] for r in a]} vs {[r['fold'] for r in b]}")
    diffs = []
    for ra, rb in zip(a, b):
        va, vb = ra["tuned"].get(metric), rb["tuned"].get(metric)
        if va is None or vb is None:
            return {"metric": metric, "diffs": None}
        diffs.append(vb - va)
    k = len(diffs)
    mean = sum(diffs) / k
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (k - 1)) if k > 1 else float("nan")
    t = mean / (sd / math.sqrt(k)) if sd and sd == sd else float("nan")
    means = [sum(r["tuned"][metric] for r in rows) / k for rows in (a, b)]
    return {"metric": metric, "diffs": diffs, "mean": mean, "sd": sd, "t": t,
            "wins": sum(d > 0 for d in diffs), "a": means[0], "b": means[1]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("a", type=Path)
    p.add_argument("b", type=Path)
    p.add_argument("--by-epoch", type=int, metavar="N",
                   help="compare the runs' best validation Dice within their first N epochs")
    args = p.parse_args(argv)
    try:
        if args.by_epoch is not None:
            if args.by_epoch < 1:
                raise ValueError(f"--by-epoch must be >= 1, got {args.by_epoch}")
            (a, sa), (b, sb) = (load_history_folds(r, args.by_epoch) for r in (args.a, args.b))
        else:
            (a, sa), (b, sb) = load_folds(args.a), load_folds(args.b)
        if sa and sb and json.loads(sa.read_text())["folds"] != json.loads(sb.read_text())["folds"]:
            raise ValueError("the two runs' splits.json differ: not the same folds")
        results = [paired(a, b, m) for m in METRICS]
    except (ValueError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"A = {args.a}\nB = {args.b}")
    for r in results:
        if r["diffs"] is None:
            print(f"{r['metric']}: not in both")
            continue
        folds = ", ".join(f"{d:+.3f}" for d in r["diffs"])
        print(f"{r['metric']}: A {r['a']:.4f}, B {r['b']:.4f}; B − A {r['mean']:+.4f} ± {r['sd']:.4f} "
              f"(t = {r['t']:.1f}; B better in {r['wins']} of {len(r['diffs'])} folds: {folds})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
