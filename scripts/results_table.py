"""Print the results and calibration tables of docs/results.md (Markdown) from the shipped model cards in weights/.

    python scripts/results_table.py
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


def main() -> int:
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
