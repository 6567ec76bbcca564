"""Labeled datasets on disk and seeded k-fold splits.

Two layouts load as the same :class:`LabeledSet`:

* folder layout: ``images/<stem>.<png|jpg|jpeg|tif|tiff>``, ``masks/<stem>.png``
  (0 / 255) and optional ``classes/<stem>.png`` (0 bg, 1 GGO, 2 consolidation);
* the MedSeg NIfTI release: ``tr_im.nii.gz`` + ``tr_mask.nii.gz`` (labels 0 bg,
  1 GGO, 2 consolidation, 3 pleural effusion -> folded into 2). Slices are named
  ``medseg_<index>`` like the JPEG re-release of the same data.

:func:`detect_format` tells the two apart without reading an image;
:func:`default_data_dir` is the configured default folder (``$SMALLCOVID_DATA_DIR``).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Mapping

import numpy as np

from smallcovid import io
from smallcovid.core.errors import InputFileError, SmallCovidError
from smallcovid.data.preprocess import to_model_input

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
UNKNOWN_TYPE = -100  # ignore index for cross-entropy where lesion types are not labeled
DATA_DIR_ENV = "SMALLCOVID_DATA_DIR"
DATA_DIR_SECRET = "data_dir"
NO_DATA_DIR = f"No data folder set: type one, or set {DATA_DIR_ENV}"  # shown where a default would be
FOLDER_LAYOUT = "images/<stem>.png|jpg|tif and masks/<stem>.png"
MEDSEG_IMAGES = "tr_im.nii.gz"


def default_data_dir(env: Mapping[str, str] | None = None, secrets: Mapping | None = None) -> Path | None:
    """The default labeled data folder, or None when none is configured.

    Args:
        env: environment to read :data:`DATA_DIR_ENV` (``SMALLCOVID_DATA_DIR``) from;
            default ``os.environ``. It wins over ``secrets``.
        secrets: optional settings mapping (the app passes Streamlit's secrets) whose
            :data:`DATA_DIR_SECRET` key (``data_dir``) is used when the variable is unset.

    Returns:
        The folder as configured (``~`` expanded; not checked for existence), or None
        when neither setting is given or both are blank.
    """
    env = os.environ if env is None else env
    for value in (env.get(DATA_DIR_ENV), (secrets or {}).get(DATA_DIR_SECRET)):
        text = "" if value is None else str(value).strip()
        if text:
            return Path(text).expanduser()
    return None


def detect_format(path: str | os.PathLike) -> Literal["folder", "medseg"]:
    """Which labeled layout ``path`` holds, from file names only (no image is read).

    Returns:
        ``"folder"`` for ``images/`` + ``masks/``; ``"medseg"`` for a folder holding
        ``tr_im.nii.gz`` or the path of a ``tr_im*`` file itself.

    Raises:
        SmallCovidError: ``path`` is empty ("Enter a data folder"), does not exist,
            or holds neither layout (the message names the path and both layouts).
    """
    if not os.fspath(path).strip():
        raise SmallCovidError("Enter a data folder: the path is empty")
    root = Path(path)
    if root.is_file() and root.name.startswith("tr_im"):
        return "medseg"
    if not root.is_dir():
        raise SmallCovidError(f"{root}: data folder does not exist")
    if (root / MEDSEG_IMAGES).is_file():
        return "medseg"
    if (root / "images").is_dir() and (root / "masks").is_dir():
        return "folder"
    raise SmallCovidError(f"{root}: not a labeled folder; expected {FOLDER_LAYOUT} (or a MedSeg {MEDSEG_IMAGES})")


@dataclass(frozen=True, eq=False)
class Sample:
    """One labeled slice at its own resolution.

    Attributes:
        stem: identifier (file stem), e.g. ``medseg_003``.
        image: (H, W) float32 model input in [0, 1].
        mask: (H, W) bool lesion mask.
        types: (H, W) uint8 lesion types 0/1/2, or None when the set has no types.
        spacing: (row mm, col mm) when known.
    """

    stem: str
    image: np.ndarray
    mask: np.ndarray
    types: np.ndarray | None
    spacing: tuple[float, float] | None = None


@dataclass(frozen=True, eq=False)
class LabeledSet:
    """An ordered collection of labeled samples with a name for messages."""

    name: str
    samples: tuple[Sample, ...]

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def stems(self) -> list[str]:
        return [s.stem for s in self.samples]

    @property
    def has_types(self) -> bool:
        return all(s.types is not None for s in self.samples)

    def subset(self, stems: list[str]) -> "LabeledSet":
        index = {s.stem: s for s in self.samples}
        return LabeledSet(self.name, tuple(index[s] for s in stems))


def load_dataset(path: str | os.PathLike, *, allow_symlinks: bool = False) -> LabeledSet:
    """Load a labeled folder or a MedSeg NIfTI release.

    Args:
        path: folder with ``images/`` + ``masks/``, a folder with ``tr_im.nii.gz`` +
            ``tr_mask.nii.gz``, or the path of ``tr_im.nii.gz`` itself.
        allow_symlinks: follow symbolic links inside the folder (off by default so a
            link cannot pull files from outside the data folder).

    Raises:
        SmallCovidError: the path is empty, the folder is missing, empty or inconsistent
            (message names it; see :func:`detect_format`).
    """
    root = Path(path)
    if detect_format(path) == "medseg":
        images = root if root.is_file() else root / MEDSEG_IMAGES
        return _load_medseg(images, images.with_name(images.name.replace("tr_im", "tr_mask")))
    return _load_folder(root, allow_symlinks)


def _checked(path: Path, root: Path, allow_symlinks: bool) -> Path:
    if path.is_symlink() and not allow_symlinks:
        raise InputFileError(path, "is a symbolic link, which data folders may not contain")
    if not path.resolve().is_relative_to(root.resolve()) and not allow_symlinks:
        raise InputFileError(path, "points outside the data folder")
    return path


def _load_folder(root: Path, allow_symlinks: bool) -> LabeledSet:
    images_dir, masks_dir, classes_dir = root / "images", root / "masks", root / "classes"
    image_files = sorted(p for p in images_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not image_files:
        raise SmallCovidError(f"{images_dir}: no .png, .jpg or .tif images found")
    seen: dict[str, str] = {}
    for img_path in image_files:
        if img_path.stem in seen:
            raise SmallCovidError(f"{images_dir}: {seen[img_path.stem]} and {img_path.name} share the stem "
                                  f"{img_path.stem!r}; every slice needs its own name")
        seen[img_path.stem] = img_path.name
    samples = []
    for img_path in image_files:
        stem = img_path.stem
        mask_path = masks_dir / f"{stem}.png"
        if not mask_path.is_file():
            raise InputFileError(img_path, f"has no mask {mask_path}")
        scan = io.read_scan(_checked(img_path, root, allow_symlinks))
        if isinstance(scan, io.Volume):
            raise InputFileError(img_path, "is a volume; labeled folders hold single slices")
        mask = io.read_mask(_checked(mask_path, root, allow_symlinks), shape=scan.shape)
        types = None
        cls_path = classes_dir / f"{stem}.png"
        if cls_path.is_file():
            types = io.read_classes(_checked(cls_path, root, allow_symlinks), shape=scan.shape)
            # Keep the two label maps consistent: a lesion pixel without a type is GGO.
            types = np.where(mask, np.maximum(types, 1), 0).astype(np.uint8)
        samples.append(Sample(stem, to_model_input(scan), mask, types, scan.spacing))
    log.info("loaded %d labeled slices from %s", len(samples), root)
    return LabeledSet(str(root), tuple(samples))


def _load_medseg(image_path: Path, mask_path: Path) -> LabeledSet:
    if not mask_path.is_file():
        raise SmallCovidError(f"{image_path}: the matching label file {mask_path.name} is missing")
    vol = io.read_scan(image_path)
    labels = io.read_label_volume(mask_path)
    if isinstance(vol, io.Slice):
        raise InputFileError(image_path, "is a single slice; the MedSeg release is a 3D volume")
    if labels.shape != vol.voxels.shape:
        raise InputFileError(mask_path, f"has shape {labels.shape} but the images have {vol.voxels.shape}")
    samples = []
    for k in range(len(vol)):
        s = vol.slice(k)
        lab = labels[k]
        types = np.minimum(lab, 2).astype(np.uint8)  # pleural effusion (3) folds into 2
        samples.append(Sample(f"medseg_{k:03d}", to_model_input(s), lab > 0, types, s.spacing))
    return LabeledSet(str(image_path.parent), tuple(samples))


# ---------------------------------------------------------------- k-fold splits


def read_groups(path: str | os.PathLike) -> dict[str, str]:
    """Patient groups: JSON ``{stem: group}`` or CSV lines ``stem,group``."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise SmallCovidError(f"{p}: cannot read the groups file ({exc.strerror})") from exc
    if p.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SmallCovidError(f"{p}: groups file is not valid JSON ({exc.msg})") from exc
        return {str(k): str(v) for k, v in data.items()}
    pairs = [line.split(",")[:2] for line in text.splitlines() if line.strip() and "," in line]
    return {a.strip(): b.strip() for a, b in pairs if a.strip() != "stem"}


def make_splits(
    stems: list[str], n_folds: int, seed: int, groups: dict[str, str] | None = None
) -> list[dict[str, list[str]]]:
    """Seeded k-fold splits of ``stems`` (GroupKFold when ``groups`` is given).

    Returns:
        One dict per fold: ``{"train": [stems], "val": [stems]}``.
    """
    from sklearn.model_selection import GroupKFold, KFold

    stems = sorted(stems)
    if not 2 <= n_folds <= len(stems):
        raise SmallCovidError(f"folds must be between 2 and {len(stems)} (the number of slices), got {n_folds}")
    if groups is not None:
        missing = [s for s in stems if s not in groups]
        if missing:
            raise SmallCovidError(f"groups file has no group for {len(missing)} slice(s), e.g. {missing[0]}")
        labels = [groups[s] for s in stems]
        if len(set(labels)) < n_folds:
            raise SmallCovidError(f"{len(set(labels))} patient groups cannot make {n_folds} folds")
        splitter = GroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
        it = splitter.split(stems, groups=labels)
    else:
        it = KFold(n_splits=n_folds, shuffle=True, random_state=seed).split(stems)
    return [{"train": [stems[i] for i in tr], "val": [stems[i] for i in va]} for tr, va in it]


def save_splits(path: str | os.PathLike, splits: list[dict[str, list[str]]], seed: int) -> None:
    """Write splits as JSON (atomically)."""
    from smallcovid.core.fsutil import atomic_write_text

    atomic_write_text(path, json.dumps({"seed": seed, "folds": splits}, indent=1))


def load_splits(path: str | os.PathLike, stems: list[str]) -> list[dict[str, list[str]]]:
    """Read splits saved by :func:`save_splits`, checking every stem exists in the data."""
    p = Path(path)
    try:
        folds = json.loads(p.read_text())["folds"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SmallCovidError(f"{p}: not a splits file written by smallcovid ({exc})") from exc
    known = set(stems)
    for f in folds:
        unknown = [s for s in f["train"] + f["val"] if s not in known]
        if unknown:
            raise SmallCovidError(f"{p}: split names slice {unknown[0]!r}, which the data folder lacks")
    return folds
