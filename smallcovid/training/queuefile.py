"""The training queue's file and run states: queue lines, ``--plateau-max``, ``--only-folds``.

A queue file holds one run per line, ``RUN_ID  train.py flags...`` (``#`` starts a comment;
environment variables are expanded). ``scripts/train_queue.py`` runs such a file; this module
reads it and says what a line's run folder still needs: an extension to the next restart
cycle (:func:`next_cap`), or nothing once its folds trained (:func:`partial_done`).
"""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path

from smallcovid.training.config import TrainConfig
from smallcovid.training.plateau import folds_short_at_cap
from smallcovid.training.runfolder import PARTIAL_FILE
from smallcovid.training.schedule import cycle_ends


def parse_queue(path: Path) -> list[tuple[str, list[str]]]:
    """``[(run_id, flags)]`` from a queue file; raises ValueError on a malformed line."""
    runs = []
    for n, raw in enumerate(path.read_text().splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        parts = shlex.split(os.path.expandvars(line))
        run_id, flags = parts[0], parts[1:]
        if "/" in run_id or run_id.startswith("-") or not flags:
            raise ValueError(f"{path}:{n}: expected 'RUN_ID train.py-flags...', got {raw!r}")
        runs.append((run_id, flags))
    return runs


def split_plateau_max(flags: list[str]) -> tuple[list[str], int | None]:
    """(train.py flags, the ``--plateau-max`` cap or None) of a queue line's flags."""
    if "--plateau-max" not in flags:
        return flags, None
    i = flags.index("--plateau-max")
    try:
        cap = int(flags[i + 1])
    except (IndexError, ValueError):
        raise ValueError(f"--plateau-max needs a number of epochs, got {flags[i + 1:i + 2]}") from None
    return flags[:i] + flags[i + 2:], cap


def next_cap(folder: Path, plateau_max: int | None) -> int | None:
    """The cap a finished run should be extended to, or None (not asked for, plateau reached,
    no fold at the cap short of it, not a "restarts" run, or the next cycle ends past the maximum)."""
    summary_path, cfg_path = folder / "summary.json", folder / "config.json"
    if plateau_max is None or not summary_path.is_file() or not cfg_path.is_file():
        return None
    cfg = json.loads(cfg_path.read_text())
    plateau = json.loads(summary_path.read_text()).get("plateau") or {}
    if cfg.get("schedule") != "restarts" or plateau.get("ok", True):
        return None
    if not any(not f["ok"] and f["epochs_run"] >= cfg["epochs"] for f in plateau.get("per_fold", [])):
        return None
    return next_cycle_end(cfg, plateau_max)


def next_cycle_end(cfg: dict, plateau_max: int) -> int | None:
    """The end of the first restart cycle past the run's cap, if it comes by ``plateau_max``."""
    end = next(e for e in cycle_ends(cfg["cycle_epochs"], 4 * cfg["epochs"] + 2 * cfg["cycle_epochs"])
               if e > cfg["epochs"])
    return end if end <= plateau_max else None


def pending_extension(folder: Path, cfg: dict, plateau_max: int | None, s_per_epoch: float | None = None) -> str:
    """For a run still training: the folds that already ran into the cap short of their plateau
    and the cap the queue will extend them to afterwards ("" when none or not asked for), with
    the extra epochs and, given the run's pace ``s_per_epoch``, about how long they take."""
    if plateau_max is None or cfg.get("schedule") != "restarts":
        return ""
    short = folds_short_at_cap(folder, TrainConfig.from_dict(cfg))
    end = next_cycle_end(cfg, plateau_max) if short else None
    if end is None:
        return ""
    which = ("fold " if len(short) == 1 else "folds ") + ", ".join(str(k) for k in short)
    extra = len(short) * (end - cfg["epochs"])
    pace = f", about {hms(extra * s_per_epoch)}" if s_per_epoch else ""
    verb = "extends" if len(short) == 1 else "extend"
    return f"; then {which} {verb} to {end} epochs (+{extra} epochs{pace}, not in the ETA)"


def hms(seconds: float) -> str:
    """``"1h02m"`` from an hour on, else ``"4m05s"``: the queue's durations."""
    s = int(seconds)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def only_folds(flags: list[str]) -> list[int] | None:
    """The folds of a line's ``--only-folds K [K ...]``, or None for a whole run."""
    if "--only-folds" not in flags:
        return None
    rest = flags[flags.index("--only-folds") + 1:]
    return [int(x) for x in rest[:next((i for i, x in enumerate(rest) if x.startswith("--")), len(rest))]]


def partial_done(folder: Path, flags: list[str]) -> dict | None:
    """The ``partial.json`` record of a line with ``--only-folds`` once all its folds trained, else None."""
    want = only_folds(flags)
    path = folder / PARTIAL_FILE
    if want is None or not path.is_file():
        return None
    record = json.loads(path.read_text())
    return record if set(want) <= set(record.get("folds", [])) else None


def finished(folder: Path, flags: list[str]) -> bool:
    """A line's run is done: its folder holds ``summary.json``, or ``partial.json`` with its folds."""
    return (folder / "summary.json").is_file() or partial_done(folder, flags) is not None
