"""Copy a finished run's final model into weights/ with a complete model card.

    python scripts/ship_weights.py runs/unet-cv [--fp16]

Refuses a run without summary.json. With --fp16 the float tensors are stored in
half precision (loading casts back); the script reports the largest probability
difference this makes on the run's training slices so the choice is checked,
not assumed.
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

from smallcovid.core.fsutil import tree_sha256  # noqa: E402
from smallcovid.data.dataset import load_dataset  # noqa: E402
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
    out = json.loads(text)
    out["command"] = out["command"].replace(" --data covid-semiseg", " --data data/covid-semiseg").replace(
        " --unlabeled covid-semiseg", " --unlabeled data/covid-semiseg")
    return out


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("run")
    p.add_argument("--fp16", action="store_true")
    p.add_argument("--out", default=str(REPO / "weights"))
    a = p.parse_args()
    run = Path(a.run)
    summary = json.loads((run / "summary.json").read_text())
    name = summary["model"]
    model, card = load_weights(run / "final" / f"{name}.safetensors")
    card = {k: v for k, v in card.items() if k not in COMPUTED}
    card.update(
        name=name,
        threshold=summary["recommended_threshold"],
        threshold_sweep=summary["threshold_sweep"],
        training_time_s=summary.get("elapsed_s"),
        device=summary["device"],
        command=summary["command"],
        trained_on=f"COVID-SemiSeg training split ({summary['n_slices']} slices, MedSeg COVID-19 CT segmentation data)",
        note="research use only, not a medical device",
    )
    if summary.get("calibration"):  # calibrated: the best out-of-fold threshold on calibrated maps
        card.update(calibration=summary["calibration"], threshold=summary["calibration"]["threshold"],
                    threshold_uncalibrated=summary["recommended_threshold"])
    data_dir = json.loads((run / "config.json").read_text())["data"]
    card = _without_local_paths(card, run)
    card["data_sha256"] = tree_sha256(data_dir)
    dest = Path(a.out) / f"{name}.safetensors"
    written = save_weights(model, dest, card=card, dtype=torch.float16 if a.fp16 else None)
    shipped, _ = load_weights(dest)
    data = load_dataset(data_dir)
    images = [s.image for s in data.samples[:10]]
    ref = Predictor(model, image_size=card["input_size"]).predict_images(images)
    new = Predictor(shipped, image_size=card["input_size"]).predict_images(images)
    diff = max(float(np.abs(r.lesion - n.lesion).max()) for r, n in zip(ref, new))
    print(f"{dest}: {dest.stat().st_size / 2**20:.1f} MB, dtype {written['weights_dtype']}, "
          f"max |p - p_fp32| on 10 slices = {diff:.4f}, threshold {card['threshold']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
