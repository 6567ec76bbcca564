"""Copy a finished run's final model into weights/ with a complete model card.

    python scripts/ship_weights.py runs/unet-cv [--fp16] [--folds] [--folds-fp16]

Refuses a run without summary.json. With --fp16 the float tensors are stored in
half precision (loading casts back); the script reports the largest probability
difference this makes on the run's training slices so the choice is checked,
not assumed. With --folds the run's fold models also go to ``weights/<name>-folds/``
(``fold_<k>.safetensors`` + card) for ``--ensemble folds`` and the app's toggle;
--folds-fp16 stores them in half precision and reports each fold's out-of-fold
Dice before and after, so "Dice unchanged" is a measurement. Shipping into weights/
regenerates the tables of README.md and docs/results.md (scripts/results_table.py --write);
the prose around them is still to be written.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from smallcovid.app.runview import card_histories  # noqa: E402
from smallcovid.core.fsutil import tree_sha256  # noqa: E402
from smallcovid.data.dataset import load_dataset  # noqa: E402
from smallcovid.data.fingerprint import fingerprint_record  # noqa: E402
from smallcovid.inference.predictor import Predictor  # noqa: E402
from smallcovid.models.checkpoint import load_weights, save_weights  # noqa: E402

COMPUTED = {"architecture", "config", "params", "weights_file", "weights_dtype", "sha256", "smallcovid_version"}


def _dataset_name(path: str) -> str:
    """``/any/where/covid-semiseg/train`` -> ``covid-semiseg/train``: cards name data, not machines' paths."""
    return "/".join(Path(path).resolve().parts[-2:])


def _without_local_paths(card: dict, run: Path) -> dict:
    """The card with the run's data folders replaced by dataset names (``data/<name>`` in the command)."""
    cfg = json.loads((run / "config.json").read_text())
    text = json.dumps(card)
    for key in ("data", "unlabeled"):
        if cfg.get(key):
            name = _dataset_name(cfg[key])
            text = text.replace(json.dumps(cfg[key])[1:-1], name)  # the path as it appears inside JSON strings
    if cfg.get("splits"):  # folds reused from another run: its file name only (they are the seed's folds)
        text = text.replace(json.dumps(cfg["splits"])[1:-1], Path(cfg["splits"]).name)
    out = json.loads(text)
    out["command"] = out["command"].replace(" --data covid-semiseg", " --data data/covid-semiseg").replace(
        " --unlabeled covid-semiseg", " --unlabeled data/covid-semiseg")
    return out


def _training_time(run: Path, final_card: dict) -> float | None:
    """Seconds of training behind the final model: its card's, plus the cross-validation part when
    the final model was added later by resuming the finished run with ``final`` set (that part's
    summary kept as ``summary.cv.json``) and the card does not count it already."""
    total = final_card.get("training_time_s")
    cv = run / "summary.cv.json"
    if total is not None and cv.is_file():
        cv_s = json.loads(cv.read_text()).get("elapsed_s") or 0.0
        # A run that records its clock (clock.json) resumes counting from the CV part's time,
        # so its card already holds it: a card shorter than the CV part alone does not.
        if total < cv_s:
            total += cv_s
    return total


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("run")
    p.add_argument("--fp16", action="store_true")
    p.add_argument("--folds", action="store_true", help="also ship the fold models to weights/<name>-folds/")
    p.add_argument("--folds-fp16", action="store_true", help="store the fold models in half precision")
    p.add_argument("--folds-only", action="store_true",
                   help="ship only the fold models (a CV run without a final model, same recipe as the shipped card)")
    p.add_argument("--out", default=str(REPO / "weights"))
    a = p.parse_args()
    run = Path(a.run)
    summary = json.loads((run / "summary.json").read_text())
    name = summary["model"]
    if a.folds_only:
        cfg = json.loads((run / "config.json").read_text())
        facts = _without_local_paths({"command": summary["command"], "device": summary["device"]}, run)
        facts.update(input_size=cfg["image_size"], data_sha256=tree_sha256(cfg["data"]),
                     note="research use only, not a medical device")
        ship_folds(run, summary, facts, load_dataset(cfg["data"]), Path(a.out) / f"{name}-folds", fp16=a.folds_fp16)
        return 0
    model, card = load_weights(run / "final" / f"{name}.safetensors")
    card = {k: v for k, v in card.items() if k not in COMPUTED}
    card.update(
        name=name,
        threshold=summary["recommended_threshold"],
        threshold_sweep=summary["threshold_sweep"],
        training_time_s=_training_time(run, card),
        device=summary["device"],
        command=summary["command"],
        trained_on=f"COVID-SemiSeg training split ({summary['n_slices']} slices, MedSeg COVID-19 CT segmentation data)",
        note="research use only, not a medical device",
    )
    if summary.get("calibration"):  # calibrated: the best out-of-fold threshold on calibrated maps
        card.update(calibration=summary["calibration"], threshold=summary["calibration"]["threshold"],
                    threshold_uncalibrated=summary["recommended_threshold"])
    if summary.get("calibration_declined"):  # fitted, but it raised the held-out calibration error
        card["calibration_declined"] = summary["calibration_declined"]
    if summary.get("rescored"):  # scored under other inference-only options (scripts/rescore_run.py)
        card["rescored"] = summary["rescored"]
    card["histories"] = card_histories(run)  # per-fold training curves for the Models page
    data_dir = json.loads((run / "config.json").read_text())["data"]
    card = _without_local_paths(card, run)
    card["data_sha256"] = tree_sha256(data_dir)
    data = load_dataset(data_dir)
    if "training_slices" not in card:  # a final model trained before cards listed them: all of the run's slices
        card["training_slices"] = fingerprint_record(s.image for s in data.samples)
    dest = Path(a.out) / f"{name}.safetensors"
    written = save_weights(model, dest, card=card, dtype=torch.float16 if a.fp16 else None)
    shipped, _ = load_weights(dest)
    images = [s.image for s in data.samples[:10]]
    ref = Predictor(model, image_size=card["input_size"]).predict_images(images)
    new = Predictor(shipped, image_size=card["input_size"]).predict_images(images)
    diff = max(float(np.abs(r.lesion - n.lesion).max()) for r, n in zip(ref, new))
    print(f"{dest}: {dest.stat().st_size / 2**20:.1f} MB, dtype {written['weights_dtype']}, "
          f"max |p - p_fp32| on 10 slices = {diff:.4f}, threshold {card['threshold']}")
    if a.folds:
        ship_folds(run, summary, card, data, Path(a.out) / f"{name}-folds", fp16=a.folds_fp16)
    if Path(a.out).resolve() == (REPO / "weights").resolve():
        # The README's and the results' tables are generated from the shipped cards.
        import importlib.util

        spec = importlib.util.spec_from_file_location("results_table", REPO / "scripts" / "results_table.py")
        results_table = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(results_table)
        changed = results_table.write_docs([REPO / "README.md", REPO / "docs" / "results.md"])
        print("tables regenerated in " + (", ".join(changed) if changed else "nothing (already current)"))
    return 0


def ship_folds(run: Path, summary: dict, final_card: dict, data, dest: Path, *, fp16: bool) -> None:
    """Write each fold model with a short card; print its out-of-fold Dice as stored vs as trained.

    ``final_card`` supplies ``input_size``, ``command``, ``device``, ``data_sha256`` and ``note``.
    """
    from smallcovid.inference.evaluation import evaluate_maps, predict_set

    name, size = summary["model"], final_card["input_size"]
    splits = json.loads((run / "splits.json").read_text())["folds"]
    dest.mkdir(parents=True, exist_ok=True)
    threshold = summary["recommended_threshold"]  # uncalibrated maps here: the raw out-of-fold threshold
    for k, split in enumerate(splits, start=1):
        model, _ = load_weights(run / f"fold_{k}" / f"{name}.safetensors")
        per_fold = next(f for f in summary["per_fold"] if f["fold"] == k)
        card = {"name": f"{name} fold {k}", "fold": k, "input_size": size, "val_stems": split["val"],
                "cv_fold": per_fold, "command": final_card["command"], "device": final_card["device"],
                "data_sha256": final_card["data_sha256"], "note": final_card["note"],
                "training_slices": fingerprint_record(s.image for s in data.subset(split["train"]).samples)}
        path = dest / f"fold_{k}.safetensors"
        save_weights(model, path, card=card, dtype=torch.float16 if fp16 else None)
        stored, _ = load_weights(path)
        val = data.subset(split["val"])
        before = evaluate_maps(predict_set(Predictor(model, image_size=size), val), val.samples, threshold)
        after = evaluate_maps(predict_set(Predictor(stored, image_size=size), val), val.samples, threshold)
        print(f"{path}: {path.stat().st_size / 2**20:.2f} MB, out-of-fold Dice at {threshold}: "
              f"{before.summary.mean['dice']:.5f} trained, {after.summary.mean['dice']:.5f} stored")


if __name__ == "__main__":
    sys.exit(main())
