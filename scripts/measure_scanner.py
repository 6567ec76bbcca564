"""Do scanner-like frames segment like the crops? Lungs, framing and lesions on full fields of view.

Usage: python scripts/measure_scanner.py [DATA_DIR] [--models a,b] [--seed S] [--volumes N]
                                         [--limit N] [--json OUT] [--gallery PNG] [--threads N]

DATA_DIR (or env SMALLCOVID_DATA_DIR) holds images/*.jpg and masks/*.png (8-bit lung-window
crops). Each crop becomes one frame (:func:`smallcovid.data.scanner.scanner_frame`, seed
``S + index``: pixel size, body crossing 0-4 edges, arms, table, blanket, noise), every
second one written and read back as a single-file CT DICOM in the standard axial layout
(the transpose of the crops' orientation, with ImageOrientationPatient saying so). Prints:

1. lungs: share of ground-truth lesion pixels inside the lung labels (and inside the grown
   lungs that lesions are kept in), the largest share of a frame the lungs cover, the
   share of frames whose lungs raise a QC code, and the share of lung labels outside the
   chest (on a table, blanket or arm), overall and for frames whose body touches an edge;
2. per model (card threshold): mean per-slice Dice on the crops (the JPEG as a display
   slice) and on the frames, their difference, overall and for edge-touching frames;
3. volumes (``--volumes N``, default 4): continuous volumes of 16 slices
   (:func:`smallcovid.data.scanner.scanner_volume`); mean per-slice Dice of the volume path
   (``segment_volume``) and of the 2D path (``segment_slice`` slice by slice), per model.

``--gallery`` writes the worst frames (lowest frame Dice of the first model) with the lung
labels and the lesions drawn, to look at rather than trust the mean.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from io import BytesIO
from pathlib import Path

import numpy as np
from PIL import Image


def find_data(arg: str | None) -> Path:
    for c in filter(None, [arg, os.environ.get("SMALLCOVID_DATA_DIR")]):
        for q in (Path(c), Path(c) / "train"):
            if (q / "images").is_dir() and (q / "masks").is_dir():
                return q
    raise SystemExit("give the labeled folder (images/ + masks/) as DATA_DIR or SMALLCOVID_DATA_DIR")


def load(folder: Path, limit: int | None):
    out = []
    for f in sorted((folder / "images").glob("*.jpg"))[:limit]:
        img = np.asarray(Image.open(f).convert("L"))
        mask = np.asarray(Image.open(folder / "masks" / f"{f.stem}.png").convert("L")) > 127
        cls_path = folder / "classes" / f"{f.stem}.png"
        cls = np.asarray(Image.open(cls_path)) if cls_path.is_file() else None
        out.append((f.stem, img, mask, cls))
    return out


def dicom_bytes(hu: np.ndarray, spacing: float, iop=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0)) -> bytes:
    """A single-file CT DICOM (int16, slope 1, intercept -1024) of ``hu`` as stored rows x columns."""
    import pydicom
    from pydicom.data import get_testdata_file

    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    stored = np.clip(np.rint(hu + 1024.0), -32768, 32767).astype(np.int16)
    ds.Rows, ds.Columns = stored.shape
    ds.PixelSpacing = [spacing, spacing]
    ds.ImageOrientationPatient = list(iop)
    ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.PixelData = stored.tobytes()
    buf = BytesIO()
    ds.save_as(buf)
    return buf.getvalue()


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    p, t = pred != 0, truth != 0
    total = int(p.sum()) + int(t.sum())
    return 1.0 if total == 0 else 2.0 * float((p & t).sum()) / total


def overlay(hu: np.ndarray, lungs: np.ndarray, truth: np.ndarray, pred: np.ndarray, size: int = 256) -> np.ndarray:
    g = np.clip((hu + 1350.0) / 1500.0 * 255.0, 0, 255)
    rgb = np.stack([g, g, g], -1) * 0.8
    rgb[lungs == 1] += [0, 50, 0]
    rgb[lungs == 2] += [0, 0, 60]
    rgb[truth & ~pred] = [255, 60, 60]     # missed lesion: red
    rgb[pred & ~truth] = [255, 220, 0]     # false lesion: yellow
    rgb[pred & truth] = [60, 255, 60]      # hit: green
    return np.asarray(Image.fromarray(rgb.clip(0, 255).astype(np.uint8)).resize((size, size)))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("data", nargs="?")
    ap.add_argument("--models", default=None, help="comma-separated (default: every shipped model)")
    ap.add_argument("--seed", type=int, default=1000)
    ap.add_argument("--volumes", type=int, default=4)
    ap.add_argument("--limit", type=int)
    ap.add_argument("--json")
    ap.add_argument("--gallery")
    ap.add_argument("--threads", type=int)
    a = ap.parse_args(argv)
    import torch

    if a.threads:
        torch.set_num_threads(a.threads)
    from smallcovid.data.scanner import scanner_frame, scanner_volume
    from smallcovid.inference.framing import lungs_for, segment_slice
    from smallcovid.inference.lesionzone import grown_lungs
    from smallcovid.inference.predictor import load_predictor, shipped_models
    from smallcovid.inference.qc import lung_qc
    from smallcovid.inference.volume import segment_volume
    from smallcovid.io import Slice, read_scan

    data = load(find_data(a.data), a.limit)
    models = a.models.split(",") if a.models else shipped_models()
    preds = {m: load_predictor(m, device="cpu") for m in models}
    t0 = time.time()
    rows = []
    for i, (stem, img, mask, cls) in enumerate(data):
        fr = scanner_frame(img, mask, cls, seed=a.seed + i)
        if i % 2:  # the standard axial layout: the transpose of the frame
            scan = read_scan(dicom_bytes(np.asarray(np.swapaxes(fr.hu, 0, 1)), fr.spacing), f"{stem}.dcm")
            back = lambda a: np.ascontiguousarray(np.swapaxes(a, 0, 1))  # noqa: E731
        else:
            scan = fr.slice("canonical", stem)
            back = np.ascontiguousarray
        lungs = back(lungs_for(scan))
        zone = grown_lungs(lungs, (fr.spacing, fr.spacing))
        row = {"stem": stem, "edges": fr.edges, "extras": list(fr.extras), "spacing": round(fr.spacing, 3),
               "dicom": bool(i % 2), "lesion_in_lungs": float((lungs[fr.lesion] > 0).mean()),
               "lesion_in_zone": float(zone[fr.lesion].mean()), "lung_share": float((lungs > 0).mean()),
               "outside_chest": float(((lungs > 0) & ~fr.chest).sum() / max(1, np.count_nonzero(lungs))),
               "qc": [q["code"] for q in lung_qc(lungs, (fr.spacing, fr.spacing))], "dice": {}, "crop": {}}
        crop = Slice(img / 255.0, "display", None, stem)
        for m, p in preds.items():
            maps, _ = segment_slice(p, scan)
            pm = back(maps.mask(p.threshold))
            row["dice"][m] = dice(pm, fr.lesion)
            row["crop"][m] = dice(segment_slice(p, crop)[0].mask(p.threshold), mask)
            if m == models[0]:
                row["_pic"] = (fr.hu, lungs, fr.lesion, pm)
        rows.append(row)
        print(f"{stem}: edges {fr.edges} {','.join(fr.extras) or '-':18s} {fr.spacing:.2f} mm  lesion in lungs "
              f"{row['lesion_in_lungs']:.3f}  lungs {row['lung_share']:.2f} of frame  qc {row['qc'] or '-'}  "
              + "  ".join(f"{m} {row['crop'][m]:.3f}->{row['dice'][m]:.3f}" for m in models), flush=True)
    edge = [r for r in rows if r["edges"] > 0]
    summary = {"frames": len(rows), "edge_frames": len(edge), "seed": a.seed, "lungs": {}, "models": {}}
    for name, group in (("all", rows), ("edge", edge)):
        if not group:
            continue
        les = np.array([r["lesion_in_lungs"] for r in group])
        summary["lungs"][name] = {
            "lesion_in_lungs_mean": float(les.mean()), "lesion_in_lungs_min": float(les.min()),
            "lesion_in_zone_mean": float(np.mean([r["lesion_in_zone"] for r in group])),
            "lung_share_max": float(max(r["lung_share"] for r in group)),
            "qc_share": float(np.mean([bool(r["qc"]) for r in group])),
            "outside_chest_mean": float(np.mean([r["outside_chest"] for r in group])),
            "outside_chest_max": float(max(r["outside_chest"] for r in group))}
        for m in models:
            crop = np.mean([r["crop"][m] for r in group])
            full = np.mean([r["dice"][m] for r in group])
            summary["models"].setdefault(m, {})[name] = {"crop": float(crop), "frame": float(full),
                                                         "diff": float(full - crop)}
    vols = []
    for v in range(a.volumes):
        stem, img, mask, cls = data[(7 * v + 3) % len(data)]
        vol, truth, _ = scanner_volume(img, mask, cls, slices=16, seed=a.seed + 500 + v)
        entry = {"stem": stem, "thickness": vol.spacing[0]}
        for m, p in preds.items():
            res = segment_volume(p, vol)
            vm = res.mask(p.threshold)
            two = np.stack([segment_slice(p, vol.slice(k))[0].mask(p.threshold) for k in range(len(vol))])
            entry[m] = {"volume": float(np.mean([dice(vm[k], truth[k]) for k in range(len(vol))])),
                        "slices": float(np.mean([dice(two[k], truth[k]) for k in range(len(vol))]))}
        vols.append(entry)
        print(f"volume {v} ({stem}, {vol.spacing[0]:.1f} mm): " + "  ".join(
            f"{m} vol {entry[m]['volume']:.3f} 2D {entry[m]['slices']:.3f}" for m in models), flush=True)
    if vols:
        summary["volumes"] = {m: {k: float(np.mean([e[m][k] for e in vols])) for k in ("volume", "slices")}
                              for m in models}
    print(f"\n{len(rows)} frames ({len(edge)} with the body touching an edge), {time.time() - t0:.0f} s")
    for name, lung in summary["lungs"].items():
        print(f"lungs [{name}]: lesion in lungs {lung['lesion_in_lungs_mean']:.4f} (min {lung['lesion_in_lungs_min']:.3f}),"
              f" in grown lungs {lung['lesion_in_zone_mean']:.4f}; lungs cover at most {lung['lung_share_max']:.2f} "
              f"of a frame; QC fired on {lung['qc_share']:.0%}; lung labels outside the chest (table, blanket, "
              f"arms) {lung['outside_chest_mean']:.2%} of them on average, {lung['outside_chest_max']:.2%} at most")
    for m, d in summary["models"].items():
        print(f"{m:15s} " + "   ".join(f"[{k}] crop {v['crop']:.3f} frame {v['frame']:.3f} ({v['diff']:+.3f})"
                                       for k, v in d.items()))
    for m, d in summary.get("volumes", {}).items():
        print(f"{m:15s} volumes: volume path {d['volume']:.3f}, 2D path {d['slices']:.3f} ({d['volume'] - d['slices']:+.3f})")
    if a.gallery:
        worst = sorted(rows, key=lambda r: r["dice"][models[0]] - r["crop"][models[0]])[:8]
        tiles = [overlay(*r["_pic"]) for r in worst]
        grid = np.concatenate([np.concatenate(tiles[k:k + 4], 1) for k in range(0, len(tiles) - len(tiles) % 4, 4)], 0)
        Image.fromarray(grid).save(a.gallery)
        print("gallery:", a.gallery, [r["stem"] for r in worst])
    if a.json:
        for r in rows:
            r.pop("_pic", None)
        Path(a.json).write_text(json.dumps({"summary": summary, "frames": rows, "volumes": vols}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
