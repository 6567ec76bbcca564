"""Names every stage shares: lesion types and the segmentation metrics SmallCovid reports.

Lesion-type ids are the values of type maps ((H, W) or (D, H, W) uint8) and of the
``lesion_types`` training targets; the index of a type-probability channel is its id:

====  ==============  ==========================================
 id   name            meaning
====  ==============  ==========================================
 0    background      no lesion
 1    ground-glass    ground-glass opacity (GGO), about -500 HU
 2    consolidation   consolidation, about 0 HU
====  ==============  ==========================================

MedSeg label volumes also use 3 (pleural effusion); readers fold it into 2.
"""

from __future__ import annotations

BACKGROUND = 0
GROUND_GLASS = 1
CONSOLIDATION = 2

TYPE_NAMES: tuple[str, ...] = ("background", "ground-glass", "consolidation")
"""Name of every lesion-type id, background included (index = id)."""

NUM_TYPES = len(TYPE_NAMES)
"""Channels of a type-probability map (N, NUM_TYPES, H, W)."""

LESION_TYPES: dict[int, str] = {GROUND_GLASS: "ground-glass", CONSOLIDATION: "consolidation"}
"""Lesion-type id -> name, lesions only (no background); the key order is the display order."""

METRIC_NAMES: tuple[str, ...] = ("dice", "precision", "recall", "iou", "specificity")
"""Every metric :mod:`smallcovid.inference.metrics` computes (the keys of its score dicts)."""

TABLE_METRICS: tuple[str, ...] = ("dice", "precision", "recall", "iou")
"""The metrics tables show: the app's metric rows, Table 1 and per-fold CV tables."""

METRIC_TITLES: dict[str, str] = {"dice": "Dice", "precision": "precision", "recall": "recall", "iou": "IoU",
                                 "specificity": "specificity"}
"""Metric name -> column title in tables."""

#: Test-time augmentation modes (:mod:`smallcovid.models.tta` defines their views) and how the
#: app, the CLI and the cards name them; torch-free, so argument parsing and pages can use them.
TTA_MODES = ("none", "flip", "d4")
TTA_VIEWS_TEXT = {"none": "one pass", "flip": "2 views", "d4": "8 views"}
TTA_TEXT = {"none": "none (one pass)", "flip": "2 views (the slice and its mirror), averaged",
            "d4": "8 views (every flip and quarter turn), averaged"}
