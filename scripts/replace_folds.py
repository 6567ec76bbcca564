"""Rebuild a shipped model's run with some folds trained again, ready for ``ship_weights.py``.

    python scripts/replace_folds.py weights/smallcovid-net.json PARTIAL_RUN --data DIR --out NEW_RUN

A shipped model whose fold models ship too (``weights/<name>-folds/``) can have single folds
trained again with the card's recipe (``train.py ... --only-folds K``, e.g. to a later cap
for the plateau check) without retraining the rest. This script writes a finished run folder
``NEW_RUN`` from:

- the shipped fold models, their training curves (the card's ``histories``) and the final
  model, for every fold the partial run did not train;
- the partial run's folds (``PARTIAL_RUN/partial.json``) in their place.

It then scores every fold out of fold again, chooses the threshold and fits the calibration
exactly as a finished training run does (:func:`smallcovid.training.cvsummary.summarise_folds`),
and writes ``summary.json`` and ``final/`` (the shipped final model, its card updated with the
new cross-validation and plateau check). ``ship_weights.py NEW_RUN --folds`` then ships it.

Refused: a partial run with another recipe than the card's (anything but the epoch cap), other
folds, or data that is not the card's (``data_sha256``). The card's command gains the partial
run's command, and ``replaced_folds`` says which folds were trained again and why the final
model is kept (its epoch count, the restart cycle of the folds' median best epoch, is unchanged;
otherwise the script refuses).
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from smallcovid.core.errors import SmallCovidError  # noqa: E402
from smallcovid.core.fsutil import atomic_write_text, tree_sha256  # noqa: E402
from smallcovid.data.dataset import load_dataset, load_splits  # noqa: E402
from smallcovid.models.checkpoint import load_weights, save_weights  # noqa: E402
from smallcovid.training.config import TrainConfig  # noqa: E402
from smallcovid.training.cvsummary import CARD_CV_KEYS, reproduce_command, summarise_folds, threshold_text  # noqa: E402
from smallcovid.training.context import RunContext  # noqa: E402
from smallcovid.training.progress import Clock, spent_seconds  # noqa: E402
from smallcovid.training.runfolder import EXTENSIONS_FILE, fold_dir, read_partial, write_history  # noqa: E402

SAME_RECIPE_IGNORES = ("epochs", "data", "device")  # what may differ between the card's run and the partial run


def _history_rows(cols: dict[str, list]) -> list[dict]:
    """A card's column-wise history (``{"epoch": [...], ...}``) as the run folder's epoch rows."""
    n = len(cols["epoch"])
    return [{c: (int(v[i]) if c == "epoch" else v[i]) for c, v in cols.items()} for i in range(n)]


def _check_same_recipe(card_cfg: dict, part_cfg: dict) -> None:
    diff = sorted(k for k in set(card_cfg) | set(part_cfg)
                  if k not in SAME_RECIPE_IGNORES and card_cfg.get(k) != part_cfg.get(k))
    if diff:
        raise SmallCovidError("the partial run's recipe differs from the card's in " + ", ".join(
            f"{k} ({part_cfg.get(k)!r} vs {card_cfg.get(k)!r})" for k in diff))


def rebuild(card_path: Path, partial_run: Path, data_dir: Path, out: Path) -> dict:
    """Write the rebuilt run folder ``out`` (see the module docstring); returns its summary."""
    card_path, partial_run, out = Path(card_path), Path(partial_run), Path(out)
    _, card = load_weights(card_path.with_suffix(".safetensors"))
    name = card["model"]
    folds_dir = card_path.parent / f"{name}-folds"
    part = read_partial(partial_run)
    if part is None:
        raise SmallCovidError(f"{partial_run}: no partial.json (train it with train.py ... --only-folds K)")
    if out.exists():
        raise SmallCovidError(f"{out} exists; choose a new folder")
    if tree_sha256(data_dir) != card["data_sha256"]:
        raise SmallCovidError(f"{data_dir}: not the data the card was trained on (data_sha256 differs)")
    part_cfg = json.loads((partial_run / "config.json").read_text())
    card_cfg = card["training"]["config"]
    _check_same_recipe(card_cfg, part_cfg)
    data = load_dataset(data_dir)
    splits = load_splits(partial_run / "splits.json", data.stems)
    replaced = set(part["folds"])
    for k, split in enumerate(splits, start=1):
        shipped = json.loads((folds_dir / f"fold_{k}.json").read_text())
        if sorted(shipped["val_stems"]) != sorted(split["val"]):
            raise SmallCovidError(f"fold {k}: the partial run's validation slices are not the shipped fold's")
    cfg = TrainConfig.from_dict({**card_cfg, "data": str(data_dir), "device": "cpu",
                                 "epochs": max(card_cfg["epochs"], part_cfg["epochs"])})
    out.mkdir(parents=True)
    atomic_write_text(out / "config.json", cfg.to_json())
    shutil.copy(partial_run / "splits.json", out / "splits.json")
    extensions = (card["cv"].get("plateau") or {}).get("extensions") or []
    if extensions:  # the card run's raised caps: the kept folds' caps, as the card's run had them
        atomic_write_text(out / EXTENSIONS_FILE, json.dumps(extensions, indent=1))
    for k in range(1, len(splits) + 1):
        if k in replaced:
            shutil.copytree(fold_dir(partial_run, k), fold_dir(out, k))
            continue
        model, _ = load_weights(folds_dir / f"fold_{k}.safetensors")
        save_weights(model, fold_dir(out, k) / f"{name}.safetensors")
        rows = _history_rows(card["histories"][str(k)])
        best_epoch = next(f["best_epoch"] for f in card["cv"]["plateau"]["per_fold"] if f["fold"] == k)
        best = next(r["val_dice_best"] for r in rows if r["epoch"] == best_epoch)
        meta = {"epoch": rows[-1]["epoch"], "best": best, "best_epoch": best_epoch, "history": rows}
        atomic_write_text(fold_dir(out, k) / "resume" / "resume.json", json.dumps({"meta": meta}))
        write_history(fold_dir(out, k) / "history.csv", rows)
    run = RunContext(cfg, out, torch.device("cpu"), Clock(0), folds=len(splits))
    summary = summarise_folds(run, data, splits, executor={"name": "local"})
    old_final = card["cv"]["plateau"]["final_epochs"]
    if summary["plateau"]["final_epochs"] != old_final:
        raise SmallCovidError(f"the folds' median best epoch now falls in another restart cycle: the final model "
                              f"would train {summary['plateau']['final_epochs']} epochs, not {old_final}; "
                              "train the whole run again instead")
    summary["plateau"]["extensions"] = extensions
    part_cmd = shlex.join([*shlex.split(reproduce_command(TrainConfig.from_dict({**part_cfg, "data": card_cfg["data"]}))),
                           "--out", "runs", "--run-id", partial_run.name, "--only-folds", *map(str, sorted(replaced))])
    summary["command"] = card["command"] + " && " + part_cmd
    spent = spent_seconds(partial_run)
    summary["elapsed_s"] = float(card.get("training_time_s") or 0.0) + spent
    summary["device"] = card["device"]
    summary["replaced_folds"] = {
        "folds": sorted(replaced), "epochs": part_cfg["epochs"], "training_time_s": spent,
        "why": "trained again alone with the card's recipe to a later epoch cap, for the plateau check",
        "final_model": f"kept: it trains {old_final} epochs (the restart cycle of the folds' median best epoch), "
                       "with the new fold as before"}
    summary["final"] = _write_final(card, card_path, out, summary)
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=1))
    return summary


def _write_final(card: dict, card_path: Path, out: Path, summary: dict) -> dict:
    """The shipped final model in ``out/final/``, its card carrying the rebuilt cross-validation;
    returns the summary's ``final`` entry (``{"weights", "sha256"}``)."""
    name = card["model"]
    model, _ = load_weights(card_path.with_suffix(".safetensors"))
    new = {k: v for k, v in card.items() if k not in ("sha256", "weights_file", "weights_dtype", "histories")}
    new["cv"] = {k: summary.get(k) for k in CARD_CV_KEYS}
    # The folds' cap is now the partial run's; the final model's own epochs are in cv.plateau.
    new["training"] = {**card["training"], "config": {**card["training"]["config"],
                                                      "epochs": max(card["training"]["config"]["epochs"],
                                                                    summary["replaced_folds"]["epochs"])}}
    new.update(command=summary["command"], training_time_s=summary["elapsed_s"],
               replaced_folds=summary["replaced_folds"],
               threshold_note=f"threshold chosen on out-of-fold predictions: {threshold_text(summary)}")
    dest = fold_dir(out, 0) / f"{name}.safetensors"
    dtype = torch.float16 if card.get("weights_dtype") == "float16" else None
    save_weights(model, dest, card=new, dtype=dtype)
    write_history(fold_dir(out, 0) / "history.csv", _history_rows(card["histories"]["0"]))
    return {"weights": str(dest), "sha256": json.loads(dest.with_suffix(".json").read_text()).get("sha256")}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("card", type=Path, help="the shipped card, e.g. weights/smallcovid-net.json")
    p.add_argument("partial_run", type=Path, help="a run folder trained with --only-folds")
    p.add_argument("--data", type=Path, required=True, help="the labeled folder the card was trained on")
    p.add_argument("--out", type=Path, required=True, help="the new run folder (must not exist)")
    a = p.parse_args()
    try:
        s = rebuild(a.card, a.partial_run, a.data, a.out)
    except SmallCovidError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    d = s["tuned"]["dice"]
    plateau = "ok" if s["plateau"]["ok"] else "NOT reached"
    print(f"{a.out}: CV Dice {d['mean']:.4f} ± {d['std']:.4f}; plateau {plateau}: "
          + ", ".join(f"fold {f['fold']} {f['best_epoch']}/{f['epochs_run']}" for f in s["plateau"]["per_fold"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
