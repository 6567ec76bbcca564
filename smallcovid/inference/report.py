"""Plain-text tables for the command line (Table 1 style)."""

from __future__ import annotations

from smallcovid.core.vocab import LESION_TYPES, TABLE_METRICS

PAPER_TABLE1 = {  # Dice / precision / recall reported by the SmallCovid-Net paper (test split)
    "mask-rcnn": (0.680, 0.686, 0.633),
    "unet": (0.720, 0.519, 0.767),
    "segnet": (0.700, 0.667, 0.733),
    "smallcovid-net": (0.701, 0.712, 0.732),
}


def format_table(results: dict) -> str:
    """Rows per model: mean +- std over images and pooled Dice / precision / recall / IoU."""
    head = f"{'model':<15}{'thr':>5}  {'Dice':>13}  {'precision':>13}  {'recall':>13}  {'IoU':>13}  | pooled D/P/R/IoU          | GGO   cons"
    lines = [head, "-" * len(head)]
    for name, r in results.items():
        s = r.summary
        cells = [f"{s.mean[k]:.3f}±{s.std[k]:.3f}" for k in TABLE_METRICS]
        pooled = " ".join(f"{s.pooled[k]:.3f}" for k in TABLE_METRICS)
        types = " ".join(f"{r.type_dice[t]['mean']:.3f}" if r.type_dice.get(t, {}).get("mean") is not None else "  -  "
                         for t in LESION_TYPES.values())
        lines.append(f"{name:<15}{r.threshold:>5.2f}  " + "  ".join(f"{c:>13}" for c in cells) + f"  | {pooled:<25} | {types}")
    return "\n".join(lines)
