"""Print the results, calibration and targets tables of docs/results.md (Markdown) from the shipped model cards in weights/.

    python scripts/results_table.py            # all three, separated by blank lines
    python scripts/results_table.py --targets  # only the targets table (also in the README)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from smallcovid.models import list_models  # noqa: E402
from smallcovid.inference.report import PAPER_TABLE1  # noqa: E402


def ms(d: dict, key: str) -> str:
    v = d.get(key) or {}
    return "–" if v.get("mean") is None else f"{v['mean']:.3f} ± {v['std']:.3f}"


#: Cross-validated targets (per-image Dice at the card's threshold): (metric key in cv.tuned, label, target).
TARGETS = {
    "smallcovid-net": [("dice", "Dice", 0.75), ("dice_ground-glass", "ground-glass Dice", 0.62),
                       ("dice_consolidation", "consolidation Dice", 0.45)],
    "unet": [("dice", "Dice", 0.74)],
    "segnet": [("dice", "Dice", 0.70)],
    "mask-rcnn": [("dice", "Dice", 0.68)],
}


def plateau_cell(card: dict) -> str:
    """The card's plateau check in a few words: every fold / which folds fall short / no record."""
    pl = card.get("cv", {}).get("plateau")
    if not isinstance(pl, dict) or not pl.get("per_fold"):
        return "no record (trained before the check)"
    folds = pl["per_fold"]
    short = [str(f["fold"]) for f in folds if not f.get("ok")]
    epochs = ", ".join(f"{f['best_epoch']}/{f['epochs_run']}" for f in folds)
    if not short:
        return f"reached in every fold (best/trained epochs {epochs})"
    which = ("fold " if len(short) == 1 else "folds ") + ", ".join(short)
    return f"not reached in {which} (best/trained epochs {epochs})"


def targets_table() -> None:
    print("| model | measure | target | CV Dice | gap | plateau check |")
    print("|---|---|---:|---|---|---|")
    for name in list_models():
        card_path = REPO / "weights" / f"{name}.json"
        card = json.loads(card_path.read_text()) if card_path.is_file() else None
        for i, (key, label, target) in enumerate(TARGETS.get(name, [])):
            v = ((card or {}).get("cv", {}).get("tuned", {}).get(key) or {}).get("mean")
            got = "–" if v is None else f"{v:.3f}"
            gap = "–" if v is None else ("met" if v >= target else f"{target - v:.3f} short")
            if name == "smallcovid-net" and key == "dice" and card:  # the target includes the size
                small = card["params"] <= 100_000
                gap = f"{gap if small else 'missed'}, {card['params']:,} parameters (≤ 100,000)"
            plateau = plateau_cell(card) if card and i == 0 else ""
            print(f"| {name if i == 0 else ''} | {label} | {target:.2f} | {got} | {gap} | {plateau} |")


def main() -> int:
    if sys.argv[1:] == ["--targets"]:
        targets_table()
        return 0
    print("| model | params | input | thr | Dice | precision | recall | IoU | pooled Dice | GGO Dice | cons. Dice "
          "| Dice @0.8 | paper D / P / R |")
    print("|---|---:|---:|---:|---|---|---|---|---|---|---|---|---|")
    for name in list_models():
        card_path = REPO / "weights" / f"{name}.json"
        paper = "/".join(f"{x:.3f}" for x in PAPER_TABLE1[name])
        if not card_path.is_file():
            print(f"| {name} | – | – | – | not trained yet | | | | | | | | {paper} |")
            continue
        c = json.loads(card_path.read_text())
        t, a = c["cv"]["tuned"], c["cv"]["at_threshold"]
        raw_thr = c.get("threshold_uncalibrated", c["threshold"])  # the CV figures' own threshold scale
        print(f"| {name} | {c['params']:,} | {c['input_size']} | {raw_thr:.2f} | {ms(t, 'dice')} | "
              f"{ms(t, 'precision')} | {ms(t, 'recall')} | {ms(t, 'iou')} | {ms(t, 'pooled_dice')} | "
              f"{ms(t, 'dice_ground-glass')} | {ms(t, 'dice_consolidation')} | {ms(a, 'dice')} | {paper} |")
    print()
    print("| model | calibration | a | b | ECE before | ECE after | threshold (calibrated) | Dice at it | Dice at 0.8 |")
    print("|---|---|---:|---:|---:|---:|---:|---|---|")
    for name in list_models():
        card_path = REPO / "weights" / f"{name}.json"
        if not card_path.is_file():
            continue
        cal = json.loads(card_path.read_text()).get("calibration")
        if not cal:
            print(f"| {name} | none yet | | | | | | | |")
            continue
        print(f"| {name} | {cal['method']} | {cal['a']:.3f} | {cal['b']:.3f} | {cal['ece_before']:.3f} | "
              f"{cal['ece_after']:.3f} | {cal['threshold']:.2f} | {ms(cal, 'dice_at_threshold')} | "
              f"{ms(cal, 'dice_at_target')} |")
    print()
    targets_table()
    return 0


if __name__ == "__main__":
    sys.exit(main())
