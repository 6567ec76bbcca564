"""How well do the classical lung masks cover the labelled lesions?

Usage: python scripts/measure_lungs.py [DATA_DIR] [--sheets OUT_DIR] [--bench]

DATA_DIR (or env SMALLCOVID_DATA_DIR) holds images/*.jpg (8-bit lung-window crops)
and masks/*.png (lesions 0/255), or a train/ folder with them. Prints, pooled over
the slices, the share of lesion pixels inside the lung mask and the mean lung
fraction of the image for two paths:
  display  lung_masks_display on the 8-bit crop;
  hu-frame the crop mapped to HU (img / 255 * 1500 - 1350) and pasted into a
           >= 512x512 air frame (-1000 HU) with a soft-tissue body ellipse (40 HU)
           around it and a table stripe below, to emulate a full field of view.
With --sheets, writes contact sheets (blue/green = lungs 1/2, red = covered lesion,
yellow = lesion outside the lung mask) as OUT_DIR/sheet_NN.png. With --bench,
also times lung_masks_hu on a synthetic 300x512x512 int16 volume (0.7 mm pixels).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from smallcovid.inference.lungs import lung_masks_display, lung_masks_hu


def find_data(arg: str | None = None) -> Path:
    """The folder with images/ and masks/, from the argument, env or the repo-relative default."""
    cands = [arg, os.environ.get("SMALLCOVID_DATA_DIR"),
             str(Path(__file__).resolve().parents[1] / "data" / "covid-semiseg" / "train")]
    for c in filter(None, cands):
        p = Path(c)
        for q in (p, p / "train"):
            if (q / "images").is_dir() and (q / "masks").is_dir():
                return q
    raise FileNotFoundError(f"no images/ + masks/ folder in {[c for c in cands if c]}")


def load(folder: Path) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """[(name, (H, W) uint8 display image, (H, W) bool lesion mask)] in name order."""
    out = []
    for f in sorted((folder / "images").glob("*.jpg")):
        img = np.asarray(Image.open(f).convert("L"))
        m = np.asarray(Image.open(folder / "masks" / (f.stem + ".png")).convert("L")) > 127
        out.append((f.stem, img, m))
    return out


def full_frame(img8: np.ndarray) -> tuple[np.ndarray, tuple[slice, slice]]:
    """HU frame (S, S) float32 with the crop pasted in the middle; S >= 512; the crop's place."""
    h, w = img8.shape
    a, b = h / 2 * 1.45 + 12, w / 2 * 1.45 + 12      # ellipse semi-axes enclosing the crop's corners
    s = max(512, int(2 * max(a, b)) + 40)
    hu = np.full((s, s), -1000.0, np.float32)
    rr, cc = np.mgrid[:s, :s]
    r0, c0 = s / 2 - 10, s / 2
    hu[((rr - r0) / a) ** 2 + ((cc - c0) / b) ** 2 <= 1] = 40.0
    table = int(min(s - 6, r0 + a + 8))
    hu[table:table + 4, int(s * 0.1):int(s * 0.9)] = 100.0  # table stripe under the body
    top, left = int(r0 - h / 2), int(c0 - w / 2)
    place = (slice(top, top + h), slice(left, left + w))
    hu[place] = img8.astype(np.float32) / 255 * 1500 - 1350
    return hu, place


def overlay(img8: np.ndarray, lungs: np.ndarray, lesion: np.ndarray, size: int = 200) -> np.ndarray:
    """(size, size, 3) uint8 tile: tinted lungs, covered lesions red, missed lesions yellow."""
    rgb = np.repeat(img8[..., None], 3, axis=2).astype(np.float32)
    rgb[lungs == 1] = rgb[lungs == 1] * 0.6 + np.array([0, 0, 255]) * 0.4
    rgb[lungs == 2] = rgb[lungs == 2] * 0.6 + np.array([0, 255, 0]) * 0.4
    rgb[lesion & (lungs > 0)] = rgb[lesion & (lungs > 0)] * 0.5 + np.array([255, 0, 0]) * 0.5
    rgb[lesion & (lungs == 0)] = (255, 255, 0)
    return np.asarray(Image.fromarray(rgb.astype(np.uint8)).resize((size, size)))


def bench(z: int = 300, n: int = 512) -> None:
    """Print the time lung_masks_hu takes on a noisy synthetic chest volume (Z, n, n) int16."""
    rr, cc = np.mgrid[:n, :n]
    sl = np.full((n, n), -1000, np.int16)
    for (r0, c0, a, b), v in (((0.50, 0.50, 0.33, 0.45), 40), ((0.49, 0.31, 0.21, 0.14), -850),
                              ((0.49, 0.69, 0.21, 0.14), -850), ((0.40, 0.50, 0.025, 0.025), -1000)):
        sl[((rr - r0 * n) / (a * n)) ** 2 + ((cc - c0 * n) / (b * n)) ** 2 <= 1] = v
    sl[int(0.86 * n):int(0.88 * n), int(0.08 * n):int(0.92 * n)] = 100      # table
    vol = np.repeat(sl[None], z, axis=0) + np.random.default_rng(0).integers(-30, 30, (z, n, n), dtype=np.int16)
    lung_masks_hu(vol[:2], (0.7, 0.7))                                      # warm-up
    t = time.perf_counter()
    lab = lung_masks_hu(vol, (0.7, 0.7))
    dt = time.perf_counter() - t
    print(f"bench: {vol.shape} {vol.dtype} in {dt:.2f} s; lung pixels per slice "
          f"{(lab == 1).sum() / z:.0f} + {(lab == 2).sum() / z:.0f}")


def main(argv: list[str]) -> int:
    if "--bench" in argv:
        argv = [a for a in argv if a != "--bench"]
        bench()
    sheets = None
    if "--sheets" in argv:
        i = argv.index("--sheets")
        sheets = Path(argv[i + 1])
        argv = argv[:i] + argv[i + 2:]
    data = load(find_data(argv[0] if argv else None))
    stats = {"display": [0, 0, [], 0.0], "hu-frame": [0, 0, [], 0.0]}
    tiles, missed = [], []
    for name, img, m in data:
        t = time.perf_counter()
        lung = lung_masks_display(img)
        t1 = time.perf_counter()
        frame, place = full_frame(img)
        lung_f = lung_masks_hu(frame)[place]
        t2 = time.perf_counter()
        for key, lm, dt in (("display", lung, t1 - t), ("hu-frame", lung_f, t2 - t1)):
            st = stats[key]
            st[0] += int((m & (lm > 0)).sum())
            st[1] += int(m.sum())
            st[2].append(float((lm > 0).mean()))
            st[3] += dt
        cov = (m & (lung > 0)).sum() / max(1, m.sum())
        cov_f = (m & (lung_f > 0)).sum() / max(1, m.sum())
        agree = float((lung == lung_f).mean())
        print(f"{name}: lesion px {int(m.sum()):6d}  coverage display {cov:.3f}  hu-frame {cov_f:.3f}  "
              f"lung fraction {(lung > 0).mean():.2f}  label agreement {agree:.3f}")
        tiles.append(overlay(img, lung, m))
        missed.append((int((m & (lung == 0)).sum()), name))
    for key, (inside, total, frac, dt) in stats.items():
        print(f"{key:9s}: lesion pixels inside the lung mask {inside / max(1, total):.4f} "
              f"({inside}/{total}); mean lung fraction {np.mean(frac):.3f}; {dt / len(data) * 1e3:.0f} ms/slice")
    print("most lesion pixels missed (display):", ", ".join(f"{k} {v}" for v, k in sorted(missed)[::-1][:6]))
    if sheets is not None:
        sheets.mkdir(parents=True, exist_ok=True)
        for k in range(0, len(tiles), 12):
            part = tiles[k:k + 12] + [np.zeros_like(tiles[0])] * (-len(tiles[k:k + 12]) % 4)
            rows = [np.concatenate(part[i:i + 4], axis=1) for i in range(0, len(part), 4)]
            Image.fromarray(np.concatenate(rows, axis=0)).save(sheets / f"sheet_{k // 12:02d}.png")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
