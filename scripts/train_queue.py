"""A training queue: a plain file of training runs, trained one after another in the background.

    python scripts/train_queue.py run    QUEUE --runs DIR [--threads 1] [--follow main]
    python scripts/train_queue.py status QUEUE --runs DIR

QUEUE holds one run per line, ``RUN_ID  train.py flags...`` (``#`` starts a comment;
``$DATA`` and other environment variables are expanded, ``$RUNS`` to the runs folder), e.g.::

    segnet-v3   --model segnet --data $DATA --folds 5 --seed 0 --final --schedule restarts

``run`` re-reads the file before each run, so lines can be added while it works. A run
whose folder holds ``summary.json`` is done; one whose folder exists is continued with
``train.py --resume`` (after a reboot, a kill, a crash); a run that fails is recorded in
``DIR/queue-state.json`` and skipped until its line changes. One runner per runs folder
(``DIR/queue.lock``). ``--follow REF`` checks the repository out at REF (detached) before
each run starts, never during one, so a queue in its own worktree picks up new code between
runs. Each run's output goes to ``DIR/<RUN_ID>.log``.

A line with ``--only-folds K ...`` trains just those folds (no summary, no final model) and
is done when ``partial.json`` lists them.

A line may end its flags with ``--plateau-max N`` (read by the queue, not passed to
``train.py``): when such a "restarts" run finishes with folds that ran into its cap short of
their plateau, the queue raises the cap to the end of the next restart cycle
(``train.py --resume RUN --extend-epochs``, which reopens only those folds and keeps the
finished run as ``RUN.cap<old cap>/``) and trains on,
as long as that cycle ends by epoch N. A run may have two lines, the first without
``--plateau-max`` (it stops at its cap, e.g. to teach a run queued after it), the second with
it further down (the queue comes back to extend it then).

``status`` prints one line per run: state, epochs done / planned, elapsed and ETA, the best
validation Dice so far (mean over the folds that have one), for a run being extended the CV
Dice of each cap kept beside it (``RUN.cap<N>/``), and, when done, the CV Dice and the
plateau check.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from smallcovid.training.config import TrainConfig  # noqa: E402
from smallcovid.training.queuefile import (  # noqa: E402,F401  (parse_queue ... are this script's API too)
    finished, hms, next_cap, only_folds, parse_queue, partial_done, pending_extension, split_plateau_max)
from smallcovid.training.plateau import snapshot_dir  # noqa: E402
from smallcovid.training.runfolder import fold_caps  # noqa: E402
from smallcovid.training.runlock import run_is_held  # noqa: E402


def _line_key(flags: list[str]) -> str:
    return hashlib.sha256(json.dumps(flags).encode()).hexdigest()[:16]


def _state(runs: Path) -> dict:
    path = runs / "queue-state.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def _save_state(runs: Path, state: dict) -> None:
    tmp = runs / "queue-state.json.tmp"
    tmp.write_text(json.dumps(state, indent=1))
    tmp.replace(runs / "queue-state.json")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def _lock(runs: Path) -> Path:
    lock = runs / "queue.lock"
    if lock.is_file():
        pid = int(lock.read_text().strip() or 0)
        if pid and _alive(pid):
            raise SystemExit(f"a queue runner (pid {pid}) already works on {runs}")
    lock.write_text(str(os.getpid()))
    return lock


def _next(queue: Path, runs: Path) -> tuple[str, list[str]] | None:
    state = _state(runs)
    for run_id, flags in parse_queue(queue):
        if partial_done(runs / run_id, flags) is not None:
            continue
        if (runs / run_id / "summary.json").is_file() and next_cap(runs / run_id, split_plateau_max(flags)[1]) is None:
            continue
        failed = state.get(run_id)
        if failed and failed.get("line") == _line_key(flags):
            continue
        return run_id, flags
    return None


def run_queue(queue: Path, runs: Path, threads: int, follow: str | None, python: str) -> None:
    """Train every unfinished run of ``queue``, one at a time, until none is left."""
    runs.mkdir(parents=True, exist_ok=True)
    lock = _lock(runs)
    try:
        while (item := _next(queue, runs)) is not None:
            run_id, flags = item
            if follow:
                subprocess.run(["git", "-C", str(ROOT), "checkout", "-q", "--detach", follow], check=False)
            folder = runs / run_id
            train_flags, plateau_max = split_plateau_max(flags)
            cap = next_cap(folder, plateau_max)
            if cap is not None:
                cmd = [python, "train.py", "--resume", str(folder), "--extend-epochs", str(cap), "--threads", str(threads)]
            elif (folder / "config.json").is_file():
                part = ["--only-folds", *map(str, only_folds(flags))] if only_folds(flags) else []
                cmd = [python, "train.py", "--resume", str(folder), *part, "--threads", str(threads)]
            else:
                cmd = [python, "train.py", *train_flags, "--run-id", run_id, "--out", str(runs), "--threads", str(threads)]
            env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(ROOT)}
            with open(runs / f"{run_id}.log", "a") as log:
                log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {shlex.join(cmd)}\n")
                log.flush()
                rc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT).returncode
            if rc != 0 and not finished(folder, flags):
                state = _state(runs)
                state[run_id] = {"line": _line_key(flags), "rc": rc, "at": time.strftime("%Y-%m-%d %H:%M:%S")}
                _save_state(runs, state)
                if rc < 0 or rc in (137, 143):  # killed: leave the run resumable, stop the queue
                    del state[run_id]
                    _save_state(runs, state)
                    break
    finally:
        lock.unlink(missing_ok=True)


def _fold_rows(folder: Path, stage: str = "") -> list[list[dict]]:
    """History rows per fold folder (``fold_<k>``, then ``final``), of ``stage`` (e.g. "pretrain")."""
    rows = []
    for sub in sorted(folder.glob("fold_*")) + [folder / "final"]:
        hist = sub / stage / "history.csv"
        if hist.is_file():
            with open(hist) as f:
                rows.append(list(csv.DictReader(f)))
    return rows


def _pass_weight(folder: Path, cfg: dict) -> float:
    """Training steps of one pretraining pass over the pool per step of one labeled epoch."""
    pool = Path(cfg["unlabeled"])
    n_pool = sum(1 for f in pool.iterdir() if f.is_file()) if pool.is_dir() else 0
    try:
        n_train = len(json.loads((folder / "splits.json").read_text())["folds"][0]["train"])
    except (OSError, KeyError, IndexError, ValueError):
        return 1.0
    return max(n_pool / max(n_train, 1), 1.0)


def status_line(run_id: str, flags: list[str], runs: Path, state: dict, running: str | None) -> str:
    """One human line for a queued run."""
    folder = runs / run_id
    if (part := partial_done(folder, flags)) is not None:
        rows = "; ".join(f"fold {r['fold']} best val Dice {r['best']:.3f} at epoch {r['best_epoch']}/{r['epochs_run']}, "
                         f"plateau {'ok' if r['ok'] else 'NOT reached'}" for r in part["plateau"])
        return f"{run_id:28s} done     {rows}"
    summary = folder / "summary.json"
    train_flags, plateau_max = split_plateau_max(flags)
    if plateau_max is None and "--epochs" in train_flags:
        # A line that stops at its cap, listed again later with --plateau-max: once the later
        # line extends the run, this line's result is the one kept at its cap.
        kept = snapshot_dir(folder, int(train_flags[train_flags.index("--epochs") + 1])) / "summary.json"
        if kept.is_file():
            summary = kept
    if summary.is_file():
        s = json.loads(summary.read_text())
        d = s["tuned"]["dice"]
        pl = s.get("plateau")
        plateau = "" if pl is None else ("  plateau ok" if pl["ok"] else "  plateau NOT reached: best epochs "
                                         + ",".join(str(f["best_epoch"]) + "/" + str(f["epochs_run"]) for f in pl["per_fold"]))
        if summary.parent != folder:
            more = f"  (kept in {summary.parent.name})"
        else:
            cap = next_cap(folder, plateau_max)
            more = (f"  -> extends to {cap} epochs next" if cap else "") + kept_caps(folder)
        return f"{run_id:28s} done     CV Dice {d['mean']:.3f} ± {d['std']:.3f}  {hms(s['elapsed_s'])}{plateau}{more}"
    failed = state.get(run_id)
    if failed and failed.get("line") == _line_key(flags):
        return f"{run_id:28s} FAILED   exit {failed['rc']} at {failed['at']} (see {run_id}.log)"
    if not (folder / "config.json").is_file():
        return f"{run_id:28s} queued"
    cfg = json.loads((folder / "config.json").read_text())
    # A self-training student trains after its teacher; distillation's pretraining passes (in
    # fold_<k>/pretrain/) are shown apart from the epochs.
    semi = (cfg.get("student_epochs") or cfg["epochs"]) if cfg.get("unlabeled") and not cfg.get("teachers") else 0
    caps = fold_caps(folder, TrainConfig.from_dict(cfg))  # an extended run's folds have their own caps
    planned = sum(caps.values()) + semi * cfg["folds"] + (cfg["epochs"] + semi) * int(cfg.get("final", False))
    if (only := only_folds(flags)) is not None:  # a partial run: just those folds, no final model
        planned = sum(caps[k] for k in only if k in caps) + semi * len(only)
    rows = _fold_rows(folder)
    done = sum(len(r) for r in rows)
    # The final model has no validation slices: the best so far is the folds'.
    bests = [max(float(x["val_dice_best"]) for x in r) for r in rows if r and r[0].get("val_dice_best")]
    clock = folder / "clock.json"
    spent = json.loads(clock.read_text()).get("elapsed_s", 0.0) if clock.is_file() else 0.0
    work_done, work_planned, passes = float(done), float(planned), ""
    if cfg.get("teachers"):
        # A pretraining pass over the pool costs as many steps as ~pool/train labeled epochs,
        # so the ETA weighs it so (labeling the pool, ~1 min per fold, is not counted).
        w = _pass_weight(folder, cfg)
        p_done = sum(len(r) for r in _fold_rows(folder, "pretrain"))
        p_planned = cfg["distill_epochs"] * (cfg["folds"] + int(cfg.get("final", False)))
        work_done += w * p_done
        work_planned += w * p_planned
        passes = f", pretraining {p_done}/{p_planned} passes"
    eta = f"ETA ≤ {hms(spent / work_done * (work_planned - work_done))}" if work_done else "ETA -"
    best = f"best val Dice {sum(bests) / len(bests):.3f} ({len(bests)} folds)" if bests else "no validation yet"
    # Running: a run whose folder a live process holds (the queue file may have been edited since
    # the runner started it, so its first unfinished line is not necessarily the one training).
    # Without file locks: the runner's first unfinished line, or any run written to in the last
    # 10 minutes.
    held = run_is_held(folder)
    if held is None:
        recent = max((f.stat().st_mtime for f in folder.glob("*/**/history.csv")), default=0.0)
        held = running == run_id or time.time() - recent < 600
    what = "running" if held else "paused "
    pace = spent / work_done if work_done else None
    more = pending_extension(folder, cfg, split_plateau_max(flags)[1], pace) + kept_caps(folder)
    return f"{run_id:28s} {what}  {done}/{planned} epochs{passes}  {hms(spent)} spent, {eta}  {best}{more}"


def kept_caps(folder: Path) -> str:
    """``"; cap 620 kept in segnet-r.cap620 (CV Dice 0.673 ± 0.030)"`` for each finished run an
    extension kept beside ``folder`` (see :func:`smallcovid.training.plateau.snapshot_dir`)."""
    parts = []
    for snap in folder.parent.glob(f"{folder.name}.cap*"):
        cap = snap.name[len(folder.name) + len(".cap"):]
        if cap.isdigit() and (snap / "summary.json").is_file():
            d = json.loads((snap / "summary.json").read_text())["tuned"]["dice"]
            parts.append((int(cap), f"; cap {cap} kept in {snap.name} (CV Dice {d['mean']:.3f} ± {d['std']:.3f})"))
    return "".join(text for _, text in sorted(parts))


def status(queue: Path, runs: Path) -> list[str]:
    """One line per run of ``queue`` (see the module docstring)."""
    state = _state(runs)
    lock = runs / "queue.lock"
    runner = int(lock.read_text() or 0) if lock.is_file() else 0
    live = bool(runner) and _alive(runner)
    running = None
    if live:
        item = _next(queue, runs)
        running = item[0] if item else None
    lines = [f"queue {queue.name}: runner {'pid ' + str(runner) if live else 'NOT running'}"]
    lines += [status_line(r, f, runs, state, running) for r, f in parse_queue(queue)]
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("action", choices=["run", "status"])
    p.add_argument("queue", type=Path)
    p.add_argument("--runs", type=Path, required=True, help="folder of the run folders (outside the checkout)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--follow", help="git ref to check out (detached) before each run")
    p.add_argument("--python", default=sys.executable)
    a = p.parse_args(argv)
    os.environ["RUNS"] = str(a.runs.resolve())  # lines may name other runs, e.g. a distillation's teachers
    if a.action == "status":
        print("\n".join(status(a.queue, a.runs)))
        return 0
    run_queue(a.queue, a.runs, a.threads, a.follow, a.python)
    return 0


if __name__ == "__main__":
    sys.exit(main())
