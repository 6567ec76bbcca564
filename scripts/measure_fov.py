"""Does a full field of view segment like the cropped training slices? (framing, smallcovid.inference.framing)

Usage: python scripts/measure_fov.py [DATA_DIR] [--models a,b] [--limit N] [--margins 0,0.02]
                                     [--threads N] [--json OUT]

DATA_DIR (or env SMALLCOVID_DATA_DIR, or data/covid-semiseg/train in the repository) holds
images/*.jpg (8-bit lung-window crops) and masks/*.png. Prints:

1. the training framing: the classical lung mask's bounding box (lung_masks_display)
   as a share of each crop's height and width;
2. per model, the mean per-slice Dice (at the card's threshold) of
     crop        the cropped JPEG as a display slice (what the models were trained on);
     full        each crop as HU (img / 255 * 1500 - 1350) centred at its true size in a
                 512x512 frame of air (-1000 HU) inside a soft-tissue body (+40 HU) with a
                 table stripe (+100 HU), the whole frame resized for the model (no framing);
     slice2d     the frame through Predictor.predict_scan (framing per 2D slice);
     vol-union   the 50 frames as one volume through segment_volume, one box for all;
     vol-slice   the same with one box per slice;
   and the difference of each full-frame variant to ``crop``.

Dice is computed over the whole frame (anything predicted outside the crop is a false
positive). The target is |Dice(framed) - Dice(crop)| <= 0.02 for every model.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

FRAME = 512
AIR_HU, BODY_HU, TABLE_HU = -1000.0, 40.0, 100.0


def find_data(arg: str | None = None) -> Path:
    """The folder with images/ and masks/, from the argument, env or the repo-relative default."""
    cands = [arg, os.environ.get("SMALLCOVID_DATA_DIR"),
             str(Path(__file__).resolve().parents[1] / "data" / "covid-semiseg" / "train")]
    for c in filter(None, cands):
        for q in (Path(c), Path(c) / "train"):
            if (q / "images").is_dir() and (q / "masks").is_dir():
                return q
    raise FileNotFoundError(f"no images/ + masks/ folder in {[c for c in cands if c]}")


def load(folder: Path, limit: int | None = None) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """[(name, (H, W) uint8 lung-window crop, (H, W) bool lesion mask)] in name order."""
    out = []
    for f in sorted((folder / "images").glob("*.jpg"))[:limit]:
        img = np.asarray(Image.open(f).convert("L"))
        mask = np.asarray(Image.open(folder / "masks" / (f.stem + ".png")).convert("L")) > 127
        out.append((f.stem, img, mask))
    return out


def full_frame(img8: np.ndarray, size: int = FRAME) -> tuple[np.ndarray, tuple[slice, slice]]:
    """(size, size) float32 HU frame with the crop centred at its true size; returns it and the crop's place.

    Around the crop: a soft-tissue body (an ellipse around the crop, at most 6 px from the
    frame's edge, plus a 10 px ring around the crop) in air, and a table stripe under the
    body, at least 9 px from the frame's edge.
    """
    h, w = img8.shape
    if h > size - 4 or w > size - 4:
        raise ValueError(f"a {w}x{h} crop does not fit a {size}x{size} frame")
    hu = np.full((size, size), AIR_HU, np.float32)
    top, left = (size - h) // 2, (size - w) // 2
    rr, cc = np.mgrid[:size, :size]
    r0, c0 = top + h / 2, left + w / 2
    a, b = min(h / 2 * 1.35 + 8, size / 2 - 6), min(w / 2 * 1.35 + 8, size / 2 - 6)
    body = ((rr - r0) / a) ** 2 + ((cc - c0) / b) ** 2 <= 1
    ring = 10
    body[max(0, top - ring):top + h + ring, max(0, left - ring):left + w + ring] = True
    rows = np.flatnonzero(body.any(axis=1))
    table = min(size - 12, int(rows[-1]) + 3)  # off the frame's edge: the border stays air, as in a scan
    hu[table:table + 3, int(size * 0.08):int(size * 0.92)] = TABLE_HU
    hu[body] = BODY_HU
    place = (slice(top, top + h), slice(left, left + w))
    hu[place] = img8.astype(np.float32) / 255 * 1500 - 1350
    return hu, place


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """Per-slice Dice, 1.0 when both are empty."""
    p, t = pred != 0, truth != 0
    total = np.count_nonzero(p) + np.count_nonzero(t)
    return 1.0 if total == 0 else 2.0 * np.count_nonzero(p & t) / total


def _box_fill(mask: np.ndarray, shape: tuple[int, int]) -> tuple[float, float] | None:
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if not rows.size:
        return None
    return (rows[-1] + 1 - rows[0]) / shape[0], (cols[-1] + 1 - cols[0]) / shape[1]


def training_framing(data) -> dict:
    """Lung box / image size (height, width) on the crops, and in their full frames / true crop size.

    ``lungs``: the lung labels' box; ``aerated``: the box of lung pixels below -320 HU
    (what framing crops to, :func:`smallcovid.inference.framing.aerated_lung`).
    """
    from smallcovid.inference.framing import aerated_lung
    from smallcovid.inference.lungs import lung_masks_display, lung_masks_hu
    from smallcovid.io import Slice

    acc: dict[str, list] = {}
    for _, img, _ in data:
        crop = Slice(img / 255.0, "display")
        hu, _ = full_frame(img)
        lungs_c, lungs_f = lung_masks_display(img), lung_masks_hu(hu)
        for key, mask in (("crop lungs", lungs_c), ("crop aerated", aerated_lung(crop, lungs_c)),
                          ("frame lungs", lungs_f), ("frame aerated", aerated_lung(Slice(hu, "hu"), lungs_f))):
            fill = _box_fill(mask != 0, img.shape)
            if fill is not None:
                acc.setdefault(key, []).append(fill)
    out = {}
    for key, v in acc.items():
        v = np.asarray(v)
        out[key] = {f"{q}_{ax}": round(float(f(v[:, i])), 3) for i, ax in enumerate(("h", "w"))
                    for q, f in (("median", np.median), ("min", np.min), ("max", np.max))}
        out[key]["n"] = int(len(v))
    return out


def measure_model(name: str, data, frames: np.ndarray, truth: np.ndarray) -> dict:
    """Mean per-slice Dice of one shipped model for each variant (module docstring)."""
    from smallcovid.data.preprocess import input_window, to_model_input
    from smallcovid.inference.predictor import load_predictor
    from smallcovid.inference.volume import segment_volume
    from smallcovid.io import Slice, Volume

    pred = load_predictor(name, device="cpu")
    t = pred.threshold
    win = input_window(pred.card)
    out: dict[str, list[float]] = {k: [] for k in ("crop", "full", "slice2d", "vol-union", "vol-slice")}
    t0 = time.perf_counter()
    for (_, img, mask), hu, gt in zip(data, frames, truth):
        out["crop"].append(dice(pred.predict_scan(Slice(img / 255.0, "display")).mask(t), mask))
        whole = pred.predict_images([to_model_input(Slice(hu, "hu"), win)])[0]
        out["full"].append(dice(whole.mask(t), gt))
        out["slice2d"].append(dice(pred.predict_scan(Slice(hu, "hu")).mask(t), gt))
    vol = Volume(frames, "hu")
    for mode in ("union", "slice"):
        mask = segment_volume(pred, vol, framing=mode).threshold(t)[0]
        out[f"vol-{mode}"] = [dice(m, g) for m, g in zip(mask, truth)]
    res = {k: round(float(np.mean(v)), 4) for k, v in out.items()}
    res["seconds"] = round(time.perf_counter() - t0, 1)
    res["per_slice"] = {k: [round(x, 4) for x in v] for k, v in out.items()}
    return res


def volume_agreement(name: str, folder: Path, volume: str, step: int) -> dict:
    """One unlabeled volume's slices (every ``step``-th), each crop centred in its frame:
    mean per-slice Dice of the full-frame masks (union / per-slice boxes, no framing) against
    the model's own masks on the crops (the reference, no labels needed)."""
    import re

    from smallcovid.data.preprocess import input_window, to_model_input
    from smallcovid.inference.predictor import load_predictor
    from smallcovid.inference.volume import segment_volume
    from smallcovid.io import Slice, Volume

    files = sorted((folder / "images").glob(f"Data-1_{volume}_*.jpg"),
                   key=lambda f: int(re.findall(r"_(\d+)$", f.stem)[0]))[::step]
    if not files:
        raise FileNotFoundError(f"no slices of volume {volume!r} in {folder / 'images'}")
    pred = load_predictor(name, device="cpu")
    t = pred.threshold
    imgs = [np.asarray(Image.open(f).convert("L")) for f in files]
    frames = np.stack([full_frame(img)[0] for img in imgs])
    refs = np.zeros(frames.shape, bool)
    for k, img in enumerate(imgs):
        refs[k][full_frame(img)[1]] = pred.predict_scan(Slice(img / 255.0, "display")).mask(t)
    out = {"model": name, "volume": volume, "n_slices": len(files),
           "crop_sizes": [list(img.shape) for img in imgs]}
    win = input_window(pred.card)
    out["full"] = float(np.mean([dice(pred.predict_images([to_model_input(Slice(f, "hu"), win)])[0].mask(t), r)
                                 for f, r in zip(frames, refs)]))
    for mode in ("union", "slice"):
        masks = segment_volume(pred, Volume(frames, "hu"), framing=mode).threshold(t)[0]
        out[f"vol-{mode}"] = float(np.mean([dice(m, r) for m, r in zip(masks, refs)]))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", nargs="?")
    ap.add_argument("--models", default=None, help="comma-separated (default: every shipped model)")
    ap.add_argument("--limit", type=int, default=None, help="first N slices only")
    ap.add_argument("--margins", default=None, help="comma-separated FRAME_MARGIN values to compare")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default=None)
    ap.add_argument("--volume", action="append", default=[],
                    help="also: an unlabeled volume (e.g. coronacases_org_001) for union vs per-slice boxes")
    ap.add_argument("--step", type=int, default=5, help="every STEP-th slice of --volume")
    args = ap.parse_args(argv)
    import torch

    from smallcovid.inference import framing
    from smallcovid.inference.predictor import shipped_models

    torch.set_num_threads(args.threads)
    data = load(find_data(args.data), args.limit)
    frames = np.stack([full_frame(img)[0] for _, img, _ in data])
    truth = np.zeros(frames.shape, bool)
    for k, (_, img, mask) in enumerate(data):
        truth[k][full_frame(img)[1]] = mask
    doc: dict = {"n_slices": len(data), "frame": FRAME, "training_framing": training_framing(data), "runs": {}}
    print(f"{len(data)} slices; lung box / crop size (crop: on the JPEG; frame: in its full frame)")
    for key, st in doc["training_framing"].items():
        print(f"  {key:14s} " + "  ".join(f"{k} {v}" for k, v in st.items()))
    models = args.models.split(",") if args.models else shipped_models()
    default_margin = framing.FRAME_MARGIN
    margins = [float(m) for m in args.margins.split(",")] if args.margins else [default_margin]
    keys = ("crop", "full", "slice2d", "vol-union", "vol-slice")
    print(f"{'model':15s}{'margin':>7s}" + "".join(f"{k:>10s}" for k in keys)
          + "  Δfull  Δslice2d  Δunion  Δslice")
    for margin in margins:
        framing.FRAME_MARGIN = margin
        for name in models:
            r = measure_model(name, data, frames, truth)
            doc["runs"][f"{name}@{margin:g}"] = {"model": name, "margin": margin, **r}
            deltas = [r[k] - r["crop"] for k in keys[1:]]
            print(f"{name:15s}{margin:>7.3f}" + "".join(f"{r[k]:>10.4f}" for k in keys)
                  + "  " + "  ".join(f"{d:+.3f}" for d in deltas) + f"   ({r['seconds']} s)", flush=True)
    framing.FRAME_MARGIN = default_margin
    if args.volume:
        print(f"(margin {default_margin:g})")
        unlabeled = find_data(args.data).parent / "unlabeled"
        print("agreement with the model's masks on the crops (unlabeled volumes; Dice)")
        for vol in args.volume:
            for name in models:
                r = volume_agreement(name, unlabeled, vol, args.step)
                doc.setdefault("volumes", []).append(r)
                print(f"  {name:15s}{vol:40s} n={r['n_slices']:3d}  full {r['full']:.4f}  "
                      f"union {r['vol-union']:.4f}  slice {r['vol-slice']:.4f}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(doc, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
