"""Lesion quantities, metric rows, Table 1 rows and the disagreement ranking."""

from __future__ import annotations

import numpy as np
import pytest

from smallcovid.app import analysis
from smallcovid.core.errors import SmallCovidError
from smallcovid.inference.evaluation import evaluate_maps
from smallcovid.data.dataset import Sample
from smallcovid.inference.predictor import ProbMaps
from smallcovid.inference.metrics import confusion_counts, scores


def two_blobs() -> tuple[np.ndarray, np.ndarray]:
    mask = np.zeros((40, 50), bool)
    types = np.zeros((40, 50), np.uint8)
    mask[2:6, 2:7] = True  # 20 px, ground-glass
    types[2:6, 2:7] = 1
    mask[20:23, 30:33] = True  # 9 px, consolidation
    types[20:23, 30:33] = 2
    return mask, types


def test_lesion_stats_with_spacing_and_types():
    mask, types = two_blobs()
    s = analysis.lesion_stats(mask, types, spacing=(0.5, 0.8))
    assert s.area_px == 29 and s.n_lesions == 2
    assert s.area_mm2 == pytest.approx(29 * 0.4)
    assert s.percent == pytest.approx(100 * 29 / 2000)
    assert s.type_area_px == {"ground-glass": 20, "consolidation": 9}
    assert s.type_area_mm2["consolidation"] == pytest.approx(9 * 0.4)
    row = analysis.stats_row("m", s, seconds=0.0123)
    assert row["lesion area (px)"] == 29 and row["separate lesions"] == 2 and row["inference (ms)"] == 12.3
    assert row["lesion area (mm²)"] == pytest.approx(11.6)


def test_lesion_stats_without_spacing_or_types_and_diagonal_connectivity():
    mask = np.zeros((10, 10), bool)
    mask[1, 1] = mask[2, 2] = True  # diagonal neighbours: one lesion (8-connectivity)
    mask[7, 7] = True
    s = analysis.lesion_stats(mask)
    assert s.n_lesions == 2 and s.area_mm2 is None and s.type_area_px == {} and s.type_area_mm2 == {}
    row = analysis.stats_row("m", s)
    assert "lesion area (mm²)" not in row and "inference (ms)" not in row
    assert analysis.lesion_stats(np.zeros((4, 4), bool)).n_lesions == 0
    with pytest.raises(SmallCovidError):
        analysis.lesion_stats(np.zeros((4, 4), bool), types=np.zeros((3, 3), np.uint8))


def test_metric_rows_match_metrics_module_and_empty_convention():
    mask, _ = two_blobs()
    pred = np.roll(mask, 1, axis=1)
    row = analysis.metric_row(pred, mask)
    s = scores(confusion_counts(pred, mask))
    assert row == {k: float(s[k][0]) for k in analysis.TABLE_METRICS}
    empty = np.zeros_like(mask)
    assert analysis.metric_row(empty, empty)["dice"] == 1.0
    assert analysis.metric_row(empty, mask)["dice"] == 0.0
    assert analysis.metric_row(mask, empty)["dice"] == 0.0
    rows = analysis.metrics_table({"a": pred, "b": mask, "c": empty}, mask)
    assert [r["model"] for r in rows] == ["a", "b", "c"]
    assert analysis.best_label(rows) == "b" and analysis.best_label([]) is None
    with pytest.raises(SmallCovidError, match="width x height"):
        analysis.metric_row(mask[:10], mask)
    assert "both empty" in analysis.EMPTY_MASK_NOTE


def _maps(lesion: np.ndarray) -> ProbMaps:
    types = np.stack([1 - lesion, lesion * 0.7, lesion * 0.3]).astype(np.float32)
    return ProbMaps(lesion.astype(np.float32), types, 0.01)


def test_table1_rows_and_compact_maps_agree_with_evaluation():
    rng = np.random.default_rng(0)
    samples, maps = [], []
    for i in range(3):
        mask, types = two_blobs()
        samples.append(Sample(f"s{i}", np.zeros(mask.shape, np.float32), mask, types))
        maps.append(_maps(np.clip(mask * 0.9 + rng.uniform(0, 0.5, mask.shape), 0, 1)))
    full = evaluate_maps(maps, samples, 0.8)
    compact = evaluate_maps([analysis.CompactMaps(m) for m in maps], samples, 0.8)
    assert compact.summary == full.summary and compact.type_dice == full.type_dice
    full.extra["name"] = "unet"
    rows = analysis.table1_rows({"U-Net here": full}, {"unet": (0.72, 0.519, 0.767)})
    row = rows[0]
    assert row["model"] == "U-Net here" and row["n"] == 3
    assert row["dice"] == full.summary.mean["dice"] and row["dice ±"] == full.summary.std["dice"]
    assert row["pooled iou"] == full.summary.pooled["iou"]
    assert row["paper dice"] == 0.72 and "ground-glass Dice" in row
    assert analysis.format_mean_std(0.71234, 0.1) == "0.712 ± 0.100"


def test_most_disagreed_orders_by_spread():
    per_image = {"a": [0.9, 0.5, 0.1, 0.3], "b": [0.9, 0.6, 0.9, 0.3], "c": [0.8, 0.4, 0.5, 0.3]}
    assert analysis.most_disagreed(per_image, 2) == [2, 1]
    assert analysis.most_disagreed(per_image, 10) == [2, 1, 0, 3]
    assert analysis.most_disagreed({}, 3) == []
    with pytest.raises(SmallCovidError):
        analysis.most_disagreed({"a": [1.0], "b": [1.0, 0.5]})
