"""Score a finished run again under other inference-only model options, without training.

    python scripts/rescore_run.py RUN --model-option tta=d4 [--out NEW_RUN]

Test-time augmentation (``tta=flip`` or ``tta=d4``, any model) and Mask R-CNN's ``merge`` and
``merge_min_score`` change only how a model's probability maps are made, not its weights. A
copy of RUN (default ``RUN-<option>-<value>``) gets the options in ``config.json`` and in the
card of every fold's and the final model's weights; its fold models are then scored out of
fold as at the end of training (the figures, the threshold, the calibration, the summary)
and the final model gets the card of those, all under the new options, without training
anything. The summary records
``rescored``: the source run and the options. The best epochs stay those chosen during
training, on validation Dice under the source run's options.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from smallcovid.core.fsutil import atomic_write_text  # noqa: E402
from smallcovid.training.config import TrainConfig  # noqa: E402
from smallcovid.training.runfolder import fold_dir  # noqa: E402

#: Model options that do not change what a model learns: every architecture's test-time
#: augmentation, and Mask R-CNN's instance merge.
INFERENCE_ONLY = {"mask-rcnn": ("merge", "merge_min_score", "tta")}
SHARED = ("tta",)


def parse_options(items: list[str], model: str) -> dict:
    """``["merge=mask"]`` -> ``{"merge": "mask"}``; raises SystemExit for an option that is not inference-only."""
    allowed = INFERENCE_ONLY.get(model, SHARED)
    options = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or key not in allowed:
            raise SystemExit(f"--model-option {item!r}: a {model} run can be rescored only under "
                             f"{', '.join(f'{k}=VALUE' for k in allowed) or 'no option'}")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return options


def rescore(run: Path, options: dict, out: Path) -> dict:
    """Copy ``run`` to ``out`` with ``options`` and recompute its summary there; returns the summary.

    Nothing trains, so a run whose resume checkpoints were deleted to save space rescores
    too: the fold models are scored out of fold as at the end of training (threshold,
    calibration, plateau check), and the final model's weights are saved again with the new
    card. The training facts (device, time, command) stay the source run's.
    """
    from smallcovid.core.devices import resolve_device
    from smallcovid.data.dataset import load_dataset, load_splits
    from smallcovid.models.base import num_parameters
    from smallcovid.models.checkpoint import load_weights, save_weights
    from smallcovid.training.context import RunContext
    from smallcovid.training.cvsummary import final_card, set_operating_point, summarise_folds
    from smallcovid.training.progress import Clock

    if not (run / "summary.json").is_file():
        raise SystemExit(f"{run}: not a finished run (no summary.json)")
    if out.exists():
        raise SystemExit(f"{out}: exists; choose another --out")
    source = json.loads((run / "summary.json").read_text())
    cfg = TrainConfig.from_dict(json.loads((run / "config.json").read_text()))
    shutil.copytree(run, out, ignore=shutil.ignore_patterns(".train.lock"))
    new_cfg = dataclasses.replace(cfg, model_config={**cfg.model_config, **options})
    atomic_write_text(out / "config.json", new_cfg.to_json())
    models = ([0] if cfg.final else []) + list(range(1, cfg.folds + 1))  # fold 0: the final model
    for k in models:
        card_path = fold_dir(out, k) / f"{cfg.model}.json"
        card = json.loads(card_path.read_text())
        card["config"] = {**card["config"], **options}
        atomic_write_text(card_path, json.dumps(card, indent=2) + "\n")
    (out / "summary.json").unlink()
    data = load_dataset(cfg.data)
    splits = load_splits(out / "splits.json", data.stems)
    ctx = RunContext(new_cfg, out, resolve_device(cfg.device), Clock(0), folds=len(splits))
    summary = summarise_folds(ctx, data, splits, source.get("executor"))
    for key in ("device", "elapsed_s", "command"):  # how the weights were trained: the source run's
        if key in source:
            summary[key] = source[key]
    if cfg.final:
        path = fold_dir(out, 0) / f"{cfg.model}.safetensors"
        model, old = load_weights(path)
        card = set_operating_point(final_card(ctx, data, summary), summary, input_size=cfg.image_size,
                                   params=num_parameters(model),
                                   training_time_s=old.get("training_time_s", source.get("elapsed_s", 0.0)))
        summary["final"] = {"weights": str(path), "sha256": save_weights(model, path, card=card).get("sha256")}
    summary["rescored"] = {"from": run.name, "model_options": options,
                           "note": "scored under these options; the best epochs were chosen during training "
                                   "under the source run's options"}
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=1))
    return summary


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--model-option", action="append", default=[], required=True, metavar="KEY=VALUE")
    ap.add_argument("--out", type=Path)
    a = ap.parse_args(argv)
    cfg = json.loads((a.run / "config.json").read_text())
    options = parse_options(a.model_option, cfg["model"])
    out = a.out or a.run.with_name(a.run.name + "".join(f"-{k}-{v}" for k, v in options.items()))
    s = rescore(a.run, options, out)
    d = s["tuned"]["dice"]
    print(f"{out}: CV Dice {d['mean']:.3f} ± {d['std']:.3f} under {options}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
