"""Record in a model card each training slice's out-of-fold score, from the card's own run.

    python scripts/record_per_slice.py weights/NAME.json RUN

RUN is the card's run scored again without training (``scripts/rescore_run.py SOURCE
--model-option tta=MODE --out RUN``, MODE the card's own), so that its summary carries
``per_slice``: every slice scored by the fold model that held it out, at that fold's
threshold. Its per-fold CV Dice must equal the card's, which proves the slices' figures are
the ones behind the card's mean. The card gets ``cv.per_slice``; the Models page draws it.
Only the JSON card changes. (Runs trained since per-slice records exist write them into the
card themselves.)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def per_slice_record(card: dict, summary: dict) -> list[dict]:
    """The summary's ``per_slice`` for ``card["cv"]``; raises ValueError when the summary is
    not the card's cross-validation (other per-fold Dice, other test-time mode, no records)."""
    rows = summary.get("per_slice")
    if not rows:
        raise ValueError("the run's summary has no per_slice records: rescore it with scripts/rescore_run.py")
    mode = (card.get("config") or {}).get("tta", "none")
    got = ((summary.get("rescored") or {}).get("model_options") or {}).get("tta", mode)
    if got != mode:
        raise ValueError(f"the run was scored with tta={got}, the card runs with tta={mode}")
    want = [round(r["tuned"]["dice"], 6) for r in card["cv"]["per_fold"]]
    have = [round(r["tuned"]["dice"], 6) for r in summary["per_fold"]]
    if want != have:
        raise ValueError(f"per-fold CV Dice {have} differ from the card's {want}: not the card's run")
    for k, fold in enumerate(summary["per_fold"], start=1):
        mean = sum(r["dice"] for r in rows if r["fold"] == k) / max(1, sum(r["fold"] == k for r in rows))
        if abs(mean - fold["tuned"]["dice"]) > 1e-3:  # records are rounded to 4 decimals
            raise ValueError(f"fold {k}: its slices' mean Dice {mean:.4f} is not the fold's {fold['tuned']['dice']:.4f}")
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("card", type=Path)
    p.add_argument("run", type=Path)
    a = p.parse_args(argv)
    card = json.loads(a.card.read_text())
    try:
        card["cv"]["per_slice"] = per_slice_record(card, json.loads((a.run / "summary.json").read_text()))
    except (ValueError, KeyError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    a.card.write_text(json.dumps(card, indent=2) + "\n")
    worst = sorted(card["cv"]["per_slice"], key=lambda r: r["dice"])[:5]
    print(f"{a.card}: {len(card['cv']['per_slice'])} slices; worst: "
          + ", ".join(f"{r['slice']} {r['dice']:.3f} (fold {r['fold']})" for r in worst))
    return 0


if __name__ == "__main__":
    sys.exit(main())
