"""Semi-supervised training material: unlabeled slices and a teacher's pseudo-labels.

The recipe (self-training): in every fold a *teacher* is trained on that fold's
labeled training slices only; it labels the unlabeled pool; a *student*,
started from the teacher's weights, trains on the labeled slices plus the most
confidently pseudo-labeled ones under stronger augmentation. The fold's
validation slices never reach the teacher, the pool or the student, so the
fold's reported figures stay out-of-fold.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

import torch
import torch.nn.functional as F

from smallcovid.core.errors import SmallCovidError
from smallcovid.core.fsutil import tree_sha256
from smallcovid.data.augment import AugmentConfig
from smallcovid.data.preprocess import to_model_input
from smallcovid.io import read_scan
from smallcovid.models import SegmentationModel
from smallcovid.training.tensors import Tensors

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")

#: The student's augmentation: the labeled set's plus stronger zoom and intensity changes.
STRONG_AUGMENT = AugmentConfig(scale=0.3, gain=0.25, bias=0.1, gamma=0.4)

#: Pseudo-label pixels whose teacher probability lies strictly between these carry no lesion type.
UNSURE = (0.3, 0.7)


def unlabeled_files(folder: str | os.PathLike) -> list[Path]:
    """The image files of an unlabeled folder (``folder`` or ``folder/images``), sorted by name.

    Raises:
        SmallCovidError: the folder does not exist or holds no images.
    """
    root = Path(folder)
    if (root / "images").is_dir():
        root = root / "images"
    if not root.is_dir():
        raise SmallCovidError(f"{folder}: unlabeled folder does not exist")
    files = sorted(p for p in root.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise SmallCovidError(f"{folder}: holds no PNG/JPEG/TIFF images")
    return files


def unlabeled_hash(folder: str | os.PathLike) -> str:
    """Content hash of the unlabeled images (sha256 over sorted relative paths and file hashes)."""
    files = unlabeled_files(folder)
    return tree_sha256(files[0].parent)


def load_unlabeled(folder: str | os.PathLike, size: int) -> torch.Tensor:
    """Every unlabeled image as model input at ``size`` x ``size``: (N, 1, S, S) float in [0, 1]."""
    out = []
    for path in unlabeled_files(folder):
        # Not re-windowed here: each fold maps the pool onto its own training slices' window.
        x = torch.from_numpy(to_model_input(read_scan(path), rewindow=False))[None, None]
        out.append(F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)[0])
    log.info("loaded %d unlabeled slices from %s", len(out), folder)
    return torch.stack(out)


@torch.no_grad()
def pseudo_label(teacher: SegmentationModel, images: torch.Tensor, device: torch.device, *,
                 keep: float = 0.5, batch_size: int = 8, area_reference: torch.Tensor | None = None) -> Tensors:
    """The teacher's labels for ``images``, keeping a ``keep`` fraction of them.

    A slice's confidence is the mean of ``|2p - 1|`` over the pixels the teacher
    does not call plain background (``p > 0.05``), so a slice of clear lungs with a
    sharply outlined lesion ranks above one with hazy, undecided regions. Ranked by
    confidence alone, the kept set fills up with slices of large lesions and a student
    learns to over-call; with ``area_reference`` the kept slices follow the labeled
    slices' lesion-area distribution instead (:func:`area_matched`).

    Args:
        teacher: trained model (put in eval mode here).
        images: (N, 1, S, S) float in [0, 1].
        keep: fraction of slices kept, in (0, 1].
        area_reference: (M,) lesion area fractions of the labeled training slices, or
            None to keep the most confident slices whatever their lesion area.

    Returns:
        ``(images, masks, types)`` of the kept slices, as :data:`Tensors`; types are
        -100 (ignored) where the teacher is unsure (:data:`UNSURE`).
    """
    if not 0 < keep <= 1:
        raise SmallCovidError(f"pseudo-label keep fraction must be in (0, 1], got {keep}")
    teacher.eval()
    probs, kinds = [], []
    for i in range(0, len(images), batch_size):
        pred = teacher.predict(images[i:i + batch_size].to(device))
        probs.append(pred.lesion_prob.float().cpu())
        kinds.append(pred.type_prob[:, 1:].float().argmax(1).cpu() + 1)
    p = torch.cat(probs)  # (N, 1, S, S)
    kind = torch.cat(kinds)  # (N, S, S)
    conf = (2 * p - 1).abs()
    informative = p > 0.05
    score = (conf * informative).flatten(1).sum(1) / informative.flatten(1).sum(1).clamp(min=1)
    n_keep = max(1, math.ceil(keep * len(images)))
    if area_reference is None:
        order = torch.argsort(score, descending=True)[:n_keep].sort().values
    else:
        order = area_matched(score, (p >= 0.5).flatten(1).float().mean(1), area_reference, n_keep)
    p, kind = p[order], kind[order]
    masks = (p >= 0.5).float()
    unsure = ((p > UNSURE[0]) & (p < UNSURE[1]))[:, 0]
    types = torch.where(masks[:, 0] > 0, kind, torch.zeros_like(kind))
    types[unsure] = -100
    log.info("pseudo-labels: kept %d of %d slices (confidence %.3f..%.3f), %.1f%% lesion pixels",
             n_keep, len(images), float(score[order].min()), float(score[order].max()), 100 * float(masks.mean()))
    return images[order], masks, types.long()


def area_matched(score: torch.Tensor, area: torch.Tensor, reference: torch.Tensor, n_keep: int) -> torch.Tensor:
    """Indices (sorted) of ``n_keep`` slices whose lesion areas follow ``reference``.

    The labeled areas ``reference`` (M,) are cut at their quartiles into four bins
    (open at both ends); each bin gets the share of ``n_keep`` that the labeled slices
    have in it, filled with the pool's most confident slices (``score``, (N,)) whose
    predicted ``area`` (N,) falls in that bin. Seats a bin cannot fill go to the most
    confident slices left over, whatever their area.

    Raises:
        SmallCovidError: ``reference`` is empty.
    """
    if reference.numel() == 0:
        raise SmallCovidError("area-matched pseudo-labels need at least one labeled slice")
    ref = reference.float()
    inner = torch.quantile(ref, torch.tensor([0.25, 0.5, 0.75])).unique()
    ref_bin = torch.bucketize(ref, inner, right=True)
    pool_bin = torch.bucketize(area.float(), inner, right=True)
    chosen: list[torch.Tensor] = []
    for b in range(len(inner) + 1):
        seats = round(n_keep * float((ref_bin == b).float().mean()))
        members = torch.nonzero(pool_bin == b).flatten()
        chosen.append(members[torch.argsort(score[members], descending=True)[:seats]])
    taken = torch.cat(chosen)[:n_keep]
    if len(taken) < n_keep:
        rest = torch.ones(len(score), dtype=torch.bool)
        rest[taken] = False
        left = torch.nonzero(rest).flatten()
        taken = torch.cat([taken, left[torch.argsort(score[left], descending=True)[:n_keep - len(taken)]]])
    return taken.sort().values


def recipe(folder: str | os.PathLike, keep: float, epochs: int, *, student_lr: float | None = None,
           select: str = "confidence") -> dict:
    """What a model card records of the semi-supervised recipe."""
    files = unlabeled_files(folder)
    how = "area-matched confident" if select == "area-matched" else "confidence-ranked"
    return {"method": f"self-training: fold teacher -> {how} pseudo-labels -> student from teacher",
            "unlabeled": "/".join(Path(folder).resolve().parts[-2:]), "n_unlabeled": len(files), "unlabeled_sha256": unlabeled_hash(folder),
            "keep_fraction": keep, "selection": select, "student_epochs": epochs, "student_lr": student_lr,
            "strong_augment": dict(vars(STRONG_AUGMENT)),
            "per_fold_teacher": "each fold's teacher trains on that fold's training slices only"}
