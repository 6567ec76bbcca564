"""The worst slices out of fold: per-slice Dice of a run's fold models, and a contact sheet to look at.

    python scripts/worst_slices.py RUN [RUN_B] --data DIR [--n 6] [--out sheet.png]

RUN is a finished run folder (``summary.json``, ``splits.json``, ``fold_<k>/``) or a shipped
card whose fold models ship (``weights/<name>.json`` with ``weights/<name>-folds/``). Every
slice is scored by the fold model that held it out, on raw probabilities at the run's raw
out-of-fold threshold (``recommended_threshold``), as the run's summary scores it. The script
prints the per-slice Dice (worst first) and, with ``--out``, writes a contact sheet of the
``--n`` worst slices: the slice with the ground truth outlined (cyan) and each run's lesion
prediction (red), with both Dice values. With RUN_B the worst are those where the first run
does worst, so that a change can be judged on the slices that fail, not only on the mean.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from smallcovid.data.dataset import load_dataset  # noqa: E402
from smallcovid.inference.evaluation import evaluate_maps  # noqa: E402
from smallcovid.training.oof import raw_maps  # noqa: E402


def fold_models(source: Path) -> tuple[str, list[tuple[Path, list[str]]], float, int]:
    """``(name, [(fold weights, val stems)], raw threshold, input size)`` of a run folder or a card."""
    source = Path(source)
    if source.is_dir():
        summary = json.loads((source / "summary.json").read_text())
        cfg = json.loads((source / "config.json").read_text())
        splits = json.loads((source / "splits.json").read_text())["folds"]
        name = summary["model"]
        folds = [(source / f"fold_{k}" / f"{name}.safetensors", s["val"]) for k, s in enumerate(splits, start=1)]
        return name, folds, float(summary["recommended_threshold"]), int(cfg["image_size"])
    card = json.loads(source.read_text())
    name = card.get("name") or card["model"]
    folds_dir = source.parent / f"{name}-folds"
    paths = sorted(folds_dir.glob("fold_*.safetensors"))
    if not paths:
        raise SystemExit(f"error: {source}: no fold models in {folds_dir}")
    folds = [(p, json.loads(p.with_suffix(".json").read_text())["val_stems"]) for p in paths]
    raw = card.get("threshold_uncalibrated") or card["threshold"]
    return name, folds, float(raw), int(card["input_size"])


def out_of_fold(source: Path, data) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Per-slice Dice and lesion masks of every slice, each from the fold model that held it out."""
    _, folds, threshold, size = fold_models(source)
    dice, masks = {}, {}
    for path, stems in folds:
        val = data.subset(stems)
        maps = raw_maps(path, size, val)
        res = evaluate_maps(maps, val.samples, threshold)
        for i, s in enumerate(val.samples):
            dice[s.stem] = float(res.per_image["dice"][i])
            masks[s.stem] = maps[i].mask(threshold)
    return dice, masks


def contact_sheet(data, stems: list[str], runs: list[tuple[str, dict, dict]], out: Path) -> None:
    """One row per slice: the slice with the truth outlined, then each run's prediction."""
    from PIL import Image, ImageDraw

    from smallcovid.app.viz import overlay

    by_stem = {s.stem: s for s in data.samples}
    tile = 256
    sheet = Image.new("RGB", (tile * (1 + len(runs)), (tile + 18) * len(stems)), "white")
    draw = ImageDraw.Draw(sheet)
    for r, stem in enumerate(stems):
        s = by_stem[stem]
        image = np.clip(np.rint(s.image * 255), 0, 255).astype(np.uint8)  # the model input in [0, 1]
        panels = [("truth " + stem, overlay(image, truth=s.mask > 0))]
        panels += [(f"{label}: Dice {dice[stem]:.3f}", overlay(image, mask=masks[stem], truth=s.mask > 0))
                   for label, dice, masks in runs]
        for c, (text, rgb) in enumerate(panels):
            sheet.paste(Image.fromarray(rgb).resize((tile, tile)), (c * tile, r * (tile + 18) + 18))
            draw.text((c * tile + 4, r * (tile + 18) + 3), text, fill="black")
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("runs", nargs="+", type=Path, help="one or two run folders or cards")
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--n", type=int, default=6)
    p.add_argument("--out", type=Path, help="contact sheet PNG")
    a = p.parse_args(argv)
    if len(a.runs) > 2:
        p.error("at most two runs")
    data = load_dataset(a.data)
    results = [(str(r), *out_of_fold(r, data)) for r in a.runs]
    first = results[0][1]
    order = sorted(first, key=first.get)
    for label, dice, _ in results:
        print(f"{label}: mean per-slice Dice {np.mean(list(dice.values())):.4f}")
    for stem in order:
        print(stem + "  " + "  ".join(f"{dice[stem]:.3f}" for _, dice, _ in results))
    if a.out:
        contact_sheet(data, order[:a.n], [(Path(lbl).name, d, m) for lbl, d, m in results], a.out)
        print(f"contact sheet: {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
