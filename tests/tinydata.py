"""Tiny synthetic labeled data and model configs for the core tests (code, no binary blobs).

:func:`write_labeled_folder` writes the folder layout of DESIGN.md
(``images/<stem>.png``, ``masks/<stem>.png`` 0/255, ``classes/<stem>.png`` 0/1/2)
with odd-sized slices holding one or two bright elliptic blobs (GGO = 1 on the
left blob, consolidation = 2 on the right). :func:`write_medseg` writes the
MedSeg NIfTI release layout (``tr_im.nii.gz`` + ``tr_mask.nii.gz``, labels 0..3).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

# Odd (H, W) sizes; the last slice has no lesion (exercises the empty-mask policy).
TINY_SIZES = ((45, 61), (53, 37), (61, 45), (39, 57), (47, 47), (41, 59))

# Small, fast architecture overrides per model name (train + predict in ~1 s per fold
# at image size 32/64 on a busy CPU core).
TINY_MODEL_CONFIG: dict[str, dict] = {
    "smallcovid-net": {"filters": 8, "depth": 2},
    "unet": {"decoder_channels": [32, 16, 8, 8, 8]},
    "segnet": {"width": 0.0625},
    "mask-rcnn": {"fpn_channels": 32, "representation_size": 64, "mask_head_channels": 32},
}
TINY_IMAGE_SIZE = {"smallcovid-net": 32, "unet": 32, "segnet": 32, "mask-rcnn": 64}


def blob_slice(h: int, w: int, rng: np.random.Generator, lesions: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image uint8, mask bool, classes uint8) of one synthetic slice."""
    yy, xx = np.mgrid[0:h, 0:w]
    image = rng.normal(60, 12, (h, w))
    mask = np.zeros((h, w), bool)
    classes = np.zeros((h, w), np.uint8)
    for k in range(lesions):
        cy = rng.uniform(0.3, 0.7) * h
        cx = (0.3 if k == 0 else 0.7) * w + rng.uniform(-3, 3)
        ry, rx = rng.uniform(0.1, 0.18) * h, rng.uniform(0.08, 0.14) * w
        blob = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
        mask |= blob
        classes[blob] = 1 + k
        image[blob] += 120 + 40 * k
    return np.clip(image, 0, 255).astype(np.uint8), mask, classes


def write_labeled_folder(root: Path, sizes=TINY_SIZES, seed: int = 0, with_classes: bool = True) -> Path:
    """Write a labeled folder (images/, masks/, classes/) with one slice per size; returns root."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for sub in ("images", "masks") + (("classes",) if with_classes else ()):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for i, (h, w) in enumerate(sizes):
        lesions = 0 if i == len(sizes) - 1 else 1 + i % 2
        image, mask, classes = blob_slice(h, w, rng, lesions)
        stem = f"slice_{i:02d}"
        Image.fromarray(image).save(root / "images" / f"{stem}.png")
        Image.fromarray((mask * 255).astype(np.uint8)).save(root / "masks" / f"{stem}.png")
        if with_classes:
            Image.fromarray(classes).save(root / "classes" / f"{stem}.png")
    return root


def write_medseg(root: Path, shape=(37, 45, 5), seed: int = 0) -> Path:
    """MedSeg-style ``tr_im.nii.gz`` (HU, float32) + ``tr_mask.nii.gz`` (0..3) of shape (X, Y, Z)."""
    import nibabel as nib

    rng = np.random.default_rng(seed)
    x, y, z = shape
    hu = rng.normal(-800, 50, shape).astype(np.float32)
    labels = np.zeros(shape, np.float32)
    for k in range(z):
        lab = k % 4  # slice k holds one blob labelled k % 4 (0: no lesion)
        if lab:
            labels[5 + k:15 + k, 10:20, k] = lab
            hu[5 + k:15 + k, 10:20, k] = -200
    root.mkdir(parents=True, exist_ok=True)
    affine = np.diag([0.8, 0.8, 5.0, 1.0])
    nib.save(nib.Nifti1Image(hu, affine), root / "tr_im.nii.gz")
    nib.save(nib.Nifti1Image(labels, affine), root / "tr_mask.nii.gz")
    return root


VOLATILE_SUMMARY_KEYS = ("elapsed_s", "device", "final", "command", "executor")


def comparable_summary(summary: dict) -> dict:
    """A summary without the fields that legitimately differ between two runs (time, paths)."""
    return {k: v for k, v in summary.items() if k not in VOLATILE_SUMMARY_KEYS}


def assert_close_tree(a, b, tol: float = 0.0, path: str = "") -> None:
    """Recursively compare JSON-like trees; numbers within ``tol`` (0 = exact)."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), f"{path}: keys {sorted(a)} vs {sorted(b)}"
        for k in a:
            assert_close_tree(a[k], b[k], tol, f"{path}.{k}")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), f"{path}: lengths differ"
        for i, (x, y) in enumerate(zip(a, b)):
            assert_close_tree(x, y, tol, f"{path}[{i}]")
    elif isinstance(a, float) and isinstance(b, (int, float)) and not isinstance(b, bool):
        assert abs(a - b) <= tol or (a != a and b != b), f"{path}: {a} vs {b}"
    else:
        assert a == b, f"{path}: {a!r} vs {b!r}"


def load_script(relpath: str):
    """A repository script (e.g. ``"scripts/train_queue.py"``) imported as a module, for its functions."""
    path = Path(__file__).resolve().parent.parent / relpath
    spec = importlib.util.spec_from_file_location(path.stem, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod
