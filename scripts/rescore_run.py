"""Score a finished run again under other inference-only model options, without training.

    python scripts/rescore_run.py RUN --model-option merge=mask [--out NEW_RUN]

Mask R-CNN's ``merge`` and ``merge_min_score`` change only how its instances become the
lesion probability map, not its weights. A copy of RUN (default ``RUN-<option>-<value>``)
gets the options in ``config.json`` and in the card of every fold's and the final model's
weights; resuming the copy then trains nothing (every fold is at its cap or its plateau,
the final model at its last epoch) and computes the out-of-fold figures, the threshold,
the calibration, the summary and the final card under the new options. The summary records
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

#: Model options that do not change what a model learns, per architecture.
INFERENCE_ONLY = {"mask-rcnn": ("merge", "merge_min_score")}


def parse_options(items: list[str], model: str) -> dict:
    """``["merge=mask"]`` -> ``{"merge": "mask"}``; raises SystemExit for an option that is not inference-only."""
    allowed = INFERENCE_ONLY.get(model, ())
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
    """Copy ``run`` to ``out`` with ``options`` and recompute its summary there; returns the summary."""
    from smallcovid.training.loop import train

    if not (run / "summary.json").is_file():
        raise SystemExit(f"{run}: not a finished run (no summary.json)")
    if out.exists():
        raise SystemExit(f"{out}: exists; choose another --out")
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
        (fold_dir(out, k) / "metrics.json").unlink(missing_ok=True)
    (out / "summary.json").unlink()
    before = {k: len((fold_dir(out, k) / "history.csv").read_text().splitlines()) for k in models}
    summary = train(new_cfg, out)
    after = {k: len((fold_dir(out, k) / "history.csv").read_text().splitlines()) for k in before}
    if after != before:  # the copy must only be scored, never trained
        raise SystemExit(f"{out}: rescoring trained further epochs ({before} -> {after}); not a finished run?")
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
