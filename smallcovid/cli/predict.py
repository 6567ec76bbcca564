"""``python -m smallcovid predict``: write probability, mask and type maps per input.

For a 2D input ``<stem>``: ``<stem>_prob.png`` (probability x 255, 8-bit),
``<stem>_mask.png`` (0 / 255) and ``<stem>_classes.png`` (0 bg, 1 GGO, 2
consolidation), all at the input's own width and height; a pixel is lesion when
p >= threshold. For a volume: ``<stem>_mask.nii.gz`` and ``<stem>_classes.nii.gz``
in the input's geometry, thresholded at 8-bit precision exactly like the app's
NIfTI download (:func:`smallcovid.inference.volume.threshold_volume`).
Each file is written atomically; an input that fails writes nothing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from smallcovid import io
from smallcovid.core.errors import SmallCovidError
from smallcovid.inference.ensemble import load_model
from smallcovid.inference.predictor import Predictor
from smallcovid.data.preprocess import get_window
from smallcovid.inference.volume import predict_volume


def output_stem(path: str) -> str:
    """File name without its image extension (``a/ct.nii.gz`` -> ``ct``)."""
    name = Path(path).name
    for ext in (".nii.gz", ".nii", ".dcm", ".png", ".jpg", ".jpeg", ".tif", ".tiff"):
        if name.lower().endswith(ext):
            return name[: -len(ext)] or name
    return Path(name).stem or name


def run_predict(args: argparse.Namespace) -> int:
    if args.model is None and args.weights is None:
        raise SmallCovidError("give --model NAME (shipped weights) or --weights PATH")
    window = get_window(args.window)
    stems = [output_stem(p) for p in args.inputs]
    dupes = sorted({s for s in stems if stems.count(s) > 1})
    if dupes:
        raise SmallCovidError(f"several inputs would write outputs named {dupes[0]!r}; rename them")
    predictor = load_model(args.model, weights=args.weights, device=args.device, ensemble=args.ensemble)
    threshold = args.threshold if args.threshold is not None else predictor.threshold
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise SmallCovidError(f"{out}: output path exists and is not a folder")
    failures = 0
    for path, stem in zip(args.inputs, stems):
        try:
            if not Path(path).is_file():
                raise SmallCovidError(f"{path}: no such file")
            scan = io.read_scan(path)
            out.mkdir(parents=True, exist_ok=True)
            written = predict_one(predictor, scan, window, threshold, out, stem)
            print(f"{path}: wrote {', '.join(written)} (threshold {threshold:.2f})")
        except SmallCovidError as exc:
            failures += 1
            print(f"error: {exc}", file=sys.stderr)
    return 2 if failures else 0


def predict_one(predictor: Predictor, scan, window, threshold: float, out: Path, stem: str) -> list[str]:
    """Predict one Slice or Volume and write its outputs; returns the file names written."""
    if isinstance(scan, io.Volume):
        mask, classes = predict_volume(predictor, scan, window).threshold(threshold)
        names = [f"{stem}_mask.nii.gz", f"{stem}_classes.nii.gz"]
        io.write_nifti_mask(out / names[0], mask, like=scan)
        io.write_nifti_mask(out / names[1], classes, like=scan)
        return names
    m = predictor.predict_scan(scan, window)
    names = [f"{stem}_prob.png", f"{stem}_mask.png", f"{stem}_classes.png"]
    arrays = [np.round(m.lesion * 255).astype(np.uint8), (m.mask(threshold) * 255).astype(np.uint8),
              m.type_map(threshold)]
    _write_all(out, names, arrays)
    return names


def _write_all(out: Path, names: list[str], arrays: list[np.ndarray]) -> None:
    """Write every output of one input or none: stage under temporary names, then rename."""
    staged = [out / f".{n}.staged.png" for n in names]
    try:
        for path, arr in zip(staged, arrays):
            io.write_png(path, arr)
        for path, name in zip(staged, names):
            path.replace(out / name)
    finally:
        for path in staged:
            path.unlink(missing_ok=True)
