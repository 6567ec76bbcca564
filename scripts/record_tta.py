"""Record in a model card what test-time augmentation measured on the card's own run.

    python scripts/record_tta.py weights/NAME.json RUN [RUN-tta-flip RUN-tta-d4 ...]

RUN is the finished run the card was shipped from (its per-fold CV Dice must equal the card's);
each further argument is that run scored again under a test-time augmentation by
``scripts/rescore_run.py RUN --model-option tta=MODE``. The card gets ``tta_cv``: per mode, the
CV Dice and the two lesion types' Dice (mean over folds) and the paired difference against the
card's own mode over the same folds (mean, sample sd, folds better). The Models page shows it, so
that whoever turns views on in the app knows what they buy. Only the JSON card changes.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from paired_folds import METRICS, load_folds, paired  # noqa: E402


def tta_record(card: dict, run: Path, rescored: list[Path]) -> dict:
    """``{mode: {...}}`` for the card's ``tta_cv``; raises ValueError when RUN is not the card's run."""
    base, _ = load_folds(run)
    card_rows = card["cv"]["per_fold"]
    if [round(r["tuned"]["dice"], 6) for r in base] != [round(r["tuned"]["dice"], 6) for r in card_rows]:
        raise ValueError(f"{run}: its per-fold CV Dice differs from the card's: not the run the card came from")
    out = {}
    for path in rescored:
        summary = json.loads((path / "summary.json").read_text())
        mode = (summary.get("rescored") or {}).get("model_options", {}).get("tta")
        if mode is None or (summary["rescored"].get("from") != run.name):
            raise ValueError(f"{path}: not {run.name} rescored under a test-time augmentation")
        rows, _ = load_folds(path)
        entry = {"from": path.name}
        for metric in METRICS:
            r = paired(base, rows, metric)
            if r["diffs"] is not None:
                entry[metric] = {"mean": round(r["b"], 4), "paired": {"mean": round(r["mean"], 4),
                                                                       "sd": round(r["sd"], 4), "better_folds": r["wins"],
                                                                       "folds": len(r["diffs"])}}
        out[mode] = entry
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("card", type=Path)
    p.add_argument("run", type=Path)
    p.add_argument("rescored", type=Path, nargs="+")
    a = p.parse_args(argv)
    card = json.loads(a.card.read_text())
    try:
        card["tta_cv"] = tta_record(card, a.run, a.rescored)
    except (ValueError, KeyError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    a.card.write_text(json.dumps(card, indent=2) + "\n")
    for mode, e in card["tta_cv"].items():
        d = e["dice"]
        print(f"{mode}: CV Dice {d['mean']:.3f} ({d['paired']['mean']:+.4f} ± {d['paired']['sd']:.4f} paired, "
              f"better in {d['paired']['better_folds']} of {d['paired']['folds']} folds)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
